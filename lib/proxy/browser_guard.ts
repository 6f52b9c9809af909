/**
 * What stands between web browsers and the relay: the `Host` check
 * (DNS rebinding, host_check.ts) and the CORS policy (cors.ts), wrapped
 * around the relay's handler once, in the composition root.
 *
 * Order, per request:
 * 1. Without `--auth-token`, a `Host` that is not allowed gets 403.
 * 2. A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
 *    is answered here, before authentication (browsers never send
 *    credentials on preflights): 204 with the policy's headers, or 403.
 * 3. A request whose `Origin` the policy does not allow gets 403 before it
 *    reaches authentication or an engine. A foreign page cannot read the
 *    answer anyway, but a "simple" cross-origin POST (`text/plain`, no
 *    preflight) would still make an engine generate: refusing it keeps a
 *    page the user merely visits from burning their GPUs.
 *    Requests without `Origin` (curl, SDKs, servers) are not affected.
 * 4. Everything else goes to the relay; its response loses the engine's
 *    `Access-Control-*` headers and gets the proxy's own.
 */
import { type Clock, realClock } from "../core/clock.ts";
import { CorsPolicy } from "./cors.ts";
import { errorResponse } from "./errors.ts";
import { createHostCheck } from "./host_check.ts";
import { requestHeader } from "../http1/raw.ts";
import type { Handler, RequestLogLine } from "./relay.ts";

/** Options of `guardBrowsers`. */
export interface BrowserGuardOptions {
  /** `--auth-token`; with one, any `Host` is served (the token protects). */
  authToken: string | null;
  /** `--listen` hostname, served under its own name. */
  listenHostname: string;
  /** `--allowed-host` entries (see `createHostCheck`). */
  allowedHosts: readonly string[];
  /** Normalized `--cors-origin` entries (see `normalizeOrigin`); empty: same-origin only. */
  corsOrigins: readonly string[];
  /** Receives a line for each request answered here (refusals and preflights). */
  onRequestLog?: (line: RequestLogLine) => void;
  /** Time source for log durations [real clock]. */
  clock?: Clock;
}

/** Longest `Host` / `Origin` echoed in an error message. */
const ECHO_MAX = 100;

/** Wraps `handler` with the Host check and the CORS policy. */
export function guardBrowsers(handler: Handler, opts: BrowserGuardOptions): Handler {
  const clock = opts.clock ?? realClock;
  const cors = new CorsPolicy(opts.corsOrigins);
  const hostOk = opts.authToken !== null ? () => true : createHostCheck({
    listenHostname: opts.listenHostname,
    allowedHosts: opts.allowedHosts,
  });

  // Made once, not per request: only refusals and preflights need it.
  const answer = async (req: Request, started: number, res: Response) => {
    await req.body?.cancel().catch(() => {});
    opts.onRequestLog?.({
      method: req.method,
      path: pathOf(req),
      instance: null,
      status: res.status,
      bytes: 0,
      durationMs: clock.now() - started,
      attempts: 0,
      clientCancelled: false,
    });
    return res;
  };

  return async (req, info) => {
    const started = clock.now();
    const host = requestHeader(req, "host");
    const origin = requestHeader(req, "origin");
    const verdict = origin === null ? null : cors.verdict(origin, host);
    const crossAllowed = verdict === "allowed" ? origin : null;

    if (!hostOk(host)) {
      const shown = JSON.stringify((host ?? "").slice(0, ECHO_MAX));
      return answer(
        req,
        started,
        cors.apply(
          errorResponse("host_not_allowed", {
            message: `Host ${shown} is not allowed: without --auth-token the proxy serves only ` +
              "loopback names, IP addresses and the --listen host (DNS rebinding protection); " +
              "add this name with --allowed-host, or set --auth-token",
          }),
          crossAllowed,
        ),
      );
    }
    if (
      origin !== null && req.method === "OPTIONS" &&
      requestHeader(req, "access-control-request-method") !== null
    ) {
      return answer(
        req,
        started,
        verdict === "denied" ? originRefused(origin) : cors.preflight(req, origin),
      );
    }
    if (verdict === "denied") return answer(req, started, originRefused(origin!));
    return cors.apply(await handler(req, info), crossAllowed);
  };
}

function originRefused(origin: string): Response {
  const shown = JSON.stringify(origin.slice(0, ECHO_MAX));
  return errorResponse("origin_not_allowed", {
    message: `Cross-origin requests from ${shown} are not allowed: ` +
      "start the proxy with --cors-origin for that origin to let its pages use it",
  });
}

/** The request path for the log, never the query (it may hold secrets). */
function pathOf(req: Request): string {
  try {
    return new URL(req.url).pathname;
  } catch {
    return "?";
  }
}
