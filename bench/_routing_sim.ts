/**
 * The fleet simulation behind `deno task bench --routing`: LLM engines that
 * behave the way routing cares about, driven on a virtual clock by a
 * discrete-event loop, with the proxy's policies (the real classes) choosing
 * where each request goes. Deterministic: same seed, same numbers.
 *
 * Engine model (per instance):
 * - continuous batching with a slot limit and a KV budget: a waiting
 *   request joins the running batch when a slot is free and its context
 *   fits in the KV cache beside the others;
 * - one iteration takes `t0 + t1 × decoding requests + prefill tokens /
 *   prefillTps`: per-request speed falls as the batch grows; prefill is
 *   chunked (at most `CHUNK` tokens per iteration);
 * - prefill covers only the prompt tokens not found in the engine's prefix
 *   cache: an LRU of 16-token blocks (cumulative hashes, as vLLM's and
 *   SGLang's caches key them) of `kvTokens` capacity, filled with each
 *   request's prompt at admission and with prompt + output at completion;
 * - a metrics view (running, waiting, KV usage, prefix hit rate) that the
 *   proxy scrapes every `SCRAPE_MS`, as it does over SSH every health interval.
 */
import type { Policy } from "../lib/proxy/policies.ts";
import type { EngineLoad, RouteTarget } from "../lib/proxy/pool.ts";
import { MAX_PREFIX_BLOCKS } from "../lib/proxy/route_info.ts";
import { type PrefixCounters, readEngineMetrics } from "../lib/proxy/engine_metrics.ts";

/** Tokens per cache block (64 characters of text in the proxy's prefix blocks). */
export const BLOCK_TOKENS = 16;
const CHUNK = 8192;
const SCRAPE_MS = 5000;
const POLL_MS = 250;
/** The proxy's admission queue, as configured by default. */
const QUEUE_MAX = 256;
const QUEUE_TIMEOUT_MS = 30_000;

/** One GPU class as the simulation models it (an ~8B model in bf16). */
export interface GpuSpec {
  name: string;
  count: number;
  /** Iteration time with an empty batch, ms, and per decoding request, ms. */
  t0: number;
  t1: number;
  prefillTps: number;
  slots: number;
  kvTokens: number;
  /** Price, $/hour. */
  dph: number;
}

/** One request as the simulation sees it. */
export interface SimRequest {
  arrival: number;
  /** Prompt as cumulative block hashes, and its length in tokens. */
  blocks: number[];
  promptTokens: number;
  outTokens: number;
  /** Blocks of prompt + output, cached at completion. */
  after: number[];
  /** Called at completion (the session schedules its next turn). */
  onDone?: (now: number) => void;
  // Filled in by the simulation.
  firstToken?: number;
  done?: number;
  rejected?: boolean;
  cachedTokens?: number;
}

interface Running {
  req: SimRequest;
  prefillLeft: number;
  produced: number;
  context: number;
}

/** One simulated engine. */
export class SimEngine {
  readonly gpu: GpuSpec;
  readonly #cache = new Set<number>();
  readonly #cacheCap: number;
  readonly waiting: SimRequest[] = [];
  readonly running: Running[] = [];
  busy = false;
  promptTokens = 0;
  cachedTokens = 0;

  constructor(gpu: GpuSpec) {
    this.gpu = gpu;
    this.#cacheCap = Math.floor(gpu.kvTokens / BLOCK_TOKENS);
  }

  /** What its metrics endpoint would report now. */
  /**
   * The engine's `/metrics` page as vLLM prints it (gauges and the prefix
   * cache counters), so the simulation reads load through the proxy's own
   * parser, as the real proxy does over SSH.
   */
  metricsText(): string {
    const m = this.metrics();
    const model = 'model_name="sim"';
    return [
      "# HELP vllm:num_requests_running Number of requests in model execution batches.",
      "# TYPE vllm:num_requests_running gauge",
      `vllm:num_requests_running{${model}} ${m.running}`,
      "# TYPE vllm:num_requests_waiting gauge",
      `vllm:num_requests_waiting{${model}} ${m.waiting}`,
      "# TYPE vllm:kv_cache_usage_perc gauge",
      `vllm:kv_cache_usage_perc{${model}} ${m.kvCacheUsage}`,
      "# TYPE vllm:prefix_cache_queries counter",
      `vllm:prefix_cache_queries_total{${model}} ${this.promptTokens}`,
      "# TYPE vllm:prefix_cache_hits counter",
      `vllm:prefix_cache_hits_total{${model}} ${this.cachedTokens}`,
      "",
    ].join("\n");
  }

  metrics(): EngineLoad {
    const used = this.running.reduce((s, r) => s + r.context, 0);
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      kvCacheUsage: Math.min(1, used / this.gpu.kvTokens),
      prefixHitRate: this.promptTokens ? this.cachedTokens / this.promptTokens : null,
    };
  }

  /** Starts one iteration; returns its duration in ms, or null when idle. */
  iterate(): number | null {
    this.#admit();
    if (this.running.length === 0) return null;
    let budget = CHUNK;
    let prefill = 0;
    let decoding = 0;
    for (const r of this.running) {
      if (r.prefillLeft > 0) {
        const n = Math.min(budget, r.prefillLeft);
        budget -= n;
        prefill += n;
        r.prefillLeft -= n;
        (r as Running & { step?: boolean }).step = n > 0 && r.prefillLeft === 0;
      } else {
        decoding++;
        (r as Running & { step?: boolean }).step = true;
      }
    }
    return this.gpu.t0 + this.gpu.t1 * decoding + (prefill / this.gpu.prefillTps) * 1000;
  }

  /** Ends the iteration at `now`: tokens out, finished requests leave. Returns those. */
  finish(now: number): SimRequest[] {
    const done: SimRequest[] = [];
    for (let i = 0; i < this.running.length; i++) {
      const r = this.running[i] as Running & { step?: boolean };
      if (!r.step) continue;
      r.step = false;
      r.produced++;
      r.context++;
      if (r.produced === 1) r.req.firstToken = now;
      if (r.produced >= r.req.outTokens) {
        r.req.done = now;
        this.#touch(r.req.after);
        done.push(r.req);
        this.running.splice(i--, 1);
      }
    }
    return done;
  }

  /** Moves waiting requests into the batch while slots and KV allow (FIFO). */
  #admit(): void {
    let used = this.running.reduce((s, r) => s + r.context, 0);
    while (this.waiting.length > 0 && this.running.length < this.gpu.slots) {
      const req = this.waiting[0];
      const need = req.promptTokens + req.outTokens;
      if (used + need > this.gpu.kvTokens && this.running.length > 0) break;
      this.waiting.shift();
      let hit = 0;
      while (hit < req.blocks.length && this.#cache.has(req.blocks[hit])) hit++;
      // The last prompt token is always computed (as engines do).
      const cached = Math.min(hit * BLOCK_TOKENS, req.promptTokens - 1);
      req.cachedTokens = cached;
      this.promptTokens += req.promptTokens;
      this.cachedTokens += cached;
      this.#touch(req.blocks);
      this.running.push({
        req,
        prefillLeft: req.promptTokens - cached,
        produced: 0,
        context: req.promptTokens,
      });
      used += need;
    }
  }

  /** LRU insert, deepest block first so a prefix's head stays freshest. */
  #touch(blocks: readonly number[]): void {
    for (let k = blocks.length - 1; k >= 0; k--) {
      this.#cache.delete(blocks[k]);
      this.#cache.add(blocks[k]);
    }
    let excess = this.#cache.size - this.#cacheCap;
    if (excess <= 0) return;
    for (const key of this.#cache) {
      if (excess-- <= 0) break;
      this.#cache.delete(key);
    }
  }
}

/** A backend as the policy sees it: live in-flight, scraped engine metrics. */
class SimTarget implements RouteTarget {
  readonly id: number;
  inFlight = 0;
  engineLoad: EngineLoad | null = null;
  readonly models = ["sim-model"];
  readonly engine = "sglang" as const;
  readonly gpu: { name: string; count: number };
  constructor(id: number, gpu: GpuSpec) {
    this.id = id;
    this.gpu = { name: gpu.name, count: gpu.count };
  }
  upstreamAuth(): string | null {
    return null;
  }
  send(): never {
    throw new Error("simulated");
  }
  upgrade(): never {
    throw new Error("simulated");
  }
  acquire(): never {
    throw new Error("simulated");
  }
}

/** Binary min-heap of events by time, then insertion order. */
class Events {
  #heap: { t: number; seq: number; run: (now: number) => void }[] = [];
  #seq = 0;
  get size(): number {
    return this.#heap.length;
  }
  push(t: number, run: (now: number) => void): void {
    const h = this.#heap;
    h.push({ t, seq: this.#seq++, run });
    for (let i = h.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (h[p].t < h[i].t || (h[p].t === h[i].t && h[p].seq < h[i].seq)) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }
  pop(): { t: number; run: (now: number) => void } {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      for (let i = 0;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        const less = (a: number, b: number) =>
          h[a].t < h[b].t || (h[a].t === h[b].t && h[a].seq < h[b].seq);
        if (l < h.length && less(l, m)) m = l;
        if (r < h.length && less(r, m)) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}

/** What one simulated run produced. */
export interface RunOutcome {
  requests: SimRequest[];
  engines: SimEngine[];
  /** Virtual time when the last request ended, ms. */
  endMs: number;
  /** Largest number of prefix entries the policy held (when it reports `entries`). */
  maxPolicyEntries: number | null;
  /** Requests answered 503 by the admission queue (full or timed out). */
  rejected: number;
  maxQueueDepth: number;
}

/** A session: requests issued one after another, each when the last finished plus think time. */
export interface Session {
  start: number;
  /** Builds request i (given the time), or null when the session is over. */
  next(i: number, now: number): { req: SimRequest; thinkMs: number } | null;
}

/**
 * Runs `sessions` through `policy` on a fleet of `gpus`. A policy with
 * `saturated()` gets the admission queue (as the real proxy wires it).
 */
export function simulate(
  gpus: readonly GpuSpec[],
  policy: Policy & { entries?: number },
  sessions: readonly Session[],
  opts: { horizonMs: number },
): RunOutcome {
  const events = new Events();
  const engines = gpus.map((g) => new SimEngine(g));
  const targets = gpus.map((g, i) => new SimTarget(i + 1, g));
  const requests: SimRequest[] = [];
  const queue: SimRequest[] = [];
  let rejected = 0;
  let maxQueueDepth = 0;
  let maxEntries: number | null = null;
  let endMs = 0;

  const kick = (i: number, now: number) => {
    const e = engines[i];
    if (e.busy) return;
    const dt = e.iterate();
    if (dt === null) return;
    e.busy = true;
    events.push(now + dt, (t) => {
      e.busy = false;
      for (const req of e.finish(t)) {
        targets[i].inFlight--;
        endMs = Math.max(endMs, t);
        req.onDone?.(t);
      }
      wake(t);
      kick(i, t);
    });
  };
  const dispatch = (req: SimRequest, target: RouteTarget, now: number) => {
    const i = target.id - 1;
    targets[i].inFlight++;
    engines[i].waiting.push(req);
    kick(i, now);
  };
  const open = (): RouteTarget[] =>
    policy.saturated ? targets.filter((t) => !policy.saturated!(t)) : targets;
  const place = (req: SimRequest, now: number): boolean => {
    const cands = open();
    if (cands.length === 0) return false;
    // A route per request, as the relay makes: a policy may read it after select().
    const route = {
      prefix: req.blocks.length > MAX_PREFIX_BLOCKS
        ? req.blocks.slice(0, MAX_PREFIX_BLOCKS)
        : req.blocks,
    };
    const t = policy.select(cands, route)!;
    if (policy.entries !== undefined) maxEntries = Math.max(maxEntries ?? 0, policy.entries);
    dispatch(req, t, now);
    return true;
  };
  const wake = (now: number) => {
    while (queue.length > 0) {
      if (now - queue[0].arrival > QUEUE_TIMEOUT_MS) {
        queue.shift()!.rejected = true;
        rejected++;
        continue;
      }
      if (!place(queue[0], now)) return;
      queue.shift();
    }
  };
  const arrive = (req: SimRequest, now: number) => {
    requests.push(req);
    if (queue.length === 0 && place(req, now)) return;
    if (queue.length >= QUEUE_MAX) {
      req.rejected = true;
      rejected++;
      req.onDone?.(now);
      return;
    }
    queue.push(req);
    maxQueueDepth = Math.max(maxQueueDepth, queue.length);
  };

  for (const s of sessions) {
    let i = 0;
    const issue = (now: number) => {
      const n = s.next(i++, now);
      if (!n) return;
      const { req, thinkMs } = n;
      req.arrival = now;
      req.onDone = (t) => {
        if (!req.rejected) events.push(t + thinkMs, issue);
      };
      arrive(req, now);
    };
    events.push(s.start, issue);
  }
  // Scrapes and queue polls, until the horizon.
  // Each scrape goes through the proxy's parser (lib/proxy/engine_metrics.ts),
  // keeping the previous counters for an interval hit rate, as Backend does.
  const counters: (PrefixCounters | null)[] = engines.map(() => null);
  const scrape = (now: number) => {
    targets.forEach((t, i) => {
      const reading = readEngineMetrics("vllm", engines[i].metricsText(), counters[i]);
      counters[i] = reading.counters;
      t.engineLoad = reading.load;
    });
    if (now + SCRAPE_MS < opts.horizonMs) events.push(now + SCRAPE_MS, scrape);
  };
  events.push(0, scrape);
  const poll = (now: number) => {
    wake(now);
    if (now + POLL_MS < opts.horizonMs) events.push(now + POLL_MS, poll);
  };
  events.push(0, poll);

  while (events.size > 0) {
    const ev = events.pop();
    if (ev.t > opts.horizonMs) break;
    ev.run(ev.t);
  }
  return { requests, engines, endMs, maxPolicyEntries: maxEntries, rejected, maxQueueDepth };
}
