/**
 * One active health check (DESIGN.md §6): `GET {baseUrl}/v1/models` with the
 * instance's Bearer token and a timeout; and one GPU read (§5). It is a plain function of its inputs
 * so the backend's loop, the tunnel's `verify` (checking a new path before the
 * direct upgrade) and tests all run the very same check.
 */
import type { Clock } from "../core/clock.ts";
import type { Tunnel } from "../tunnel/tunnel.ts";
import type { GpuResult } from "../core/gpu_metrics.ts";
import { errorText } from "../core/errors.ts";
import { type ModelList, parseModelList } from "./models.ts";

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
  /** Injected for tests; default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Aborts the probe (backend closing); reported as a failure. */
  signal?: AbortSignal;
}

/** Default active-check timeout (DESIGN.md §6). */
export const DEFAULT_HEALTH_TIMEOUT_MS = 5000;

/**
 * Probes `baseUrl`. Never throws: every failure (HTTP status, transport,
 * timeout, malformed JSON) becomes `{ ok: false, error }`, because to a health
 * loop they all mean the same thing.
 */
export async function probeModels(baseUrl: string, opts: ProbeOptions): Promise<ProbeResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  const doFetch = opts.fetch ?? fetch;
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

  const headers: Record<string, string> = { accept: "application/json" };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  try {
    const res = await doFetch(`${baseUrl}/v1/models`, { headers, signal: request.signal });
    if (!res.ok) {
      // Cancel rather than read: frees the connection without downloading a
      // possibly large error page.
      await res.body?.cancel().catch(() => {});
      return { ok: false, error: `GET /v1/models answered HTTP ${res.status}` };
    }
    let body: unknown;
    try {
      body = await res.json();
    } catch {
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
