/**
 * The proxy's HTTP handler: authenticate, hand `/vastproxy/*` to admin,
 * route everything else to a backend, retry transport failures that happen
 * before response headers, and stream the answer back chunk by chunk.
 *
 * It is a plain `(Request) => Promise<Response>`; tests call it directly and
 * `Deno.serve` runs it in production. Backends are seen only as
 * `RouteTarget`s from a `Pool`.
 */
import { type Clock, realClock } from "../core/clock.ts";
import { type Logger, nullLogger } from "../core/logger.ts";
import { createTokenCheck } from "./auth.ts";
import { BodyReader } from "./body.ts";
import { errorResponse, type ProxyErrorCode, shouldRetry, TransportError } from "./errors.ts";
import { downstreamResponseHeaders, upstreamRequestHeaders } from "./headers.ts";
import { pickTarget, type Policy, Rendezvous } from "./policies.ts";
import type { Pool, RequestOutcome, RouteTarget } from "./pool.ts";
import { routeInfoFor } from "./route_info.ts";

/** One line of the request log. Carries the path only: query strings may hold secrets. */
export interface RequestLogLine {
  method: string;
  path: string;
  /** Backend that answered, or null when the proxy answered itself. */
  instance: number | null;
  /** Status sent to the client (499 when the client left before the response headers, as nginx logs it). */
  status: number;
  /** Response body bytes relayed. */
  bytes: number;
  /** From request arrival to the end of the response body, ms. */
  durationMs: number;
  /** Upstream attempts made (0 when none). */
  attempts: number;
  clientCancelled: boolean;
}

/** What `createHandler` needs. */
export interface RelayDeps {
  /** The backends routing can choose from. */
  pool: Pool;
  /** The `--policy` in effect (see `createPolicy`). */
  policy: Policy;
  /** `--sticky-header` name, or null. */
  stickyHeader: string | null;
  /** `--auth-token`, or null for none. Protects every route including /vastproxy/*. */
  authToken: string | null;
  /** `--max-body`: larger request bodies get 413. */
  maxBodyBytes: number;
  /** Reads request bodies under the upload limits (default: `maxBodyBytes` only). */
  bodies?: BodyReader;
  /** Handler for `/vastproxy/*` (admin.ts); 404 for those paths when absent. */
  admin?: (req: Request) => Response | Promise<Response>;
  /** Upstream fetch (default: global fetch). */
  fetch?: typeof fetch;
  /** Time source for durations (default: real clock). */
  clock?: Clock;
  /** Where transport failures are reported (default: dropped). */
  logger?: Logger;
  /** Receives one line per request; when absent, lines go to `logger` at info level. */
  onRequestLog?: (line: RequestLogLine) => void;
  /** Retries after a transport failure (default 2). */
  maxRetries?: number;
}

/** A `Deno.serve`-compatible handler. */
export type Handler = (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>;

const ADMIN_PREFIX = "/vastproxy/";

/** Builds the proxy's request handler. */
export function createHandler(deps: RelayDeps): Handler {
  const fetchFn = deps.fetch ?? fetch;
  const clock = deps.clock ?? realClock;
  const logger = deps.logger ?? nullLogger;
  const checkToken = createTokenCheck(deps.authToken);
  const policies = { policy: deps.policy, sticky: new Rendezvous() };
  const maxRetries = deps.maxRetries ?? 2;
  const bodies = deps.bodies ?? new BodyReader({ maxBodyBytes: deps.maxBodyBytes });
  const emit = deps.onRequestLog ??
    ((l: RequestLogLine) => logger.log("info", "request", { ...l }));

  return async (req) => {
    const started = clock.now();
    // URL parsing resolves dot segments, so `/vastproxy/../v1/x` is `/v1/x`
    // here and upstream alike: routing and the instance see the same path.
    const url = new URL(req.url);
    const line = (status: number, extra: Partial<RequestLogLine> = {}) =>
      emit({
        method: req.method,
        path: url.pathname,
        instance: null,
        status,
        bytes: 0,
        durationMs: clock.now() - started,
        attempts: 0,
        clientCancelled: false,
        ...extra,
      });
    const log = (res: Response, extra: Partial<RequestLogLine> = {}): Response => {
      line(res.status, extra);
      return res;
    };

    if (!(await checkToken(req.headers.get("authorization")))) {
      await req.body?.cancel();
      return log(errorResponse("invalid_api_key"));
    }
    if (url.pathname === "/vastproxy" || url.pathname.startsWith(ADMIN_PREFIX)) {
      return log(deps.admin ? await deps.admin(req) : errorResponse("not_found"));
    }
    if ((req.method === "GET" || req.method === "HEAD") && url.pathname === "/v1/models") {
      return log(modelsResponse(deps.pool.routable(), clock.now()));
    }

    // `using`: the body's share of --max-buffered is released when this
    // handler returns, i.e. once response headers arrived (no retry needs
    // the body after that) or the request failed.
    using read = await bodies.read(req);
    if (!read.ok) return log(read.response());
    // GET/HEAD must not carry a body, not even an empty one, or fetch throws.
    const body = req.method === "GET" || req.method === "HEAD" ? null : read.body;
    const route = routeInfoFor(req.headers, body, deps.stickyHeader, deps.pool.knownModels?.());
    const target = `${url.pathname}${url.search}`;

    const tried = new Set<number>();
    for (let attempt = 0;; attempt++) {
      const decision = pickTarget(deps.pool.routable(), route, policies, tried);
      if (!decision.ok) {
        // After a failed attempt an empty pool means the upstream failed us.
        const code: ProxyErrorCode = attempt > 0 ? "upstream_failed" : decision.code;
        return log(errorResponse(code), { attempts: attempt });
      }
      const backend = decision.target;
      tried.add(backend.id);
      const result = await dispatch(backend, {
        req,
        path: target,
        body,
        fetchFn,
        clock,
        onDone: (d) => line(d.status, { ...d, attempts: attempt + 1 }),
      });
      if ("response" in result) return result.response;
      if (result.clientCancelled) {
        // Nobody will read this; 499 is what the log says, as nginx does.
        return log(new Response(null, { status: 499 }), {
          instance: backend.id,
          attempts: attempt + 1,
          clientCancelled: true,
        });
      }
      logger.log("warn", "upstream transport failure", {
        instance: backend.id,
        attempt: attempt + 1,
        error: describe(result.error),
      });
      const retry = shouldRetry({
        error: result.error,
        attempt,
        headersSent: false,
        clientCancelled: false,
        maxRetries,
      });
      if (!retry) {
        return log(
          errorResponse("upstream_failed", {
            message: `Upstream request failed after ${attempt + 1} attempt(s): ${
              describe(result.error)
            }`,
          }),
          { attempts: attempt + 1 },
        );
      }
    }
  };
}

/** Everything `dispatch` needs besides the backend. */
interface DispatchInput {
  req: Request;
  path: string;
  body: Uint8Array<ArrayBuffer> | null;
  fetchFn: typeof fetch;
  clock: Clock;
  /** Called once when the response body ended, with what to log. */
  onDone: (
    d: { instance: number; status: number; bytes: number; clientCancelled: boolean },
  ) => void;
}

type DispatchResult =
  | { response: Response }
  | { error: unknown; clientCancelled: boolean };

/**
 * One attempt on one backend. Resolves with a streaming response once
 * headers arrived, or with the failure (for the retry decision). The
 * backend's `release` runs exactly once: here on failure, else when the
 * relayed body ends, errors or is cancelled.
 */
async function dispatch(backend: RouteTarget, input: DispatchInput): Promise<DispatchResult> {
  const { req, clock } = input;
  const release = backend.acquire();
  const dispatchedAt = clock.now();
  let released = false;
  const finish = (o: Omit<RequestOutcome, "latencyMs">) => {
    if (released) return;
    released = true;
    release({ ...o, latencyMs: clock.now() - dispatchedAt });
  };

  const base = backend.baseUrl();
  if (!base) {
    finish({ status: null, transportError: true, clientCancelled: false });
    return {
      error: new TransportError(backend.id, `instance ${backend.id} has no tunnel`),
      clientCancelled: false,
    };
  }

  // `completed` guards against Deno.serve's legacy behaviour of aborting
  // `request.signal` after a response finished: only an abort that comes
  // before the body is fully relayed is a client cancellation.
  const state = { completed: false, clientCancelled: false };
  const upstreamAbort = new AbortController();
  const onClientAbort = () => {
    if (state.completed) return;
    state.clientCancelled = true;
    upstreamAbort.abort(new DOMException("client disconnected", "AbortError"));
  };
  const detach = () => req.signal.removeEventListener("abort", onClientAbort);
  if (req.signal.aborted) onClientAbort();
  else req.signal.addEventListener("abort", onClientAbort);

  let upstream: Response;
  const headers = upstreamRequestHeaders(req.headers, backend.upstreamAuth());
  // The backend's direct channel path when it has one (no fetch, no local
  // TCP hop); otherwise fetch through the tunnel's forward.
  const direct = backend.upstreamRequest;
  try {
    upstream = direct
      ? await direct({
        method: req.method,
        path: input.path,
        headers,
        body: input.body,
        signal: upstreamAbort.signal,
      })
      : await input.fetchFn(new URL(input.path, base), {
        method: req.method,
        headers,
        body: input.body,
        signal: upstreamAbort.signal,
        // A proxy relays redirects; following them would leave the tunnel.
        redirect: "manual",
      });
  } catch (error) {
    detach();
    state.completed = true;
    finish({
      status: null,
      transportError: !state.clientCancelled,
      clientCancelled: state.clientCancelled,
    });
    return { error, clientCancelled: state.clientCancelled };
  }

  const init = {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: downstreamResponseHeaders(upstream.headers, backend.id),
  };
  let bytes = 0;
  const end = (o: { transportError: boolean }) => {
    state.completed = true;
    detach();
    finish({
      status: upstream.status,
      transportError: o.transportError,
      clientCancelled: state.clientCancelled,
    });
    input.onDone({
      instance: backend.id,
      // Headers already went out with this status; a client leaving during the
      // body (an SDK that stops reading after `data: [DONE]` does) is flagged
      // by clientCancelled, not by a fake status. 499 is only for clients that
      // leave before any response.
      status: upstream.status,
      bytes,
      clientCancelled: state.clientCancelled,
    });
  };

  if (!upstream.body) {
    end({ transportError: false });
    return { response: new Response(null, init) };
  }

  const reader = upstream.body.getReader();
  // Pull-based with no buffer: a chunk is read from the instance only when
  // the client is ready for it, so nothing accumulates in the proxy and each
  // SSE event is forwarded the moment it arrives.
  const relayed = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          end({ transportError: false });
          controller.close();
          return;
        }
        bytes += value.byteLength;
        controller.enqueue(value);
      } catch (err) {
        if (state.completed) return;
        // Headers are out, so no retry: fail the client's stream so it sees
        // a truncated response instead of a clean (wrong) end.
        end({ transportError: !state.clientCancelled });
        // A client that left needs no error (Deno.serve would print it to
        // stderr); an upstream failure must reach the client as one.
        if (state.clientCancelled) controller.close();
        else controller.error(err);
      }
    },
    cancel() {
      // The client went away mid-body: abort the upstream request so the
      // engine sees the connection close and stops generating.
      if (!state.completed) state.clientCancelled = true;
      upstreamAbort.abort(new DOMException("client disconnected", "AbortError"));
      reader.cancel().catch(() => {});
      if (!state.completed) end({ transportError: false });
    },
  }, { highWaterMark: 0 });
  return { response: new Response(relayed, init) };
}

/**
 * `GET /v1/models`, answered by the proxy: the union of the models routable
 * backends reported at their last health check, deduplicated by id, in
 * OpenAI's list shape. Synthesized rather than fetched so listing models
 * costs no round trip through every tunnel; `instances` (an extra field
 * OpenAI clients ignore) tells which backends serve each model, for pinning.
 */
function modelsResponse(routable: readonly RouteTarget[], now: number): Response {
  if (routable.length === 0) return errorResponse("no_healthy_backend");
  const byModel = new Map<string, number[]>();
  for (const t of [...routable].sort((a, b) => a.id - b.id)) {
    for (const m of t.models) byModel.set(m, [...(byModel.get(m) ?? []), t.id]);
  }
  const created = Math.floor(now / 1000);
  const data = [...byModel.entries()].map(([id, instances]) => ({
    id,
    object: "model",
    created,
    owned_by: "vastproxy",
    instances,
  }));
  return Response.json({ object: "list", data });
}

/** A failure as text for logs and 502 bodies: no URLs (their query may carry secrets). */
function describe(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/https?:\/\/\S+/g, "<url>").slice(0, 300);
}
