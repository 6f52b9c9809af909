/**
 * One active health check (DESIGN.md §6): `GET /v1/models` through the tunnel, with the
 * instance's Bearer token and a timeout; and one GPU read (§5). It is a plain function of its inputs
 * so the backend's loop, the tunnel's `verify` (checking a new path before the
 * direct upgrade) and tests all run the very same check.
 */
import type { Clock } from "../core/clock.ts";
import {
  type HeaderPairs,
  type Http1Request,
  type Http1Response,
  readAll,
} from "../http1/types.ts";
import type { Tunnel } from "../tunnel/tunnel.ts";
import type { GpuResult } from "../core/gpu_metrics.ts";
import { errorText } from "../core/errors.ts";
import { type ModelList, parseModelList } from "./models.ts";

/** Sends one request to an instance (a tunnel's `request`, a backend's `send`). */
export type Sender = (req: Http1Request) => Promise<Http1Response>;

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
/** Probes and other requests of the proxy's own share channels among themselves, not with clients. */
export const OWN_AFFINITY = "vastproxy";
const decoder = new TextDecoder();

/**
 * Probes the engine behind `send` (a tunnel's or a backend's sender, so the
 * check travels the same channels as traffic). Never throws: every failure
 * (HTTP status, transport, timeout, malformed JSON) becomes
 * `{ ok: false, error }`, because to a health loop they all mean the same.
 */
export async function probeModels(send: Sender, opts: ProbeOptions): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  const request = new AbortController();
  // The timer runs on the injected clock (so FakeClock drives it) and is
  // cancelled in `finally`, leaving no pending sleep behind a finished probe.
  const timer = new AbortController();
  let timedOut = false;
  const timeout = opts.clock.sleep(timeoutMs, timer.signal).then(
    () => {
      timedOut = true;
      request.abort(new DOMException("health check timed out", "TimeoutError"));
    },
    () => {},
  );
  const onOuterAbort = () => request.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onOuterAbort();
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });

  const headers: HeaderPairs = [["accept", "application/json"]];
  if (opts.token) headers.push(["authorization", `Bearer ${opts.token}`]);
  try {
    const res = await send({
      method: "GET",
      target: "/v1/models",
      headers,
      body: null,
      signal: request.signal,
      affinity: OWN_AFFINITY,
    });
    if (res.status < 200 || res.status > 299) {
      // Cancel rather than read: frees the channel without downloading a
      // possibly large error page.
      await res.body?.cancel().catch(() => {});
      return { ok: false, error: `GET /v1/models answered HTTP ${res.status}` };
    }
    let body: unknown;
    try {
      body = JSON.parse(decoder.decode(await readAll(res, MAX_MODELS_BODY)));
    } catch (err) {
      if (request.signal.aborted) throw err;
      return { ok: false, error: "GET /v1/models returned invalid JSON" };
    }
    const list = parseModelList(body);
    if (!list) return { ok: false, error: "GET /v1/models returned no `data` list" };
    return { ok: true, ...list };
  } catch (err) {
    if (timedOut) return { ok: false, error: `GET /v1/models timed out after ${timeoutMs} ms` };
    if (opts.signal?.aborted) return { ok: false, error: "health check aborted" };
    return { ok: false, error: `GET /v1/models failed: ${errorText(err)}` };
  } finally {
    opts.signal?.removeEventListener("abort", onOuterAbort);
    timer.abort();
    await timeout;
  }
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
