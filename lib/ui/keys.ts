/**
 * Keyboard input of the live UI: raw stdin bytes → `Key`s → `Action`s.
 * Both steps are pure so the destroy confirmation (the one dangerous key)
 * is pinned by unit tests rather than trusted to manual checks.
 */
import type { StatusSnapshot } from "../proxy/snapshot.ts";

/** A key the UI understands. Anything else parses as `other`. */
export type Key =
  | "q"
  | "up"
  | "down"
  | "x"
  | "r"
  | "a"
  | "d"
  | "y"
  | "n"
  | "?"
  | "ctrl-c"
  | "esc"
  | "other";

/** What the UI asks the proxy to do, for the backend with `id`. */
export type Action =
  | { type: "quit" }
  | { type: "drain-toggle"; id: number }
  | { type: "reconnect"; id: number }
  | { type: "abort-all"; id: number }
  | { type: "destroy"; id: number };

const SINGLE: Record<string, Key> = {
  q: "q",
  Q: "q",
  x: "x",
  r: "r",
  a: "a",
  d: "d",
  y: "y",
  Y: "y",
  n: "n",
  N: "n",
  "?": "?",
  k: "up", // vi keys, for terminals where arrows arrive mangled
  j: "down",
  "\x03": "ctrl-c",
};

/**
 * Splits one stdin chunk into keys. A chunk may hold several keys (pasted
 * text, fast typing, a key repeat) and arrows arrive as `ESC [ A` or, in
 * application cursor mode, `ESC O A`; a lone ESC is the Escape key.
 */
export function parseKeys(bytes: Uint8Array): Key[] {
  const text = new TextDecoder().decode(bytes);
  const keys: Key[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    if (ch === "\x1b") {
      const next = text[i + 1];
      if (next === "[" || next === "O") {
        // CSI/SS3: parameters, then one final byte in @..~.
        let j = i + 2;
        while (j < text.length && /[0-9;]/.test(text[j])) j++;
        const final = text[j];
        keys.push(final === "A" ? "up" : final === "B" ? "down" : "other");
        i = j + 1;
        continue;
      }
      keys.push("esc");
      i++;
      continue;
    }
    keys.push(SINGLE[ch] ?? "other");
    i += ch.length;
  }
  return keys;
}

/** The UI's interaction state. */
export interface KeyState {
  /** Selected backend id, or undefined while the fleet is empty. */
  selected?: number;
  /** A pending question; only `y` confirms it. */
  confirm?: { action: "destroy"; id: number };
  /** Help overlay shown. */
  help: boolean;
}

/**
 * Turns keys into actions. `d` arms a confirmation instead of acting: the
 * next key decides, and only `y` destroys — any other key, including a
 * second `d`, cancels, so a stray keystroke never deletes a paid instance.
 */
export class KeyController {
  #state: KeyState = { help: false };

  /** A copy of the current state (for rendering). */
  get state(): KeyState {
    return { ...this.#state, confirm: this.#state.confirm && { ...this.#state.confirm } };
  }

  /**
   * Keeps the selection on an existing backend: the same id if it is still
   * there, else the first row. Called on each render too, since backends
   * come and go between keys.
   */
  sync(snapshot: StatusSnapshot): void {
    const ids = snapshot.backends.map((b) => b.id);
    if (ids.length === 0) this.#state.selected = undefined;
    else if (this.#state.selected === undefined || !ids.includes(this.#state.selected)) {
      this.#state.selected = ids[0];
    }
  }

  /** Applies one key; returns the action to run, if any. */
  handle(key: Key, snapshot: StatusSnapshot): Action | undefined {
    this.sync(snapshot);
    const confirm = this.#state.confirm;
    if (confirm) {
      this.#state.confirm = undefined;
      if (key === "y") return { type: "destroy", id: confirm.id };
      // Ctrl-C still quits from inside the prompt; everything else just cancels.
      return key === "ctrl-c" ? { type: "quit" } : undefined;
    }
    if (key === "ctrl-c" || key === "q") return { type: "quit" };
    if (key === "?") {
      this.#state.help = !this.#state.help;
      return undefined;
    }
    if (key === "esc") {
      this.#state.help = false;
      return undefined;
    }
    if (key === "up" || key === "down") {
      this.#move(snapshot, key === "up" ? -1 : 1);
      return undefined;
    }
    const id = this.#state.selected;
    if (id === undefined) return undefined;
    switch (key) {
      case "x":
        return { type: "drain-toggle", id };
      case "r":
        return { type: "reconnect", id };
      case "a":
        return { type: "abort-all", id };
      case "d":
        this.#state.confirm = { action: "destroy", id };
        return undefined;
      default:
        return undefined;
    }
  }

  /** Moves the selection by `delta` rows, clamped to the ends (no wrap-around). */
  #move(snapshot: StatusSnapshot, delta: number): void {
    const ids = snapshot.backends.map((b) => b.id);
    if (ids.length === 0) return;
    const at = Math.max(0, ids.indexOf(this.#state.selected!));
    this.#state.selected = ids[Math.max(0, Math.min(ids.length - 1, at + delta))];
  }
}

/** The footer question for a pending confirmation, or undefined. */
export function promptFor(state: KeyState, snapshot: StatusSnapshot): string | undefined {
  if (!state.confirm) return undefined;
  const b = snapshot.backends.find((x) => x.id === state.confirm!.id);
  const what = b ? `${b.id} (${b.gpuLabel})` : String(state.confirm.id);
  return `Destroy instance ${what} on vast.ai? This deletes it and its data. [y/N]`;
}
