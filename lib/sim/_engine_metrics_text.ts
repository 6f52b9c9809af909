/**
 * The fake engine's `/metrics` body, in each engine's own format: vLLM and
 * SGLang as prometheus_client prints them (HELP/TYPE, `model_name` label,
 * floats as `3.0`), llama.cpp's unlabelled writer. Only the families the
 * proxy reads, plus one histogram it must skip.
 */
import type { FakeEngineKind } from "./fake_engine.ts";

/** What the fake engine knows about its own load. */
export interface FakeLoad {
  model: string;
  running: number;
  waiting: number;
  /** 0..1 */
  kvCacheUsage: number;
  /** Cumulative prefix-cache counters, in tokens. */
  prefixQueries: number;
  prefixHits: number;
}

/** The metrics text `kind` would serve for `load`. */
export function engineMetricsText(kind: FakeEngineKind, load: FakeLoad): string {
  const py = (v: number) => Number.isInteger(v) ? `${v}.0` : String(v);
  const lines: string[] = [];
  const family = (name: string, type: string, help: string, value: string, labels = "") => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${labels} ${value}`);
  };
  const model = `{model_name="${load.model.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"}`;
  if (kind === "vllm") {
    const l = `{engine="0",${model.slice(1)}`;
    family(
      "vllm:num_requests_running",
      "gauge",
      "Number of requests in model execution batches.",
      py(load.running),
      l,
    );
    family(
      "vllm:num_requests_waiting",
      "gauge",
      "Number of requests waiting to be processed.",
      py(load.waiting),
      l,
    );
    family(
      "vllm:kv_cache_usage_perc",
      "gauge",
      "KV-cache usage. 1 means 100 percent usage.",
      py(load.kvCacheUsage),
      l,
    );
    family(
      "vllm:prefix_cache_queries_total",
      "counter",
      "Prefix cache queries, in terms of number of queried tokens.",
      py(load.prefixQueries),
      l,
    );
    family(
      "vllm:prefix_cache_hits_total",
      "counter",
      "Prefix cache hits, in terms of number of cached tokens.",
      py(load.prefixHits),
      l,
    );
    lines.push(
      "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.",
      "# TYPE vllm:time_to_first_token_seconds histogram",
      `vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",${model.slice(1)} 0.0`,
      `vllm:time_to_first_token_seconds_count${l} 0.0`,
      `vllm:time_to_first_token_seconds_sum${l} 0.0`,
    );
  } else if (kind === "sglang") {
    family(
      "sglang:num_running_reqs",
      "gauge",
      "The number of running requests.",
      py(load.running),
      model,
    );
    family(
      "sglang:num_queue_reqs",
      "gauge",
      "The number of requests in the waiting queue.",
      py(load.waiting),
      model,
    );
    family("sglang:token_usage", "gauge", "The token usage.", py(load.kvCacheUsage), model);
    const rate = load.prefixQueries > 0 ? load.prefixHits / load.prefixQueries : 0;
    family("sglang:cache_hit_rate", "gauge", "The prefix cache hit rate.", py(rate), model);
  } else {
    family(
      "llamacpp:kv_cache_usage_ratio",
      "gauge",
      "KV-cache usage. 1 means 100 percent usage.",
      String(load.kvCacheUsage),
    );
    family(
      "llamacpp:requests_processing",
      "gauge",
      "Number of request processing.",
      String(load.running),
    );
    family(
      "llamacpp:requests_deferred",
      "gauge",
      "Number of request deferred.",
      String(load.waiting),
    );
  }
  return lines.join("\n") + "\n";
}
