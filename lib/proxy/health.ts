/**
 * One active health check (DESIGN.md §6): `GET /v1/models` through the tunnel, with the
 * instance's Bearer token and a timeout; and one GPU read (§5). It is a plain function of its inputs
 * so the backend's loop, the tunnel's `verify` (checking a new path before the
 * direct upgrade) and tests all run the very same check.
 */
import type { Clock } from "../core/clock.ts";
import type { Tunnel } from "../tunnel/tunnel.ts";
import type { GpuResult } from "../core/gpu_metrics.ts";
import { errorText } from "../core/errors.ts";
import { type ModelList, parseModelList } from "./models.ts";
import { ownGet, type Sender } from "./own_get.ts";

export { OWN_AFFINITY, type Sender } from "./own_get.ts";

/** What one probe found. `error` is safe to show and log (no token, no body). */
export type ProbeResult =
  | ({ ok: true } & ModelList)
  | { ok: false; error: string };

/** Inputs of `probeModels()`. */
export interface ProbeOptions {
  /** Instance token sent as `Authorization: Bearer`; null sends none. */
  token: string | null;
  /** Timer source for the timeout. */
  clock: Clock;
  /** Gives up after this long (default 5000 ms, §6). */
  timeoutMs?: number;
  /** Aborts the probe (backend closing); reported as a failure. */
  signal?: AbortSignal;
}

/** Default active-check timeout (DESIGN.md §6). */
export const DEFAULT_HEALTH_TIMEOUT_MS = 5000;
/** Largest `/v1/models` body read; a model list is a few KiB. */
const MAX_MODELS_BODY = 8 * 1024 * 1024;
const decoder = new TextDecoder();

/**
 * Probes the engine behind `send` (a tunnel's or a backend's sender, so the
 * check travels the same channels as traffic). Never throws: every failure
 * (HTTP status, transport, timeout, malformed JSON) becomes
 * `{ ok: false, error }`, because to a health loop they all mean the same.
 */
export async function probeModels(send: Sender, opts: ProbeOptions): Promise<ProbeResult> {
  const got = await ownGet(send, "/v1/models", {
    token: opts.token,
    accept: "application/json",
    clock: opts.clock,
    timeoutMs: opts.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS,
    maxBytes: MAX_MODELS_BODY,
    signal: opts.signal,
  });
  if (!got.ok) return { ok: false, error: got.error };
  let body: unknown;
  try {
    body = JSON.parse(decoder.decode(got.body));
  } catch {
    return { ok: false, error: "GET /v1/models returned invalid JSON" };
  }
  const list = parseModelList(body);
  if (!list) return { ok: false, error: "GET /v1/models returned no `data` list" };
  return { ok: true, ...list };
}

export type { GpuResult } from "../core/gpu_metrics.ts";

/** Reads GPU metrics over a tunnel; `queryGpus` from lib/tunnel/gpu.ts fits. */
export type GpuProbe = (tunnel: Tunnel, opts: { timeoutMs: number }) => Promise<GpuResult>;

/** Runs `probe`, turning a throw into a failed result so callers handle one shape. */
export async function readGpus(
  probe: GpuProbe,
  tunnel: Tunnel,
  timeoutMs: number,
): Promise<GpuResult> {
  try {
    return await probe(tunnel, { timeoutMs });
  } catch (err) {
    return { ok: false, error: errorText(err) };
  }
}
