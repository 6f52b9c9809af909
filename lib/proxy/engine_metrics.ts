/**
 * An engine's own view of its load, read from its Prometheus `/metrics`
 * text (issue #15): requests running and waiting, KV-cache usage and
 * prefix-cache hit rate, in one shape whatever the engine. vLLM, SGLang and
 * llama.cpp name these differently and have renamed them across versions;
 * the tables below hold every name we know, newest first.
 *
 * Parsing uses `parse-prometheus-text-format` (kept on npm, no native
 * code). Only the sample lines of the families we read reach it: a vLLM
 * scrape is mostly histogram buckets we do not need, and one odd line in an
 * unrelated family must not cost us the load. Two quirks of the library are
 * handled here: it drops the last sample when the text lacks a final
 * newline, and it merges labelled histograms (we read none).
 */
import parsePrometheusText from "parse-prometheus-text-format";
import type { Engine } from "../core/backend_spec.ts";

/** What an engine says about its own load. Null where the engine does not report it. */
export interface EngineLoad {
  /** Requests the engine is generating for now (summed over models and data-parallel ranks). */
  running: number | null;
  /** Requests queued inside the engine. */
  waiting: number | null;
  /** KV-cache usage, 0..1 (the fullest cache when there are several). */
  kvCacheUsage: number | null;
  /** Prefix-cache hit rate, 0..1; over the last scrape interval when the engine exports counters. */
  prefixHitRate: number | null;
}

/** Cumulative prefix-cache counters, kept between scrapes to compute an interval rate. */
export interface PrefixCounters {
  queries: number;
  hits: number;
}

/** One scrape: the load and the counters the next scrape's interval rate starts from. */
export interface EngineReading {
  load: EngineLoad;
  counters: PrefixCounters | null;
}

/** Largest metrics text read (a busy vLLM prints a few hundred KiB). */
export const MAX_METRICS_BYTES = 4 * 1024 * 1024;
/** Most samples of the families we read; more means a label explosion, not a real engine. */
export const MAX_METRICS_SERIES = 10_000;

/** The metrics text could not be used: too large, too many series, or a malformed line we need. */
export class EngineMetricsError extends Error {
  override name = "EngineMetricsError";
}

/** Sample names per quantity, in preference order (the first name with a finite value wins). */
interface Names {
  running: readonly string[];
  waiting: readonly string[];
  kv: readonly string[];
  /** A gauge, for engines without counters. */
  hitRate: readonly string[];
  queries: readonly string[];
  hits: readonly string[];
}

const NAMES: Record<Exclude<Engine, "unknown">, Names> = {
  vllm: {
    running: ["vllm:num_requests_running"],
    waiting: ["vllm:num_requests_waiting"],
    // V1 renamed gpu_cache_usage_perc; both are fractions despite "perc".
    kv: ["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    hitRate: ["vllm:gpu_prefix_cache_hit_rate"], // V0
    queries: ["vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total"],
    hits: ["vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total"],
  },
  sglang: {
    running: ["sglang:num_running_reqs"],
    waiting: ["sglang:num_queue_reqs"],
    kv: ["sglang:token_usage"],
    hitRate: ["sglang:cache_hit_rate"],
    queries: [],
    hits: [],
  },
  "llama.cpp": {
    running: ["llamacpp:requests_processing"],
    waiting: ["llamacpp:requests_deferred"],
    kv: ["llamacpp:kv_cache_usage_ratio"],
    hitRate: [],
    queries: [],
    hits: [],
  },
};

const ENGINES = Object.keys(NAMES) as (keyof typeof NAMES)[];

/** A family as the library returns it (values are strings: `NaN`, `+Inf` included). */
interface ParsedFamily {
  name: string;
  metrics: { value?: string; labels?: Record<string, string> }[];
}

const parse = parsePrometheusText as (text: string) => ParsedFamily[];

/**
 * The load in `promText` as `engine` reports it. The prefix hit rate is
 * cumulative since the engine started when it exports counters (use
 * `readEngineMetrics` with the previous counters for an interval rate).
 * Throws `EngineMetricsError` on oversized or malformed input.
 */
export function parseEngineMetrics(engine: Engine, promText: string): EngineLoad {
  return readEngineMetrics(engine, promText, null).load;
}

/**
 * Like `parseEngineMetrics`, with the counters of the previous scrape so the
 * prefix hit rate covers just the interval between the two. Engine
 * `unknown` tries every known naming and keeps the first that matches.
 */
export function readEngineMetrics(
  engine: Engine,
  promText: string,
  previous: PrefixCounters | null,
): EngineReading {
  if (promText.length > MAX_METRICS_BYTES) {
    throw new EngineMetricsError(`metrics text over ${MAX_METRICS_BYTES} bytes`);
  }
  const candidates = engine === "unknown" ? ENGINES : [engine];
  let fallback: EngineReading | undefined;
  for (const e of candidates) {
    const names = NAMES[e];
    const values = sampleValues(promText, names);
    const reading = toReading(names, values, previous);
    if (values.size > 0) return reading;
    fallback ??= reading;
  }
  return fallback!;
}

/** Finite values by sample name, for the names in `names` only. */
function sampleValues(text: string, names: Names): Map<string, number[]> {
  const wanted = new Set(Object.values(names).flat());
  const kept: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const end = line.search(/[{\s]/);
    if (!wanted.has(end === -1 ? line : line.slice(0, end))) continue;
    if (kept.length >= MAX_METRICS_SERIES) {
      throw new EngineMetricsError(`metrics text has over ${MAX_METRICS_SERIES} series`);
    }
    kept.push(line);
  }
  const values = new Map<string, number[]>();
  if (kept.length === 0) return values;
  let families: ParsedFamily[];
  try {
    // The final newline matters: without it the library drops the last sample.
    families = parse(kept.join("\n") + "\n");
  } catch (err) {
    throw new EngineMetricsError("metrics text has a malformed line", { cause: err });
  }
  for (const f of families) {
    for (const m of f.metrics) {
      // Number() reads `NaN`, `+Inf` and `1.5e+06` as Prometheus means them.
      const v = Number(m.value);
      if (m.value === undefined || !Number.isFinite(v)) continue;
      const list = values.get(f.name) ?? [];
      list.push(v);
      values.set(f.name, list);
    }
  }
  return values;
}

function toReading(
  names: Names,
  values: Map<string, number[]>,
  previous: PrefixCounters | null,
): EngineReading {
  const first = (list: readonly string[]) => {
    for (const n of list) {
      const v = values.get(n);
      if (v && v.length > 0) return v;
    }
    return null;
  };
  const sum = (v: number[] | null) => v === null ? null : v.reduce((a, x) => a + x, 0);
  const queries = sum(first(names.queries));
  const hits = sum(first(names.hits));
  const counters = queries !== null && hits !== null ? { queries, hits } : null;
  let prefixHitRate: number | null;
  if (counters) {
    prefixHitRate = intervalRate(previous, counters);
  } else {
    // vLLM V0 reports -1 when it has no data yet.
    const g = first(names.hitRate)?.filter((x) => x >= 0) ?? [];
    prefixHitRate = g.length === 0 ? null : unit(sum(g)! / g.length);
  }
  const running = sum(first(names.running));
  const waiting = sum(first(names.waiting));
  const kv = first(names.kv);
  return {
    load: {
      running: running === null ? null : Math.max(0, running),
      waiting: waiting === null ? null : Math.max(0, waiting),
      // Several caches (models, data-parallel ranks): the fullest one limits admission first.
      kvCacheUsage: kv === null ? null : unit(Math.max(...kv)),
      prefixHitRate,
    },
    counters,
  };
}

/**
 * Hits over queries between two scrapes; null when the interval saw no
 * queries. Without a previous scrape, or after the engine restarted
 * (counters went down), the cumulative rate is the best there is.
 */
function intervalRate(prev: PrefixCounters | null, cur: PrefixCounters): number | null {
  if (prev && cur.queries >= prev.queries && cur.hits >= prev.hits) {
    const dq = cur.queries - prev.queries;
    return dq > 0 ? unit((cur.hits - prev.hits) / dq) : null;
  }
  return cur.queries > 0 ? unit(cur.hits / cur.queries) : null;
}

function unit(v: number): number {
  return Math.min(1, Math.max(0, v));
}
