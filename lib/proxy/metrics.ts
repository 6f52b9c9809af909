/**
 * /vastproxy/metrics: Prometheus text exposition format 0.0.4, rendered from
 * a StatusSnapshot plus each backend's latency histogram. Every series is
 * labelled by `instance` (the vast.ai instance id), so dashboards can join
 * them with vast's own billing data.
 */
import type { HistogramData } from "./histogram.ts";
import type { LlmModelData } from "./llm_stats.ts";
import type { BackendState, StatusSnapshot } from "./snapshot.ts";

/** Content type of the exposition format served by this module. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * A histogram as metrics accepts it: exported data, or a live
 * `LatencyHistogram` (anything with `buckets()`, `sum`, `count`). A recorder
 * without buckets still yields `_sum`, `_count` and the `+Inf` bucket.
 */
export type HistogramInput =
  | HistogramData
  | {
    buckets?: () => [number, number][];
    readonly sum: number;
    readonly count: number;
  };

const STATES: readonly BackendState[] = [
  "discovered",
  "connecting",
  "healthy",
  "unhealthy",
  "draining",
  "hostkey-mismatch",
  "removed",
];

const MIB = 1024 * 1024;

/** Escapes a label value: backslash, double quote and newline, per the format spec. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Formats a sample value the way Prometheus parses it (`+Inf`, `NaN`). */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function labels(pairs: Record<string, string | number>): string {
  const body = Object.entries(pairs)
    .map(([k, v]) => `${k}="${escapeLabelValue(String(v))}"`)
    .join(",");
  return body ? `{${body}}` : "";
}

/** Collects one metric family; families with no samples still print HELP/TYPE. */
class Family {
  readonly #lines: string[];

  constructor(name: string, type: "counter" | "gauge" | "histogram", help: string) {
    // HELP text escapes backslash and newline only.
    const h = help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
    this.#lines = [`# HELP ${name} ${h}`, `# TYPE ${name} ${type}`];
  }

  sample(name: string, pairs: Record<string, string | number>, value: number): void {
    this.#lines.push(`${name}${labels(pairs)} ${formatValue(value)}`);
  }

  text(): string {
    return this.#lines.join("\n");
  }
}

function histogramData(h: HistogramInput): HistogramData {
  const b = (h as { buckets?: unknown }).buckets;
  const buckets = typeof b === "function"
    ? (b as () => [number, number][]).call(h)
    : Array.isArray(b)
    ? (b as [number, number][])
    : [];
  return { buckets, sum: h.sum, count: h.count };
}

/** Adds one histogram's `_bucket`, `_sum` and `_count` samples, ms converted to seconds. */
function histogramSamples(
  family: Family,
  name: string,
  pairs: Record<string, string | number>,
  data: HistogramData,
): void {
  for (const [le, count] of data.buckets) {
    family.sample(`${name}_bucket`, { ...pairs, le: formatValue(le / 1000) }, count);
  }
  // The +Inf bucket is by definition every observation.
  family.sample(`${name}_bucket`, { ...pairs, le: "+Inf" }, data.count);
  family.sample(`${name}_sum`, pairs, data.sum / 1000);
  family.sample(`${name}_count`, pairs, data.count);
}

/** LLM metrics per instance id, then per model label (bounded by the backend). */
export type LlmInput = ReadonlyMap<number, ReadonlyMap<string, LlmModelData>>;

/** The admission queue's numbers (admission.ts), when the policy has one. */
export interface QueueMetrics {
  /** Requests held now. */
  depth: number;
  /** Requests turned away because the queue was full. */
  rejected: number;
  /** Held requests that passed the deadline. */
  timedOut: number;
  /** Time each held request waited, ms. */
  waits: HistogramInput;
}

/**
 * Renders the metrics text. `histograms` maps instance id to its latency
 * histogram in ms (converted to seconds here, Prometheus' base unit); `llm`
 * holds each instance's TTFT, ITL and token counts per model; `queue` adds
 * the admission queue's series.
 */
export function renderMetrics(
  status: StatusSnapshot,
  histograms: ReadonlyMap<number, HistogramInput> = new Map(),
  llm: LlmInput = new Map(),
  queue?: QueueMetrics,
): string {
  const info = new Family("vastproxy_info", "gauge", "Proxy version and routing policy.");
  info.sample("vastproxy_info", { version: status.version, policy: status.policy }, 1);

  const requests = new Family(
    "vastproxy_requests_total",
    "counter",
    "Requests relayed to each instance.",
  );
  const errors = new Family(
    "vastproxy_errors_total",
    "counter",
    "Relayed requests that ended in an error, per instance.",
  );
  const inflight = new Family("vastproxy_inflight", "gauge", "Requests in flight per instance.");
  const state = new Family(
    "vastproxy_backend_state",
    "gauge",
    "Backend lifecycle state: 1 for the current state, 0 for the others.",
  );
  const healthy = new Family(
    "vastproxy_backend_healthy",
    "gauge",
    "1 when the backend is healthy, else 0.",
  );
  const duration = new Family(
    "vastproxy_request_duration_seconds",
    "histogram",
    "Time from dispatch to the end of the response body, per instance.",
  );
  const gpuUtil = new Family("vastproxy_gpu_utilization_percent", "gauge", "GPU utilization.");
  const gpuUsed = new Family("vastproxy_gpu_memory_used_bytes", "gauge", "GPU memory in use.");
  const gpuTotal = new Family("vastproxy_gpu_memory_total_bytes", "gauge", "GPU memory size.");
  const gpuTemp = new Family("vastproxy_gpu_temperature_celsius", "gauge", "GPU temperature.");
  const gpuPower = new Family("vastproxy_gpu_power_watts", "gauge", "GPU power draw.");
  const running = new Family(
    "vastproxy_engine_requests_running",
    "gauge",
    "Requests the engine reports running (its own /metrics).",
  );
  const waiting = new Family(
    "vastproxy_engine_requests_waiting",
    "gauge",
    "Requests the engine reports queued (its own /metrics).",
  );
  const kv = new Family(
    "vastproxy_engine_kv_cache_usage_ratio",
    "gauge",
    "KV-cache usage the engine reports, 0..1.",
  );
  const prefix = new Family(
    "vastproxy_engine_prefix_cache_hit_ratio",
    "gauge",
    "Prefix-cache hit rate the engine reports, 0..1 (over the last scrape interval when it exports counters).",
  );
  const stale = new Family(
    "vastproxy_engine_metrics_stale",
    "gauge",
    "1 when the engine gauges are from an older scrape (the last one failed).",
  );
  const ttft = new Family(
    "vastproxy_ttft_seconds",
    "histogram",
    "Time from dispatch to the first streamed token, per instance and model.",
  );
  const itl = new Family(
    "vastproxy_itl_seconds",
    "histogram",
    "Time between streamed token events, per instance and model.",
  );
  const tokens = new Family(
    "vastproxy_output_tokens_total",
    "counter",
    "Output tokens relayed (usage.completion_tokens, else token events), per instance and model.",
  );

  for (const b of [...status.backends].sort((x, y) => x.id - y.id)) {
    const instance = { instance: b.id };
    requests.sample("vastproxy_requests_total", instance, b.requests);
    errors.sample("vastproxy_errors_total", instance, b.errors);
    inflight.sample("vastproxy_inflight", instance, b.inFlight);
    for (const s of STATES) {
      state.sample("vastproxy_backend_state", { ...instance, state: s }, s === b.state ? 1 : 0);
    }
    healthy.sample("vastproxy_backend_healthy", instance, b.state === "healthy" ? 1 : 0);

    const h = histograms.get(b.id);
    if (h) {
      histogramSamples(duration, "vastproxy_request_duration_seconds", instance, histogramData(h));
    }

    // Engine gauges skip what the engine does not report rather than invent a 0.
    const e = b.engineLoad;
    if (e) {
      if (e.running !== null) {
        running.sample("vastproxy_engine_requests_running", instance, e.running);
      }
      if (e.waiting !== null) {
        waiting.sample("vastproxy_engine_requests_waiting", instance, e.waiting);
      }
      if (e.kvCacheUsage !== null) {
        kv.sample("vastproxy_engine_kv_cache_usage_ratio", instance, e.kvCacheUsage);
      }
      if (e.prefixHitRate !== null) {
        prefix.sample("vastproxy_engine_prefix_cache_hit_ratio", instance, e.prefixHitRate);
      }
      stale.sample("vastproxy_engine_metrics_stale", instance, e.stale ? 1 : 0);
    }
    const models = [...(llm.get(b.id) ?? new Map<string, LlmModelData>())].sort(([x], [y]) =>
      x < y ? -1 : x > y ? 1 : 0
    );
    for (const [model, m] of models) {
      const l = { ...instance, model };
      histogramSamples(ttft, "vastproxy_ttft_seconds", l, m.ttft);
      histogramSamples(itl, "vastproxy_itl_seconds", l, m.itl);
      tokens.sample("vastproxy_output_tokens_total", l, m.outputTokens);
    }

    // GPU gauges skip what the driver reported as [N/A] rather than invent a 0.
    for (const g of b.gpus) {
      const l = { ...instance, gpu: g.index };
      if (g.utilization !== null) {
        gpuUtil.sample("vastproxy_gpu_utilization_percent", l, g.utilization);
      }
      if (g.memoryUsed !== null) {
        gpuUsed.sample("vastproxy_gpu_memory_used_bytes", l, g.memoryUsed * MIB);
      }
      if (g.memoryTotal !== null) {
        gpuTotal.sample("vastproxy_gpu_memory_total_bytes", l, g.memoryTotal * MIB);
      }
      if (g.temperature !== null) {
        gpuTemp.sample("vastproxy_gpu_temperature_celsius", l, g.temperature);
      }
      if (g.powerDraw !== null) gpuPower.sample("vastproxy_gpu_power_watts", l, g.powerDraw);
    }
  }

  const families = [
    info,
    requests,
    errors,
    duration,
    inflight,
    state,
    healthy,
    gpuUtil,
    gpuUsed,
    gpuTotal,
    gpuTemp,
    gpuPower,
    running,
    waiting,
    kv,
    prefix,
    stale,
    ttft,
    itl,
    tokens,
  ];
  if (queue) families.push(...queueFamilies(queue));
  return families.map((f) => f.text()).join("\n") + "\n";
}

function queueFamilies(q: QueueMetrics): Family[] {
  const depth = new Family(
    "vastproxy_queue_depth",
    "gauge",
    "Requests held in the proxy because every eligible backend is saturated.",
  );
  depth.sample("vastproxy_queue_depth", {}, q.depth);
  const rejected = new Family(
    "vastproxy_queue_rejected_total",
    "counter",
    "Requests answered 503 because the admission queue was full or their wait passed the deadline.",
  );
  rejected.sample("vastproxy_queue_rejected_total", { reason: "full" }, q.rejected);
  rejected.sample("vastproxy_queue_rejected_total", { reason: "timeout" }, q.timedOut);
  const wait = new Family(
    "vastproxy_queue_wait_seconds",
    "histogram",
    "Time requests were held in the admission queue.",
  );
  const data = histogramData(q.waits);
  const name = "vastproxy_queue_wait_seconds";
  for (const [le, count] of data.buckets) {
    wait.sample(`${name}_bucket`, { le: formatValue(le / 1000) }, count);
  }
  wait.sample(`${name}_bucket`, { le: "+Inf" }, data.count);
  wait.sample(`${name}_sum`, {}, data.sum / 1000);
  wait.sample(`${name}_count`, {}, data.count);
  return [depth, rejected, wait];
}
