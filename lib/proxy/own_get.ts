/**
 * One GET of the proxy's own to an engine — a health check, a metrics
 * scrape — through the tunnel's sender, the path traffic takes: with the
 * instance's token, on the proxy's own channels (never a client's), under a
 * timeout on the injected clock (so a FakeClock drives it), reading the
 * whole bounded body. Never throws: to a health or metrics loop every
 * failure means the same, so it comes back as a message naming the target.
 */
import type { Clock } from "../core/clock.ts";
import { errorText } from "../core/errors.ts";
import {
  type HeaderPairs,
  type Http1Request,
  type Http1Response,
  readAll,
} from "../http1/types.ts";

/** Sends one request to an instance (a tunnel's `request`, a backend's `send`). */
export type Sender = (req: Http1Request) => Promise<Http1Response>;

/** The proxy's own requests share channels among themselves, not with clients. */
export const OWN_AFFINITY = "vastproxy";

/** Inputs of `ownGet`. */
export interface OwnGetOptions {
  /** Instance token sent as `Authorization: Bearer`; null sends none. */
  token: string | null;
  /** `Accept` value. */
  accept: string;
  clock: Clock;
  timeoutMs: number;
  /** Largest body read. */
  maxBytes: number;
  /** Aborts it (the backend is closing); reported as a failure. */
  signal?: AbortSignal;
}

/** What `ownGet` found: the body of a 2xx answer, or why not. */
export type OwnGetResult =
  | { ok: true; body: Uint8Array }
  | { ok: false; error: string; status: number | null };

/** GETs `target` through `send`; see the module doc. */
export async function ownGet(
  send: Sender,
  target: string,
  opts: OwnGetOptions,
): Promise<OwnGetResult> {
  const request = new AbortController();
  // Cancelled in `finally`, leaving no pending sleep behind a finished request.
  const timer = new AbortController();
  let timedOut = false;
  const timeout = opts.clock.sleep(opts.timeoutMs, timer.signal).then(
    () => {
      timedOut = true;
      request.abort(new DOMException(`GET ${target} timed out`, "TimeoutError"));
    },
    () => {},
  );
  const onOuterAbort = () => request.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onOuterAbort();
  opts.signal?.addEventListener("abort", onOuterAbort, { once: true });
  const headers: HeaderPairs = [["accept", opts.accept]];
  if (opts.token) headers.push(["authorization", `Bearer ${opts.token}`]);
  try {
    const res = await send({
      method: "GET",
      target,
      headers,
      body: null,
      signal: request.signal,
      affinity: OWN_AFFINITY,
    });
    if (res.status < 200 || res.status > 299) {
      // Cancel rather than read: frees the channel without downloading a
      // possibly large error page.
      if (res.body instanceof ReadableStream) await res.body.cancel().catch(() => {});
      return { ok: false, error: `GET ${target} answered HTTP ${res.status}`, status: res.status };
    }
    return { ok: true, body: await readAll(res, opts.maxBytes) };
  } catch (err) {
    const error = timedOut
      ? `GET ${target} timed out after ${opts.timeoutMs} ms`
      : opts.signal?.aborted
      ? `GET ${target} aborted`
      : `GET ${target} failed: ${errorText(err)}`;
    return { ok: false, error, status: null };
  } finally {
    opts.signal?.removeEventListener("abort", onOuterAbort);
    timer.abort();
    await timeout;
  }
}
