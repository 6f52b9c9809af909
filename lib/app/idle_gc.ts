/**
 * Gives a burst's memory back once the proxy has been idle for a while.
 *
 * The product runs with V8's memory reducer off (`RUNTIME_V8_FLAGS` in
 * scripts/compile.ts): the reducer shrinks the heap after ~8 s of little
 * allocation, and the requests after such a pause then ran slower
 * (docs/BENCHMARKS.md, ninth pass). Off, nothing shrinks the heap while
 * nothing allocates: after a burst of large bodies a quiet proxy held its
 * peak (~700 MB) for minutes. This owner does what the reducer did, on the
 * proxy's own terms: once no request has started for `idleMs` and none is in
 * flight, and the heap (with the buffers it owns) has grown by `growthBytes`
 * since the last collection, it runs one full collection. A pause shorter
 * than `idleMs` keeps its heap.
 */
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";

/** Quiet time before memory is given back, ms. */
export const IDLE_GC_AFTER_MS = 60_000;
/** How often idleness is checked, ms. */
export const IDLE_GC_CHECK_MS = 5_000;
/** Growth of heap plus external memory since the last collection that is worth one. */
export const IDLE_GC_GROWTH_BYTES = 32 * 1024 * 1024;

/** Memory as `Deno.memoryUsage()` reports it (the fields used here). */
export interface MemoryReading {
  heapTotal: number;
  external: number;
}

/** What `IdleGc` watches and calls. */
export interface IdleGcDeps {
  clock: Pick<Clock, "now">;
  /** Requests started so far: any change counts as activity. */
  requests: () => number;
  /** Requests still being answered (a long stream is activity). */
  inFlight: () => number;
  memory: () => MemoryReading;
  /** A full collection (V8's `gc`, exposed by `--expose-gc`). */
  gc: () => void;
  logger: Logger;
  idleMs?: number;
  growthBytes?: number;
}

/** The idle-memory owner; `tick()` is called every `IDLE_GC_CHECK_MS`. */
export class IdleGc {
  readonly #deps: IdleGcDeps;
  readonly #idleMs: number;
  readonly #growth: number;
  #seenRequests: number;
  #activeAt: number;
  /** Heap plus external memory after the last collection (or at start). */
  #baseline: number;
  /** This quiet spell was already collected: one collection per pause. */
  #collected = false;

  constructor(deps: IdleGcDeps) {
    this.#deps = deps;
    this.#idleMs = deps.idleMs ?? IDLE_GC_AFTER_MS;
    this.#growth = deps.growthBytes ?? IDLE_GC_GROWTH_BYTES;
    this.#seenRequests = deps.requests();
    this.#activeAt = deps.clock.now();
    this.#baseline = size(deps.memory());
  }

  /** Checks for a long enough pause; collects at most once per pause. Returns whether it did. */
  tick(): boolean {
    const now = this.#deps.clock.now();
    const requests = this.#deps.requests();
    if (requests !== this.#seenRequests || this.#deps.inFlight() > 0) {
      this.#seenRequests = requests;
      this.#activeAt = now;
      this.#collected = false;
      return false;
    }
    if (this.#collected || now - this.#activeAt < this.#idleMs) return false;
    const before = size(this.#deps.memory());
    if (before < this.#baseline + this.#growth) return false;
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

/** V8's `gc` when the runtime exposes it (`--expose-gc`), else null. */
export function exposedGc(): (() => void) | null {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === "function" ? () => (gc as () => void)() : null;
}
