import assert from "node:assert/strict";
import {
  EngineMetricsError,
  MAX_METRICS_BYTES,
  MAX_METRICS_SERIES,
  parseEngineMetrics,
  readEngineMetrics,
} from "../../lib/proxy/engine_metrics.ts";

// Written after what each engine prints (prometheus_client for vLLM and
// SGLang, llama.cpp's own writer): HELP/TYPE lines, labels, `_created`
// series, histograms we must skip, NaN and +Inf.

/** vLLM V1 (0.10+), two data-parallel engines. */
const VLLM_V1 = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 3.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-8B"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 1.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-8B"} 0.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.41
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-8B"} 0.27
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="Qwen/Qwen3-8B"} 1.5e+06
vllm:prefix_cache_queries_total{engine="1",model_name="Qwen/Qwen3-8B"} 500000.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="Qwen/Qwen3-8B"} 1.7325e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="Qwen/Qwen3-8B"} 900000.0
vllm:prefix_cache_hits_total{engine="1",model_name="Qwen/Qwen3-8B"} 100000.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="Qwen/Qwen3-8B"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen3-8B"} 812.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="Qwen/Qwen3-8B"} 812.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="Qwen/Qwen3-8B"} 97.3
`;

/** vLLM V0 (0.6): the gauge names, no counters. */
const VLLM_V0 = `# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-2-7b-hf"} 4.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="meta-llama/Llama-2-7b-hf"} 0.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-2-7b-hf"} 7.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-2-7b-hf"} 0.9
# HELP vllm:gpu_prefix_cache_hit_rate GPU prefix cache block hit rate.
# TYPE vllm:gpu_prefix_cache_hit_rate gauge
vllm:gpu_prefix_cache_hit_rate{model_name="meta-llama/Llama-2-7b-hf"} -1.0
`;

const SGLANG = `# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
# HELP sglang:cache_hit_rate The prefix cache hit rate.
# TYPE sglang:cache_hit_rate gauge
sglang:cache_hit_rate{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.007507552643049313
# HELP sglang:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE sglang:time_to_first_token_seconds histogram
sglang:time_to_first_token_seconds_bucket{le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
sglang:time_to_first_token_seconds_bucket{le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 11008.0
`;

/** llama.cpp `--metrics`: no labels, no trailing newline after the last sample. */
const LLAMACPP = `# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 1024
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.125
# HELP llamacpp:requests_processing Number of request processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of request deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 5`;

Deno.test("parseEngineMetrics() reads vLLM V1: sums ranks, fullest cache, cumulative hit rate", () => {
  assert.deepEqual(parseEngineMetrics("vllm", VLLM_V1), {
    running: 5,
    waiting: 1,
    kvCacheUsage: 0.41,
    prefixHitRate: 0.5, // (900k + 100k) / (1.5M + 0.5M)
  });
});

Deno.test("readEngineMetrics() gives the prefix hit rate over the interval from counters", () => {
  const first = readEngineMetrics("vllm", VLLM_V1, null);
  assert.deepEqual(first.counters, { queries: 2_000_000, hits: 1_000_000 });
  const later = VLLM_V1
    .replace('engine="0",model_name="Qwen/Qwen3-8B"} 1.5e+06', 'engine="0",model_name="x"} 1.6e+06')
    .replace("} 900000.0", "} 990000.0");
  const next = readEngineMetrics("vllm", later, first.counters);
  assert.equal(next.load.prefixHitRate, 0.9); // 90k hits over 100k queries
  // No queries in the interval: nothing to say.
  assert.equal(readEngineMetrics("vllm", later, next.counters).load.prefixHitRate, null);
  // Counters went down (engine restarted): cumulative again.
  const restarted = readEngineMetrics("vllm", VLLM_V1, next.counters);
  assert.equal(restarted.load.prefixHitRate, 0.5);
});

Deno.test("parseEngineMetrics() reads vLLM V0 gauges and treats the -1 hit rate as no data", () => {
  assert.deepEqual(parseEngineMetrics("vllm", VLLM_V0), {
    running: 4,
    waiting: 7,
    kvCacheUsage: 0.9,
    prefixHitRate: null,
  });
});

Deno.test("parseEngineMetrics() reads SGLang", () => {
  assert.deepEqual(parseEngineMetrics("sglang", SGLANG), {
    running: 12,
    waiting: 3,
    kvCacheUsage: 0.28,
    prefixHitRate: 0.007507552643049313,
  });
});

Deno.test("parseEngineMetrics() reads llama.cpp, including a last line without newline", () => {
  assert.deepEqual(parseEngineMetrics("llama.cpp", LLAMACPP), {
    running: 2,
    waiting: 5,
    kvCacheUsage: 0.125,
    prefixHitRate: null,
  });
});

Deno.test("parseEngineMetrics() with engine unknown finds the naming that matches", () => {
  assert.equal(parseEngineMetrics("unknown", SGLANG).running, 12);
  assert.equal(parseEngineMetrics("unknown", LLAMACPP).waiting, 5);
  assert.deepEqual(parseEngineMetrics("unknown", "# nothing here\nfoo 1\n"), {
    running: null,
    waiting: null,
    kvCacheUsage: null,
    prefixHitRate: null,
  });
});

Deno.test("parseEngineMetrics() skips NaN and +Inf samples, null when nothing finite is left", () => {
  const text = `vllm:num_requests_running{engine="0"} NaN
vllm:num_requests_running{engine="1"} 2
vllm:num_requests_waiting +Inf
vllm:kv_cache_usage_perc{model_name="a"} 1.7
vllm:gpu_cache_usage_perc{model_name="a"} 0.5
`;
  assert.deepEqual(parseEngineMetrics("vllm", text), {
    running: 2,
    waiting: null,
    kvCacheUsage: 1, // newest name wins, clamped to 0..1
    prefixHitRate: null,
  });
});

Deno.test("parseEngineMetrics() ignores malformed lines of other families, refuses its own", () => {
  const other = 'garbage{{{ line\nvllm:num_requests_running{model_name="a"} 1\n';
  assert.equal(parseEngineMetrics("vllm", other).running, 1);
  assert.throws(
    () => parseEngineMetrics("vllm", 'vllm:num_requests_running{model_name="a" x} 1\n'),
    EngineMetricsError,
  );
  // Label values with escapes and CRLF line ends still parse.
  const crlf = 'vllm:num_requests_running{model_name="a\\"b\\\\c"} 3\r\n';
  assert.equal(parseEngineMetrics("vllm", crlf).running, 3);
});

Deno.test("parseEngineMetrics() bounds input size and series count", () => {
  assert.throws(
    () => parseEngineMetrics("vllm", "#".repeat(MAX_METRICS_BYTES + 1)),
    /over 4194304 bytes/,
  );
  const many = Array.from(
    { length: MAX_METRICS_SERIES + 1 },
    (_, i) => `vllm:num_requests_running{model_name="m${i}"} 1`,
  ).join("\n");
  assert.throws(() => parseEngineMetrics("vllm", many), /over 10000 series/);
  // Unrelated families do not count against the bound.
  const unrelated = Array.from({ length: MAX_METRICS_SERIES + 1 }, (_, i) => `other{i="${i}"} 1`)
    .join("\n");
  assert.equal(parseEngineMetrics("vllm", unrelated).running, null);
});
