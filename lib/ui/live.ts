/**
 * The live terminal UI of `vastproxy serve` on a TTY. It owns no proxy
 * state: on its own tick it takes a fresh `StatusSnapshot`, renders it with
 * `renderStatus` and overwrites the alternate screen in place. Log records
 * and key presses only mark the screen dirty or trigger one extra redraw
 * (STYLE.md rule 19, deployctl's `top`).
 */
import { type Clock, realClock } from "../core/clock.ts";
import { type LogFields, type Logger, type LogLevel, redact } from "../core/logger.ts";
import type { StatusSnapshot } from "../proxy/snapshot.ts";
import { TERM } from "./ansi.ts";
import { type Action, KeyController, parseKeys, promptFor } from "./keys.ts";
import { formatText, levelEnabled, shownFields } from "./log.ts";
import { renderStatus } from "./table.ts";

/** The terminal as the UI needs it; `write` should be synchronous on a real TTY (see `denoTerminal`). */
export interface TerminalWriter {
  /** Writes some or all of `p`; returns how many bytes were taken. */
  write(p: Uint8Array): Promise<number> | number;
  /** Current size; read on every redraw, so resizes need no signal handler. */
  columns(): { columns: number; rows: number };
}

/** What the keys do; the caller wires these to the fleet. */
export interface LiveActions {
  /** `x`: drain or undrain. */
  drainToggle(id: number): void | Promise<void>;
  /** `r`: rebuild the SSH tunnel. */
  reconnect(id: number): void | Promise<void>;
  /** `a`: SGLang abort-all. */
  abortAll(id: number): void | Promise<void>;
  /** `d` then `y`: destroy on vast.ai. */
  destroy(id: number): Promise<void>;
  /** `q` / Ctrl-C: begin shutdown (the caller then stops the UI). */
  quit(): void;
}

/** Options of `UiLogBuffer`. */
export interface UiLogBufferOptions {
  /** Lines kept (default 200). */
  capacity?: number;
  /** Lowest level kept (default `info`). */
  level?: LogLevel;
  /** Replaced by `[redacted]` in every line. */
  secrets?: readonly string[];
  /** Time source (default `Date.now`). */
  now?: () => number;
}

/** A `Logger` keeping the last formatted lines for the live UI's log pane. */
export class UiLogBuffer implements Logger {
  #lines: string[] = [];
  #capacity: number;
  #level: LogLevel;
  #secrets: readonly string[];
  #now: () => number;
  #listeners = new Set<() => void>();

  /** See `UiLogBufferOptions` for defaults. */
  constructor(opts: UiLogBufferOptions = {}) {
    this.#capacity = opts.capacity ?? 200;
    this.#level = opts.level ?? "info";
    this.#secrets = opts.secrets ?? [];
    this.#now = opts.now ?? Date.now;
  }

  /** Formats and keeps one record; notifies listeners (which only mark dirty). */
  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (!levelEnabled(level, this.#level)) return;
    // Values redacted before they are cut, as the headless writer does.
    const line = formatText(
      { time: this.#now(), level, msg, fields: shownFields(fields, this.#secrets) },
      { time: "clock" },
    );
    this.#lines.push(redact(line.replace(/[\r\n\t]+/g, " "), this.#secrets));
    if (this.#lines.length > this.#capacity) {
      this.#lines.splice(0, this.#lines.length - this.#capacity);
    }
    for (const fn of this.#listeners) fn();
  }

  /** The kept lines, oldest first (a copy). */
  lines(): string[] {
    return [...this.#lines];
  }

  /** Calls `fn` after each kept record; returns the unsubscribe function. */
  subscribe(fn: () => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }
}

/** Options of `LiveUI`. */
export interface LiveUIOptions {
  /** The terminal. */
  stdout: TerminalWriter;
  /** Key input (raw mode is the caller's job), or null for display only. */
  stdin: ReadableStream<Uint8Array> | null;
  /** Returns the current state; called once per redraw. */
  snapshot: () => StatusSnapshot;
  /** Handlers for the keys. */
  actions: LiveActions;
  /** Time source and timers (default the real clock). */
  clock?: Clock;
  /** ANSI colours in the table. */
  color: boolean;
  /** The log pane's source; action failures are logged here too. */
  logBuffer: UiLogBuffer;
  /** Full redraw period in ms (default 1000). */
  intervalMs?: number;
}

// Dirty checks run more often than full redraws so a new log line shows
// within a quarter second without redrawing four times a second when idle.
const DIRTY_CHECK_MS = 250;

/** Redraws the status screen in place and turns keys into actions. */
export class LiveUI {
  #opts: LiveUIOptions;
  #clock: Clock;
  #keys = new KeyController();
  #encoder = new TextEncoder();
  #dirty = true;
  #lastDraw = -Infinity;
  #entered = false;
  #stop = new AbortController();
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  #pendingActions = new Set<Promise<void>>();
  #unsubscribe: (() => void) | null = null;
  #rate: { time: number; requests: number; rps?: number } | null = null;

  /** See `LiveUIOptions`. */
  constructor(opts: LiveUIOptions) {
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
  }

  /**
   * Enters the alternate screen and runs until `signal` aborts or `stop()`
   * is called; the terminal is restored on every way out, errors included.
   */
  async start(signal?: AbortSignal): Promise<void> {
    const onAbort = () => this.stop();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) return;
    this.#write(TERM.altScreenOn + TERM.cursorHide);
    this.#entered = true;
    globalThis.addEventListener("unload", this.restore);
    this.#unsubscribe = this.#opts.logBuffer.subscribe(() => this.#dirty = true);
    try {
      await Promise.all([this.#tickLoop(), this.#keyLoop()]);
      await Promise.allSettled([...this.#pendingActions]);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.restore();
    }
  }

  /** Stops both loops and restores the terminal. Safe to call more than once. */
  stop(): void {
    this.#stop.abort();
    this.#reader?.cancel().catch(() => {});
    this.restore();
  }

  /**
   * Leaves the alternate screen and shows the cursor, synchronously when the
   * writer is (as `denoTerminal()`'s is), so it also works from a signal
   * handler or `unload`. Idempotent; a bound arrow so it can be passed around.
   */
  readonly restore = (): void => {
    if (!this.#entered) return;
    this.#entered = false;
    globalThis.removeEventListener("unload", this.restore);
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#write(TERM.reset + TERM.cursorShow + TERM.altScreenOff);
  };

  /** Draws one frame now (also used by tests). */
  draw(): void {
    if (!this.#entered) return;
    const snap = this.#opts.snapshot();
    this.#keys.sync(snap);
    const state = this.#keys.state;
    const size = this.#opts.stdout.columns();
    const now = this.#clock.now();
    const lines = renderStatus(snap, {
      // One column spare: erasing to end of line while the cursor waits in
      // the last column would eat that column's character on some terminals.
      width: Math.max(20, size.columns - 1),
      height: Math.max(3, size.rows),
      color: this.#opts.color,
      selected: state.selected,
      logLines: this.#opts.logBuffer.lines(),
      now,
      help: state.help,
      prompt: promptFor(state, snap),
      rps: this.#rps(snap),
    });
    // Home, overwrite each line and clear its tail, then clear whatever a
    // taller previous frame left below: no flicker, no scrolling.
    const frame = TERM.home + lines.map((l) => l + TERM.clearLine).join("\r\n") +
      TERM.clearBelow;
    this.#write(frame);
    this.#dirty = false;
    this.#lastDraw = now;
  }

  /** Requests per second from the change in total requests between snapshots. */
  #rps(snap: StatusSnapshot): number | undefined {
    const prev = this.#rate;
    const dt = prev ? snap.time - prev.time : 0;
    // Under half a second (e.g. a key-triggered redraw) the rate is noise:
    // keep the previous value and the previous baseline.
    if (prev && dt < 500) return prev.rps;
    const rps = prev ? Math.max(0, snap.counts.requests - prev.requests) / (dt / 1000) : undefined;
    this.#rate = { time: snap.time, requests: snap.counts.requests, rps };
    return rps;
  }

  async #tickLoop(): Promise<void> {
    const interval = this.#opts.intervalMs ?? 1000;
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      if (this.#dirty || this.#clock.now() - this.#lastDraw >= interval) this.draw();
      try {
        await this.#clock.sleep(Math.min(DIRTY_CHECK_MS, interval), signal);
      } catch {
        return; // aborted
      }
    }
  }

  async #keyLoop(): Promise<void> {
    const stdin = this.#opts.stdin;
    if (!stdin) return;
    const reader = stdin.getReader();
    this.#reader = reader;
    try {
      while (!this.#stop.signal.aborted) {
        const { value, done } = await reader.read();
        if (done) return;
        const snap = this.#opts.snapshot();
        for (const key of parseKeys(value)) {
          const action = this.#keys.handle(key, snap);
          if (action) this.#run(action);
        }
        if (!this.#stop.signal.aborted) this.draw();
      }
    } catch {
      // stdin closed under us (stop() cancels the reader): nothing to read.
    } finally {
      reader.releaseLock();
    }
  }

  /** Runs an action without blocking key input; failures go to the log pane. */
  #run(action: Action): void {
    const a = this.#opts.actions;
    const log = this.#opts.logBuffer;
    if (action.type === "quit") {
      a.quit();
      return;
    }
    const call = () => {
      switch (action.type) {
        case "drain-toggle":
          return a.drainToggle(action.id);
        case "reconnect":
          return a.reconnect(action.id);
        case "abort-all":
          return a.abortAll(action.id);
        case "destroy":
          return a.destroy(action.id);
      }
    };
    const p = Promise.resolve()
      .then(call)
      .catch((err) => {
        const message = err instanceof Error ? err.message : String(err);
        log.log("error", `${action.type} failed`, { id: action.id, error: message });
      })
      .finally(() => this.#pendingActions.delete(p));
    this.#pendingActions.add(p);
  }

  #write(text: string): void {
    const bytes = this.#encoder.encode(text);
    try {
      // A frame is small; a synchronous writer takes it whole. For an async
      // one, partial writes are possible but the next frame repaints anyway.
      const r = this.#opts.stdout.write(bytes);
      if (r instanceof Promise) r.catch(() => {});
    } catch {
      // The terminal went away; nothing useful to do from a redraw.
    }
  }
}

/** The real terminal: synchronous writes to stdout (so `restore` works at exit) and its size. */
export function denoTerminal(): TerminalWriter {
  return {
    write: (p) => Deno.stdout.writeSync(p),
    columns: () => {
      try {
        return Deno.consoleSize();
      } catch {
        return { columns: 80, rows: 24 };
      }
    },
  };
}

/** Puts stdin in raw mode when it is a terminal; returns whether it did. */
export function enterRawMode(): boolean {
  if (!Deno.stdin.isTerminal()) return false;
  Deno.stdin.setRaw(true);
  return true;
}

/** Undoes `enterRawMode` (harmless when stdin is not a terminal). */
export function exitRawMode(): void {
  if (!Deno.stdin.isTerminal()) return;
  try {
    Deno.stdin.setRaw(false);
  } catch {
    // Already restored or stdin closed.
  }
}
