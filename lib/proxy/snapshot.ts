/**
 * Read-only views of the proxy's state. `Backend.snapshot()` and
 * `Fleet.snapshot()` produce these frozen values; /vastproxy/status serves
 * them as JSON, and the UI and `vastproxy status` render them.
 */
import type { Engine, SshPath } from "../core/backend_spec.ts";
import type { GpuMetrics } from "../core/gpu_metrics.ts";
import type { EngineLoad } from "./engine_metrics.ts";
import type { LlmSnapshot } from "./llm_stats.ts";

/** Backend lifecycle states (DESIGN.md §6). */
export type BackendState =
  | "discovered"
  | "connecting"
  | "healthy"
  | "unhealthy"
  | "draining"
  | "hostkey-mismatch"
  | "removed";

/** One backend as the outside sees it. Field names are the /vastproxy/status JSON contract. */
export type { GpuMetrics } from "../core/gpu_metrics.ts";

/** One backend as the outside sees it. Field names are the /vastproxy/status JSON contract. */
export interface BackendSnapshot {
  id: number;
  name: string;
  state: BackendState;
  /** Epoch ms when `state` began. */
  stateSince: number;
  /** Why it is in this state (no secrets), or null. */
  reason: string | null;
  /** vast's own status (`running`, `loading`, …). */
  vastStatus: string;
  ssh: SshPath | null;
  /** `host:port` of the SSH endpoint in use. */
  endpoint: string | null;
  engine: Engine;
  models: string[];
  /**
   * `max_model_len` of each model as this instance's engine reports it
   * (models without one are absent). `/v1/models` answers the smallest across
   * instances; this shows each. Optional: older proxies do not send it.
   */
  maxModelLen?: Record<string, number>;
  port: number;
  gpuLabel: string;
  inFlight: number;
  requests: number;
  errors: number;
  latencyMs: { p50: number | null; p99: number | null };
  gpus: GpuMetrics[];
  /** True when the last nvidia-smi run failed or is old. */
  gpuStale: boolean;
  /**
   * The engine's own load from its `/metrics` (issue #15), `stale` when the
   * last scrape failed; null before one worked. (`engine` already names the
   * engine kind.) Optional: older proxies do not send it.
   */
  engineLoad?: (EngineLoad & { stale: boolean }) | null;
  /** TTFT, ITL, tokens/s and output tokens the proxy measured. Optional as above. */
  llm?: LlmSnapshot;
  dph: number | null;
  /** True when `x` (manual drain) was toggled on. */
  drained: boolean;
}

/** The whole proxy as the outside sees it. */
export interface StatusSnapshot {
  version: string;
  listen: string;
  policy: string;
  /** Epoch ms of the snapshot. */
  time: number;
  startedAt: number;
  counts: { total: number; healthy: number; inFlight: number; requests: number; errors: number };
  /** Sum of $/h over instances shown. */
  dph: number;
  /** Last vast API problem, or null while polls succeed. */
  apiError: string | null;
  backends: BackendSnapshot[];
  /**
   * Client-connection limits of the listener. Optional: older proxies, and
   * snapshots built without a listener, do not have it.
   */
  limits?: ListenerLimits;
  /** The admission queue, when the policy holds requests while every backend is saturated. */
  queue?: QueueStatus;
}

/** The admission queue's numbers for status and the live header. */
export interface QueueStatus {
  /** Requests waiting now. */
  depth: number;
  /** Requests turned away because the queue was full. */
  rejected: number;
  /** Held requests that passed their deadline. */
  timedOut: number;
}

/** The listener's view of client connections and descriptors. */
export interface ListenerLimits {
  /** Soft open-file limit (RLIMIT_NOFILE) in force, or null when unknown. */
  openFiles: number | null;
  /** Client connections open now. */
  connections: number;
  /** Open client connections before new ones get 503. */
  maxConnections: number;
}
