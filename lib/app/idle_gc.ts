/**
 * Gives a burst's memory back once the proxy has gone quiet.
 *
 * The product runs with V8's memory reducer off (`RUNTIME_V8_FLAGS` in
 * scripts/compile.ts): the reducer shrinks the heap after ~8 s of little
 * allocation, and the requests after such a pause then ran slower
 * (docs/BENCHMARKS.md, ninth pass). Off, nothing collected while nothing
 * allocated: after a burst of large bodies a quiet proxy held its peak
 * (~700 MB) for minutes. This owner collects on the proxy's own terms,
 * once per quiet spell (no request relayed, none under way; admin and
 * health requests do not count), measured in checks 5 s apart:
 *
 * - after `IDLE_GC_STEPS[0]` (10 s), when heap plus external memory grew by
 *   128 MiB or more since the last collection: a burst of large bodies or
 *   many streams. Soon matters: the freed buffers go back to malloc, and
 *   malloc can return its heap to the system only while nothing newer sits
 *   above them; a proxy left with that garbage for a minute had allocated
 *   enough small things on top to keep ~660 MB resident after the collection,
 *   against ~240 MB when collected at 10 s (docs/BENCHMARKS.md, tenth pass);
 * - after `IDLE_GC_STEPS[1]` (60 s), on 32 MiB: the ordinary warm heap of
 *   steady traffic, which the reducer would have shrunk after 8 s.
 *
 * The collection is V8's "last resort" one (all available garbage, in as
 * many passes as weak references need, heap shrunk): one plain pass freed
 * 8 of 540 MiB after a burst of uploads. It pauses the thread (~90 ms with
 * a 20 MB live heap), so a request that arrives just then waits; that is
 * once per quiet spell, and only after the growth above.
 */
import type { Logger } from "../core/logger.ts";

/** Quiet time and growth since the last collection that call for one, in order. */
export const IDLE_GC_STEPS: readonly { afterMs: number; growthBytes: number }[] = Object.freeze([
  { afterMs: 10_000, growthBytes: 128 * 1024 * 1024 },
  { afterMs: 60_000, growthBytes: 32 * 1024 * 1024 },
]);
/** How often idleness is checked, ms. */
export const IDLE_GC_CHECK_MS = 5_000;

/** Memory as `Deno.memoryUsage()` reports it (the fields used here). */
export interface MemoryReading {
  heapTotal: number;
  external: number;
}

/** What `IdleGc` watches and calls. */
export interface IdleGcDeps {
  /**
   * `finished`: requests relayed so far, any change is activity (admin and
   * health requests are not in it, so a load balancer's probe does not
   * keep a quiet proxy from collecting). `busy`: requests under way, bodies
   * still arriving, held for admission, waiting for an engine, or streaming.
   */
  traffic: () => { finished: number; busy: number };
  memory: () => MemoryReading;
  /** A full collection (V8's `gc`, exposed by `--expose-gc`). */
  gc: () => void;
  logger: Logger;
  /** [IDLE_GC_STEPS] */
  steps?: readonly { afterMs: number; growthBytes: number }[];
  /** How often `tick()` is called, ms: quiet time is counted in ticks [IDLE_GC_CHECK_MS]. */
  checkMs?: number;
}

/** The idle-memory owner; `tick()` is called every `IDLE_GC_CHECK_MS`. Steps are in order of `afterMs`. */
export class IdleGc {
  readonly #deps: IdleGcDeps;
  readonly #steps: readonly { afterMs: number; growthBytes: number }[];
  readonly #checkMs: number;
  #seenRequests: number;
  /**
   * Quiet checks in a row. Counted, not read off the wall clock: a clock
   * stepped back or forward must not hold off or hurry a collection.
   */
  #quietTicks = 0;
  /** Heap plus external memory after the last collection (or at start). */
  #baseline: number;
  /** This quiet spell was already collected: one collection per pause. */
  #collected = false;

  constructor(deps: IdleGcDeps) {
    this.#deps = deps;
    this.#steps = deps.steps ?? IDLE_GC_STEPS;
    this.#checkMs = deps.checkMs ?? IDLE_GC_CHECK_MS;
    this.#seenRequests = deps.traffic().finished;
    this.#baseline = size(deps.memory());
  }

  /** Checks the quiet spell against the steps; collects at most once per spell. Returns whether it did. */
  tick(): boolean {
    const { finished, busy } = this.#deps.traffic();
    if (finished !== this.#seenRequests || busy > 0) {
      this.#seenRequests = finished;
      this.#quietTicks = 0;
      this.#collected = false;
      return false;
    }
    this.#quietTicks++;
    if (this.#collected) return false;
    const quiet = this.#quietTicks * this.#checkMs;
    let growth = Infinity;
    for (const step of this.#steps) if (quiet >= step.afterMs) growth = step.growthBytes;
    if (growth === Infinity) return false;
    const before = size(this.#deps.memory());
    if (before < this.#baseline + growth) return false;
    const started = performance.now();
    this.#deps.gc();
    const after = size(this.#deps.memory());
    this.#baseline = after;
    this.#collected = true;
    this.#deps.logger.log("info", "idle: gave memory back", {
      beforeMiB: Math.round(before / MiB),
      afterMiB: Math.round(after / MiB),
      ms: Math.round(performance.now() - started),
    });
    return true;
  }
}

const MiB = 1024 * 1024;

function size(m: MemoryReading): number {
  return m.heapTotal + m.external;
}

/** V8's last-resort `gc` when the runtime exposes it (`--expose-gc`), else null. */
export function exposedGc(): (() => void) | null {
  const gc = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== "function") return null;
  return () => gc({ type: "major", execution: "sync", flavor: "last-resort" });
}
