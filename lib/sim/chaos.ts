/**
 * Scripted trouble for the simulated fleet: now and then an engine crashes
 * (and restarts later), an SSH server drops its connections, a new instance
 * boots, or one vanishes from the API and comes back. The demo runs it so the
 * live table shows what the proxy does about such events; tests drive it with
 * a `FakeClock` and injected randomness and call `step()` directly.
 */
import type { Clock } from "../core/clock.ts";

/** What happened in the simulated fleet, for the demo's log and for tests. */
export type SimEvent =
  | { type: "engine-crashed"; id: number; restartInMs: number }
  | { type: "engine-restarted"; id: number }
  | { type: "ssh-dropped"; id: number; connections: number }
  | { type: "instance-added"; id: number; runningInMs: number }
  | { type: "instance-running"; id: number }
  | { type: "instance-vanished"; id: number; backInMs: number }
  | { type: "instance-back"; id: number };

/** The kinds of trouble `Chaos` picks from. */
export type ChaosKind = "engine-crash" | "ssh-drop" | "add-instance" | "vanish";

/** The fleet operations chaos needs (implemented by `SimFleet`). */
export interface ChaosTarget {
  /** Ids of listed, running instances whose engine is up. */
  candidates(): number[];
  /** Whether another instance may be added (the fleet caps its growth). */
  canAdd(): boolean;
  /** Closes the engine of `id`; it restarts after `restartAfterMs`. */
  crashEngine(id: number, restartAfterMs: number): Promise<void>;
  /** Drops every SSH connection of `id` (a network blip). */
  dropSsh(id: number): void;
  /** Starts a new instance in `loading`; it runs after `runningAfterMs`. */
  addInstance(runningAfterMs: number): Promise<{ id: number }>;
  /** Hides `id` from the API; it is listed again after `backAfterMs`. */
  vanish(id: number, backAfterMs: number): void;
}

/** Options of `Chaos`; times in ms. */
export interface ChaosOptions {
  target: ChaosTarget;
  clock: Clock;
  /** Random source in [0, 1). */
  random: () => number;
  /** Pause between events, drawn uniformly [20 000, 40 000]. */
  intervalMs?: readonly [number, number];
  /** How long a crashed engine stays down [10 000, 20 000]. */
  downMs?: readonly [number, number];
  /** How long a new instance loads [10 000, 20 000]. */
  loadingMs?: readonly [number, number];
  /**
   * How long a vanished instance stays away [30 000, 45 000]: longer than
   * two polls at the default 10 s, since the proxy drops an instance only
   * after it misses two listings in a row.
   */
  awayMs?: readonly [number, number];
}

// Crashes and blips are the interesting cases for a proxy; churn is rarer.
const WEIGHTS: readonly [ChaosKind, number][] = [
  ["engine-crash", 0.35],
  ["ssh-drop", 0.3],
  ["add-instance", 0.15],
  ["vanish", 0.2],
];

/** Picks and applies events: `step()` is one event, `start()` repeats it. */
export class Chaos {
  #o: Required<ChaosOptions>;

  /** See `ChaosOptions` for defaults. */
  constructor(opts: ChaosOptions) {
    this.#o = {
      intervalMs: [20_000, 40_000],
      downMs: [10_000, 20_000],
      loadingMs: [10_000, 20_000],
      awayMs: [30_000, 45_000],
      ...opts,
    };
  }

  /**
   * Applies one random event and returns its kind, or null when no instance
   * qualifies (e.g. all engines already down). An add beyond the fleet's cap
   * becomes a vanish, so churn never grows the fleet without bound.
   */
  async step(): Promise<ChaosKind | null> {
    const { target } = this.#o;
    let kind = this.#pickKind();
    if (kind === "add-instance" && !target.canAdd()) kind = "vanish";
    if (kind === "add-instance") {
      await target.addInstance(this.#draw(this.#o.loadingMs));
      return kind;
    }
    const ids = target.candidates();
    // Never take the last healthy instance away: a demo with nothing to
    // route to only shows 503s.
    if (ids.length < 2) return null;
    const id = ids[Math.floor(this.#o.random() * ids.length)];
    if (kind === "engine-crash") await target.crashEngine(id, this.#draw(this.#o.downMs));
    else if (kind === "ssh-drop") target.dropSsh(id);
    else target.vanish(id, this.#draw(this.#o.awayMs));
    return kind;
  }

  /** Runs `step()` after each random pause until `signal` aborts. */
  async start(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await this.#o.clock.sleep(this.#draw(this.#o.intervalMs), signal);
      } catch {
        return; // aborted
      }
      await this.step();
    }
  }

  #pickKind(): ChaosKind {
    let r = this.#o.random();
    for (const [kind, weight] of WEIGHTS) {
      if (r < weight) return kind;
      r -= weight;
    }
    return WEIGHTS[0][0];
  }

  #draw([min, max]: readonly [number, number]): number {
    return Math.round(min + this.#o.random() * (max - min));
  }
}
