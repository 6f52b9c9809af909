/**
 * A baseline for `deno task bench --routing`: the SGLang router's published
 * cache-aware algorithm (sgl-router `policies/cache_aware.rs`), behind our
 * `Policy` interface. Not offered by `--policy`; it exists to be compared.
 *
 * As published:
 *   1. load is the router's own count of requests in flight per worker;
 *      the fleet is imbalanced when max − min > `balanceAbsThreshold` (64)
 *      AND max > min × `balanceRelThreshold` (1.5): then the least-loaded
 *      worker gets the request.
 *   2. otherwise the request's text is matched against an approximate
 *      radix tree of what was routed to each worker; if the best match
 *      covers more than `cacheThreshold` (0.3) of the text, the worker
 *      holding it wins, else the worker with the smallest tree (most free
 *      cache).
 *   3. the chosen worker's tree gets the text, in both branches; every
 *      `evictionIntervalMs` (120 s) trees larger than `maxTreeChars`
 *      (2^26) lose their least recently used entries.
 *
 * One approximation: the published tree is character-level; this one
 * matches whole 64-char blocks (`RouteInfo.prefix`, capped at 32 KiB), so
 * match rates round down to a block. Where several workers match equally
 * deep, the published tree returns the first tenant of its hash map at that
 * node, and with character granularity the deepest node usually belongs to
 * one worker that happened to share a few more characters; a seeded random
 * choice among the tied workers stands in for that.
 */
import type { Policy } from "../lib/proxy/policies.ts";
import type { RouteTarget } from "../lib/proxy/pool.ts";
import { PREFIX_BLOCK_CHARS, type RouteInfo } from "../lib/proxy/route_info.ts";

/** Options with the published defaults. */
export interface SglangOptions {
  cacheThreshold?: number;
  balanceAbsThreshold?: number;
  balanceRelThreshold?: number;
  evictionIntervalMs?: number;
  maxTreeChars?: number;
  /** Seed of the tie-break among equally matching workers. */
  seed?: number;
  /** Virtual time for the eviction cycle (default Date.now). */
  now?: () => number;
}

/** SGLang's cache_aware policy (see the module comment). */
export class SglangCacheAware implements Policy {
  /** Policy name. */
  readonly name = "sglang-cache-aware";
  /** Reads `RouteInfo.prefix`. */
  readonly usesPrefix = true;
  readonly #cacheThreshold: number;
  readonly #absThreshold: number;
  readonly #relThreshold: number;
  readonly #evictionMs: number;
  readonly #maxBlocks: number;
  readonly #now: () => number;
  #rng: number;
  #lastEviction: number | null = null;
  /** Per worker: block hash → last access, in LRU order. */
  readonly #trees = new Map<number, Map<number, number>>();

  /** A policy with the published defaults unless overridden. */
  constructor(opts: SglangOptions = {}) {
    this.#cacheThreshold = opts.cacheThreshold ?? 0.3;
    this.#absThreshold = opts.balanceAbsThreshold ?? 64;
    this.#relThreshold = opts.balanceRelThreshold ?? 1.5;
    this.#evictionMs = opts.evictionIntervalMs ?? 120_000;
    this.#maxBlocks = Math.floor((opts.maxTreeChars ?? 2 ** 26) / PREFIX_BLOCK_CHARS);
    this.#now = opts.now ?? Date.now;
    this.#rng = (opts.seed ?? 1) >>> 0 || 1;
  }

  /** Blocks held over all trees. */
  get entries(): number {
    let n = 0;
    for (const t of this.#trees.values()) n += t.size;
    return n;
  }

  /** Picks a worker as SGLang's router does. */
  select(candidates: readonly RouteTarget[], route: RouteInfo): RouteTarget | undefined {
    if (candidates.length === 0) return undefined;
    this.#maybeEvict();
    const sorted = [...candidates].sort((a, b) => a.id - b.id);
    const prefix = route.prefix ?? [];
    const loads = sorted.map((c) => c.inFlight);
    const max = Math.max(...loads);
    const min = Math.min(...loads);
    let pick: RouteTarget;
    if (max - min > this.#absThreshold && max > min * this.#relThreshold) {
      pick = sorted[loads.indexOf(min)];
    } else {
      let best: RouteTarget[] = [];
      let bestMatch = 0;
      for (const c of sorted) {
        const m = this.#matched(c.id, prefix);
        if (m > bestMatch) {
          best = [c];
          bestMatch = m;
        } else if (m === bestMatch && m > 0) best.push(c);
      }
      const rate = prefix.length === 0 ? 0 : bestMatch / prefix.length;
      pick = rate > this.#cacheThreshold
        ? best[this.#random(best.length)]
        : sorted.reduce((a, b) => (this.#size(b.id) < this.#size(a.id) ? b : a));
    }
    this.#insert(pick.id, prefix);
    return pick;
  }

  #matched(id: number, prefix: readonly number[]): number {
    const tree = this.#trees.get(id);
    if (!tree) return 0;
    let n = 0;
    while (n < prefix.length && tree.has(prefix[n])) n++;
    return n;
  }

  #size(id: number): number {
    return this.#trees.get(id)?.size ?? 0;
  }

  #insert(id: number, prefix: readonly number[]): void {
    let tree = this.#trees.get(id);
    if (!tree) this.#trees.set(id, tree = new Map());
    const now = this.#now();
    // Deepest first, so leaves are the least recently used.
    for (let k = prefix.length - 1; k >= 0; k--) {
      tree.delete(prefix[k]);
      tree.set(prefix[k], now);
    }
  }

  #maybeEvict(): void {
    const now = this.#now();
    if (this.#lastEviction === null) this.#lastEviction = now;
    if (now - this.#lastEviction < this.#evictionMs) return;
    this.#lastEviction = now;
    for (const tree of this.#trees.values()) {
      let excess = tree.size - this.#maxBlocks;
      for (const key of tree.keys()) {
        if (excess-- <= 0) break;
        tree.delete(key);
      }
    }
  }

  /** xorshift32 in [0, n). */
  #random(n: number): number {
    let x = this.#rng;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#rng = x >>> 0;
    return this.#rng % n;
  }
}
