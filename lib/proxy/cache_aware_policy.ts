/**
 * `--policy cache-aware`: route on what the engines know (issue #15).
 *
 * For each request, among the eligible candidates:
 *   1. load      — each backend's capacity-relative load: in-flight / capacity.
 *   2. balance   — a candidate more than `balanceThreshold` above the least
 *                  loaded one loses its affinity: load wins over cache there.
 *   3. affinity  — the rest score `matched − loadWeight × load`, where
 *                  `matched` is the fraction of the prompt's prefix blocks
 *                  this policy last sent to that backend (so the engine most
 *                  likely still holds their KV cache). Highest score wins.
 *                  When every candidate matches equally (no history, or
 *                  only a shared system prompt), fewest in flight wins, as
 *                  in least-inflight; ties rotate.
 *
 * Capacity is what a backend has shown it can serve: the running batch it
 * had while requests waited in its queue (its slot limit) once seen, else
 * the largest batch seen or a prior from its GPU class and count, whichever
 * is larger. A backend counts as saturated once its engine reports a queue
 * that (with what this proxy is about to add beyond capacity) passes
 * `saturationQueue × capacity`; the admission queue (admission.ts) holds
 * requests while every candidate is. No metrics, no saturation.
 *
 * With a single candidate there is nothing to choose (one backend up, or
 * the others saturated): the pick is made without reading the prompt, and
 * the route is kept, with up to `MAX_PENDING - 1` others, until the record
 * is needed: the next select() with several candidates, a read of the
 * record (matched, entries), or a full list records them, in order, before
 * anything else. Every pick is recorded and every read sees what eager
 * recording gave; on a one-backend fleet the prompt's JSON parse and
 * hashing run for 64 requests at once, off the other 63's paths.
 *
 * State (the prefix record and the capacities) is owned by this object and
 * written only by its own methods (`select()`; `matched()` and `entries`
 * record pending picks first; `saturated()` learns capacities), and is
 * bounded: the prefix record is one LRU over all backends with `maxEntries`
 * blocks; capacities keep at most `MAX_BACKENDS` entries.
 */
import type { Policy } from "./policies.ts";
import { RoundRobin } from "./policies.ts";
import type { RouteTarget } from "./pool.ts";
import type { RouteInfo } from "./route_info.ts";

/** Options of `CacheAware`, with their defaults. */
export interface CacheAwareOptions {
  /** Prefix blocks remembered over all backends (default 100_000, ~4 MB). */
  maxEntries?: number;
  /**
   * Capacity-relative load gap past which balance overrides affinity
   * (default 0.25: a backend a quarter of its capacity busier than the
   * idlest one gets no credit for cached prefixes; 0.5 and 1 let hot spots
   * form in the routing benchmark).
   */
  balanceThreshold?: number;
  /** Weight of load against matched prefix fraction in the score (default 1). */
  loadWeight?: number;
  /** Queue, as a fraction of capacity, past which a backend is saturated (default 1). */
  saturationQueue?: number;
}

/** Capacity learned for one backend. */
interface Learned {
  /** Largest running batch reported. */
  maxRunning: number;
  /** Running batch while requests waited: the engine's slot limit; null until seen. */
  limit: number | null;
}

/** Backends whose capacity is remembered (oldest forgotten first). */
const MAX_BACKENDS = 1024;
/** Concurrent requests one GPU of a class serves well, for an unknown model of ~8B parameters. */
const GPU_SLOTS: readonly [RegExp, number][] = [
  [/B200|H200|H100|GH200/i, 64],
  [/A100|H800|A800|L40|6000 Ada|MI300/i, 48],
  [/4090|3090|A6000|A5000|L4\b|5090|A40/i, 16],
];
const DEFAULT_SLOTS = 16;
const TWO_21 = 0x200000;

/** Prior capacity of a backend from its GPUs, before it has shown any. */
export function gpuPrior(gpu: RouteTarget["gpu"]): number {
  if (!gpu) return DEFAULT_SLOTS;
  // A count that is not a number counts as one GPU: a NaN capacity made
  // every score NaN, and then no candidate was ever picked.
  return slotsOf(gpu.name) * (Number.isFinite(gpu.count) ? Math.max(1, gpu.count) : 1);
}

/**
 * Slots per GPU of a class. `load()` asks for every candidate of every
 * request and the names are few, so each is matched against the patterns once.
 */
function slotsOf(name: string): number {
  let slots = SLOTS_BY_NAME.get(name);
  if (slots === undefined) {
    slots = GPU_SLOTS.find(([re]) => re.test(name))?.[1] ?? DEFAULT_SLOTS;
    // Bounded: a fleet shows a handful of names; past the cap, start over.
    if (SLOTS_BY_NAME.size >= MAX_GPU_NAMES) SLOTS_BY_NAME.clear();
    SLOTS_BY_NAME.set(name, slots);
  }
  return slots;
}
const SLOTS_BY_NAME = new Map<string, number>();
const MAX_GPU_NAMES = 256;

/** The cache- and load-aware policy (see the module comment). */
export class CacheAware implements Policy {
  /** Policy name. */
  readonly name = "cache-aware";
  /** Asks the relay for `RouteInfo.prefix`. */
  readonly usesPrefix = true;
  readonly #maxEntries: number;
  readonly #balanceThreshold: number;
  readonly #loadWeight: number;
  readonly #saturationQueue: number;
  /**
   * Remembered (backend, prefix block) pairs as 53-bit keys, in LRU order
   * (a Set iterates in insertion order; a touch re-inserts).
   */
  readonly #blocks = new Set<number>();
  readonly #learned = new Map<number, Learned>();
  readonly #tieBreak = new RoundRobin();
  // Lone picks whose prefix is still to be recorded, oldest first.
  #pending: { id: number; route: RouteInfo }[] = [];

  /** A policy with `opts` (see `CacheAwareOptions` for defaults). */
  constructor(opts: CacheAwareOptions = {}) {
    this.#maxEntries = opts.maxEntries ?? 100_000;
    this.#balanceThreshold = opts.balanceThreshold ?? 0.25;
    this.#loadWeight = opts.loadWeight ?? 1;
    this.#saturationQueue = opts.saturationQueue ?? 1;
  }

  /** Prefix blocks currently remembered, over all backends (bounded by `maxEntries`). */
  get entries(): number {
    this.#flush();
    return this.#blocks.size;
  }

  /**
   * Picks a candidate and records the request's prefix against it. With one
   * candidate `route.prefix` is read later (see the module doc): the caller
   * must not change `route` after the call, as the relay never does.
   */
  select(candidates: readonly RouteTarget[], route: RouteInfo): RouteTarget | undefined {
    if (candidates.length === 0) return undefined;
    for (const c of candidates) this.#learn(c);
    if (candidates.length === 1) {
      // What the scoring below gives one candidate, without the prompt.
      if (this.#pending.length >= MAX_PENDING) this.#flush();
      this.#pending.push({ id: candidates[0].id, route });
      return candidates[0];
    }
    this.#flush(); // lone picks first: the record sees every pick in order
    const prefix = route.prefix ?? [];
    // No arrays per request on the usual path: without a prefix, or when every
    // candidate holds as much of it, loads are never needed (see below).
    const n = candidates.length;
    let held: number[] | null = null;
    let uniform = true;
    if (prefix.length > 0) {
      held = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        held[i] = this.matched(candidates[i].id, prefix) / prefix.length;
        if (held[i] !== held[0]) uniform = false;
      }
    }
    // Where no backend holds more of the prompt than another, there is no
    // affinity to trade against load: pick by in-flight count, as
    // least-inflight does (fast backends drain sooner and so take more).
    let loads: number[] | null = null;
    let minLoad = Infinity;
    if (!uniform) {
      loads = new Array<number>(n);
      for (let i = 0; i < n; i++) {
        loads[i] = this.load(candidates[i]);
        // Pairwise Math.min: the same result as Math.min(...loads), NaN and -0 included.
        minLoad = Math.min(minLoad, loads[i]);
      }
    }
    let best: RouteTarget | undefined;
    let ties: RouteTarget[] | null = null;
    let bestScore = -Infinity;
    for (let i = 0; i < n; i++) {
      const score = uniform
        ? -candidates[i].inFlight
        : (loads![i] - minLoad > this.#balanceThreshold ? 0 : held![i]) -
          this.#loadWeight * loads![i];
      if (score > bestScore) {
        best = candidates[i];
        ties = null;
        bestScore = score;
      } else if (score === bestScore) {
        if (best === undefined) best = candidates[i];
        else (ties ??= [best]).push(candidates[i]);
      }
    }
    // Every score NaN (an in-flight count that is not a number): still a pick.
    const pick = ties ? this.#tieBreak.select(ties)! : best ?? candidates[0];
    this.#record(pick.id, prefix);
    return pick;
  }

  /**
   * Capacity-relative load of `t`: requests in flight over what it can run
   * at once. The proxy's own count, because it is live; the engine's
   * numbers are a health interval old and would show requests long gone.
   */
  load(t: RouteTarget): number {
    return t.inFlight / this.capacity(t);
  }

  /** Requests `t` can run at once, as learned or from its GPUs. */
  capacity(t: RouteTarget): number {
    const l = this.#learned.get(t.id);
    if (l?.limit) return l.limit;
    return Math.max(gpuPrior(t.gpu), l?.maxRunning ?? 0);
  }

  /**
   * True when `t`'s queue, reported by the engine or inferred from
   * in-flight requests (plus `extra` about to start) beyond its capacity,
   * is past the threshold.
   */
  saturated(t: RouteTarget, extra = 0): boolean {
    this.#learn(t);
    // Only the engine's own word counts: a backend whose engine reports no
    // queue (or no metrics at all) is never held back on a guess. A prior
    // from its GPU class once made the proxy refuse streams that the engines
    // would have served (1,000 SSE streams over 8 backends got 503s).
    const load = t.engineLoad as (RouteTarget["engineLoad"] & { stale?: boolean }) | undefined;
    if (!load || load.stale || load.waiting === null) return false;
    const cap = this.capacity(t);
    // The requests about to start join the engine's queue once its slots are full.
    const queued = load.waiting + Math.max(0, t.inFlight + extra - cap);
    return load.waiting > 0 && queued > this.#saturationQueue * cap;
  }

  /** How many leading blocks of `prefix` were last sent to backend `id`. */
  matched(id: number, prefix: readonly number[]): number {
    this.#flush();
    const salt = saltOf(id);
    let n = 0;
    while (n < prefix.length && this.#blocks.has(keyOf(prefix[n], salt))) n++;
    return n;
  }

  /** Records the pending lone picks, oldest first. */
  #flush(): void {
    if (this.#pending.length === 0) return;
    const pending = this.#pending;
    this.#pending = [];
    for (const { id, route } of pending) {
      let prefix: readonly number[] | undefined;
      try {
        prefix = route.prefix;
      } catch {
        // A route that cannot give its prefix records nothing; it must not
        // fail the pick of the request that flushes it.
        continue;
      }
      this.#record(id, prefix ?? []);
    }
  }

  /** Notes what the engine reports about its batch, for capacity. */
  #learn(t: RouteTarget): void {
    const running = t.engineLoad?.running;
    // An engine's metrics may say NaN or Infinity: no capacity is learned from that.
    if (running === null || running === undefined || !Number.isFinite(running)) return;
    let l = this.#learned.get(t.id);
    if (!l) {
      if (this.#learned.size >= MAX_BACKENDS) {
        this.#learned.delete(this.#learned.keys().next().value!);
      }
      l = { maxRunning: 0, limit: null };
      this.#learned.set(t.id, l);
    }
    l.maxRunning = Math.max(l.maxRunning, running);
    // Requests waiting while this many ran: the batch was full.
    if ((t.engineLoad?.waiting ?? 0) > 0 && running > 0) l.limit = Math.max(l.limit ?? 0, running);
  }

  /**
   * Remembers `prefix` as sent to backend `id`, deepest block first, so the
   * shallow blocks are the freshest and eviction trims prefixes from the
   * end, the way an engine's radix cache evicts leaves first.
   */
  #record(id: number, prefix: readonly number[]): void {
    const salt = saltOf(id);
    for (let k = prefix.length - 1; k >= 0; k--) {
      const key = keyOf(prefix[k], salt);
      this.#blocks.delete(key);
      this.#blocks.add(key);
    }
    // Evict the least recently routed blocks over the cap.
    if (this.#blocks.size > this.#maxEntries) {
      let excess = this.#blocks.size - this.#maxEntries;
      for (const key of this.#blocks) {
        if (excess-- <= 0) break;
        this.#blocks.delete(key);
      }
    }
  }
}

/** Lone picks kept for a later record (each holds its route: a body of up to 8 KiB, see route_info.ts). */
export const MAX_PENDING = 64;

/** A per-backend 53-bit salt as two lanes [high 32 bits, low 21 bits]. */
function saltOf(id: number): [number, number] {
  let h = Math.imul(id ^ 0x9e3779b9, 0x85ebca6b);
  h ^= h >>> 13;
  let l = Math.imul(h ^ 0xc2b2ae35, 0x27d4eb2f);
  l ^= l >>> 16;
  return [h >>> 0, l & 0x1fffff];
}

/** The key of block hash `block` (53 bits) for a backend: the hash xor its salt, exactly. */
function keyOf(block: number, salt: [number, number]): number {
  const hi = Math.floor(block / TWO_21);
  const lo = block - hi * TWO_21;
  return ((hi ^ salt[0]) >>> 0) * TWO_21 + ((lo ^ salt[1]) & 0x1fffff);
}
