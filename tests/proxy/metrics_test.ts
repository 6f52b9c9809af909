import assert from "node:assert/strict";
import { LatencyHistogram } from "../../lib/proxy/histogram.ts";
import { escapeLabelValue, renderMetrics } from "../../lib/proxy/metrics.ts";
import { ITL_BUCKETS_MS, TTFT_BUCKETS_MS } from "../../lib/proxy/llm_stats.ts";
import { backendSnapshot, statusSnapshot } from "../_helpers/fake_pool.ts";

Deno.test("LatencyHistogram.buckets() are cumulative with le-inclusive bounds", () => {
  const h = new LatencyHistogram([10, 100, 1000]);
  for (const v of [1, 10, 11, 100, 5000, -3]) h.observe(v);
  assert.deepEqual(h.buckets(), [[10, 3], [100, 5], [1000, 5]]);
  assert.equal(h.count, 6);
  assert.equal(h.sum, 1 + 10 + 11 + 100 + 5000);
  assert.deepEqual(h.data(), { buckets: h.buckets(), sum: h.sum, count: 6 });
});

Deno.test("LatencyHistogram.quantile() interpolates inside the bucket", () => {
  const h = new LatencyHistogram([100, 200]);
  assert.equal(h.quantile(0.5), null);
  for (let i = 0; i < 50; i++) h.observe(50);
  for (let i = 0; i < 50; i++) h.observe(150);
  assert.equal(h.quantile(0.5), 100);
  assert.equal(h.quantile(0.75), 150);
  assert.equal(h.quantile(0.99), 198);
  h.observe(10_000);
  assert.equal(h.quantile(1), 200, "beyond the last bound reports the last bound");
  assert.throws(() => new LatencyHistogram([5, 5]), RangeError);
});

Deno.test("escapeLabelValue() escapes backslash, quote and newline", () => {
  assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
});

Deno.test("renderMetrics() emits HELP/TYPE, per-instance series and GPU gauges", () => {
  const snap = statusSnapshot([
    backendSnapshot({
      id: 7,
      requests: 12,
      errors: 2,
      inFlight: 3,
      gpus: [
        {
          index: 0,
          name: "RTX 4090",
          utilization: 87,
          memoryUsed: 1024,
          memoryTotal: 24564,
          temperature: 65,
          powerDraw: null,
        },
      ],
    }),
    backendSnapshot({ id: 5, state: "draining" }),
  ]);
  snap.version = 'v"1\\x\n';
  const text = renderMetrics(snap);
  assert.ok(text.endsWith("\n"));
  const lines = text.split("\n");
  for (const name of ["vastproxy_requests_total", "vastproxy_errors_total"]) {
    assert.ok(lines.includes(`# TYPE ${name} counter`), name);
    assert.ok(lines.some((l) => l.startsWith(`# HELP ${name} `)), name);
  }
  for (
    const name of [
      "vastproxy_inflight",
      "vastproxy_backend_state",
      "vastproxy_backend_healthy",
      "vastproxy_gpu_utilization_percent",
      "vastproxy_gpu_memory_used_bytes",
      "vastproxy_gpu_memory_total_bytes",
      "vastproxy_gpu_temperature_celsius",
      "vastproxy_gpu_power_watts",
    ]
  ) assert.ok(lines.includes(`# TYPE ${name} gauge`), name);
  assert.ok(lines.includes("# TYPE vastproxy_request_duration_seconds histogram"));
  assert.ok(lines.includes('vastproxy_info{version="v\\"1\\\\x\\n",policy="least-inflight"} 1'));
  assert.ok(lines.includes('vastproxy_requests_total{instance="7"} 12'));
  assert.ok(lines.includes('vastproxy_errors_total{instance="7"} 2'));
  assert.ok(lines.includes('vastproxy_inflight{instance="7"} 3'));
  assert.ok(lines.includes('vastproxy_backend_state{instance="5",state="draining"} 1'));
  assert.ok(lines.includes('vastproxy_backend_state{instance="5",state="healthy"} 0'));
  assert.equal(lines.filter((l) => l.startsWith('vastproxy_backend_state{instance="7"')).length, 7);
  assert.ok(lines.includes('vastproxy_backend_healthy{instance="7"} 1'));
  assert.ok(lines.includes('vastproxy_backend_healthy{instance="5"} 0'));
  assert.ok(lines.includes('vastproxy_gpu_utilization_percent{instance="7",gpu="0"} 87'));
  assert.ok(
    lines.includes(`vastproxy_gpu_memory_used_bytes{instance="7",gpu="0"} ${1024 * 1024 * 1024}`),
  );
  assert.ok(lines.includes('vastproxy_gpu_temperature_celsius{instance="7",gpu="0"} 65'));
  assert.ok(
    !lines.some((l) => l.startsWith("vastproxy_gpu_power_watts{")),
    "null power is skipped",
  );
  // Instances appear in id order; every sample line parses as name{labels} value.
  assert.ok(
    text.indexOf('requests_total{instance="5"}') < text.indexOf('requests_total{instance="7"}'),
  );
  const samples = lines.filter((l) => l && !l.startsWith("#"));
  assert.ok(samples.length > 10, `${samples.length} sample lines`);
  for (const l of samples) {
    assert.match(l, /^[a-z_]+(\{([a-z_]+="([^"\\\n]|\\.)*",?)*\})? -?[0-9.e+]+$|Inf$|NaN$/, l);
  }
});

Deno.test("renderMetrics() histograms are cumulative in seconds and end with +Inf = count", () => {
  const h = new LatencyHistogram([100, 1000]);
  for (const v of [50, 500, 500, 5000]) h.observe(v);
  const snap = statusSnapshot([backendSnapshot({ id: 9 })]);
  const text = renderMetrics(snap, new Map([[9, h]]));
  const series = text.split("\n").filter((l) => l.startsWith("vastproxy_request_duration_seconds"));
  assert.deepEqual(series, [
    'vastproxy_request_duration_seconds_bucket{instance="9",le="0.1"} 1',
    'vastproxy_request_duration_seconds_bucket{instance="9",le="1"} 3',
    'vastproxy_request_duration_seconds_bucket{instance="9",le="+Inf"} 4',
    'vastproxy_request_duration_seconds_sum{instance="9"} 6.05',
    'vastproxy_request_duration_seconds_count{instance="9"} 4',
  ]);
  // Exported data renders the same as the live histogram.
  assert.equal(renderMetrics(snap, new Map([[9, h.data()]])), text);
  // A recorder without buckets still yields +Inf, sum and count.
  const bare = renderMetrics(snap, new Map([[9, { sum: 2000, count: 1 }]]));
  assert.match(bare, /_bucket\{instance="9",le="\+Inf"\} 1\n.*_sum\{instance="9"\} 2\n/);
});

Deno.test("LatencyHistogram.merge() adds another histogram's buckets; bounds must match", () => {
  const a = new LatencyHistogram([10, 100]);
  const b = new LatencyHistogram([10, 100]);
  a.observe(5);
  for (const v of [7, 50, 500]) b.observe(v);
  a.merge(b.data());
  assert.deepEqual(a.data(), { buckets: [[10, 2], [100, 3]], sum: 562, count: 4 });
  assert.throws(() => a.merge(new LatencyHistogram([10]).data()), RangeError);
});

Deno.test("renderMetrics() emits engine gauges, TTFT/ITL histograms and token counters", () => {
  const snap = statusSnapshot([
    backendSnapshot({
      id: 7,
      engineLoad: { running: 3, waiting: 1, kvCacheUsage: 0.25, prefixHitRate: null, stale: true },
    }),
    backendSnapshot({ id: 8, engineLoad: null }),
  ]);
  const ttft = new LatencyHistogram(TTFT_BUCKETS_MS);
  ttft.observe(120);
  const itl = new LatencyHistogram(ITL_BUCKETS_MS);
  const llm = new Map([[
    7,
    new Map([['q"wen', { ttft: ttft.data(), itl: itl.data(), outputTokens: 42 }]]),
  ]]);
  const lines = renderMetrics(snap, new Map(), llm).split("\n");
  for (
    const l of [
      'vastproxy_engine_requests_running{instance="7"} 3',
      'vastproxy_engine_requests_waiting{instance="7"} 1',
      'vastproxy_engine_kv_cache_usage_ratio{instance="7"} 0.25',
      'vastproxy_engine_metrics_stale{instance="7"} 1',
      "# TYPE vastproxy_ttft_seconds histogram",
      'vastproxy_ttft_seconds_bucket{instance="7",model="q\\"wen",le="0.25"} 1',
      'vastproxy_ttft_seconds_bucket{instance="7",model="q\\"wen",le="+Inf"} 1',
      'vastproxy_ttft_seconds_sum{instance="7",model="q\\"wen"} 0.12',
      'vastproxy_itl_seconds_count{instance="7",model="q\\"wen"} 0',
      "# TYPE vastproxy_output_tokens_total counter",
      'vastproxy_output_tokens_total{instance="7",model="q\\"wen"} 42',
    ]
  ) assert.ok(lines.includes(l), l);
  assert.ok(!lines.some((l) => l.includes("prefix_cache_hit_ratio{")), "null is not a 0");
  assert.ok(!lines.some((l) => l.includes('instance="8"') && l.includes("engine_")));
});
