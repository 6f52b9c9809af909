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
import { errorText } from "../core/errors.ts";
import { type Logger, nullLogger } from "../core/logger.ts";
import type { Admission } from "./admission.ts";
import { createTokenCheck } from "./auth.ts";
import { BodyReader } from "./body.ts";
import type { Http1Response } from "../http1/types.ts";
import { RequestAbort } from "../http1/request_abort.ts";
import {
  onRequestAbort,
  rawRequestOf,
  requestAborted,
  requestHeader,
  responseWithPairs,
  responseWithSource,
} from "../http1/raw.ts";
import type { BodySource } from "../http1/body_source.ts";
import { pathnameOf } from "./url_path.ts";
import { type Upgraded, wantsUpgrade } from "../http1/upgrade.ts";
import { switchProtocols } from "./upgrade_relay.ts";
import {
  errorResponse,
  isTransportError,
  neverReachedEngine,
  type ProxyErrorCode,
  shouldRetry,
} from "./errors.ts";
import { downstreamResponsePairs, upstreamRequestHeaders } from "./headers.ts";
import { pickTarget, type Policy, Rendezvous } from "./policies.ts";
import { modelsResponse } from "./models.ts";
import type { Pool, RouteTarget } from "./pool.ts";
import { routeInfoFor } from "./route_info.ts";
import { type LlmObserver, llmObserverFor } from "./llm_stats.ts";
import { logRequest, type RequestLogLine } from "../core/request_log.ts";

export type { RequestLogLine } from "../core/request_log.ts";

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
  /** Time source for durations (default: real clock). */
  clock?: Clock;
  /** Where transport failures are reported (default: dropped). */
  logger?: Logger;
  /** Receives one line per request; when absent, lines go to `logger` at info level. */
  onRequestLog?: (line: RequestLogLine) => void;
  /** Retries after a transport failure (default 2). */
  maxRetries?: number;
  /** Holds requests while every eligible backend is saturated (default: none, never holds). */
  admission?: Admission;
}

/** A `Deno.serve`-compatible handler. */
export type Handler = (req: Request, info?: Deno.ServeHandlerInfo) => Promise<Response>;

const ADMIN_PREFIX = "/vastproxy/";

/** Builds the proxy's request handler. */
export function createHandler(deps: RelayDeps): Handler {
  const clock = deps.clock ?? realClock;
  const logger = deps.logger ?? nullLogger;
  const checkToken = createTokenCheck(deps.authToken);
  const policies = { policy: deps.policy, sticky: new Rendezvous() };
  const maxRetries = deps.maxRetries ?? 2;
  const bodies = deps.bodies ?? new BodyReader({ maxBodyBytes: deps.maxBodyBytes });
  const emitLine = deps.onRequestLog ?? ((l: RequestLogLine) => logRequest(logger, l));
  // A failing log sink costs its line, never the request: lines are also
  // written after delivery, from our server's completion callback or, under
  // Deno.serve, from a `completed.then`, where a throw would be an
  // unhandled rejection and end the process.
  const emit = (l: RequestLogLine) => {
    try {
      emitLine(l);
    } catch (err) {
      try {
        logger.log("error", "request log line failed", { error: errorText(err) });
      } catch { /* the logger itself is down: nothing left to tell */ }
    }
  };
  const dropped = new DroppedHeaderLog(logger);

  return async (req, info) => {
    const started = clock.now();
    // Routing reads the parsed path (dot segments resolved, so
    // `/vastproxy/../v1/x` is not an admin route); the engine gets the
    // request target exactly as the client sent it.
    const path = pathnameOf(req.url);
    // One log line per request, whichever path ends it.
    let logged = false;
    // Fields as arguments, not an object to spread: this runs for every request.
    const line = (
      status: number,
      instance: number | null,
      bytes: number,
      attempts: number,
      clientCancelled: boolean,
    ) => {
      if (logged) return;
      logged = true;
      emit({
        method: req.method,
        path,
        instance,
        status,
        bytes,
        durationMs: clock.now() - started,
        attempts,
        clientCancelled,
      });
    };
    const log = (res: Response, extra: Partial<RequestLogLine> = {}): Response => {
      line(
        res.status,
        extra.instance ?? null,
        extra.bytes ?? 0,
        extra.attempts ?? 0,
        extra.clientCancelled ?? false,
      );
      return res;
    };
    // One closure for the route info and the upgrade check.
    const header = (name: string) => requestHeader(req, name);

    if (!(await checkToken(requestHeader(req, "authorization")))) {
      await req.body?.cancel();
      return log(errorResponse("invalid_api_key"));
    }
    if (path === "/vastproxy" || path.startsWith(ADMIN_PREFIX)) {
      return log(deps.admin ? await deps.admin(req) : errorResponse("not_found"));
    }
    if ((req.method === "GET" || req.method === "HEAD") && path === "/v1/models") {
      return log(modelsResponse(deps.pool.routable(), clock.now()));
    }
    if (req.method === "CONNECT") {
      // The proxy relays messages, not tunnels: a CONNECT forwarded to an
      // engine that said 2xx would turn its channel into raw bytes.
      await req.body?.cancel();
      return log(errorResponse("method_not_allowed"));
    }
    const target = requestTarget(req.url);
    if (target === null) {
      await req.body?.cancel();
      return log(errorResponse("bad_request", { message: "Invalid request target" }));
    }

    // `using`: the body's share of --max-buffered is released when this
    // handler returns, i.e. once response headers arrived (no retry needs
    // the body after that) or the request failed.
    using read = await bodies.read(req);
    if (!read.ok) {
      // A body cut short because the client left is a cancel, not a bad request.
      if (read.code === "bad_request" && requestAborted(req)) {
        return log(new Response(null, { status: 499 }), { clientCancelled: true });
      }
      return log(read.response());
    }
    // GET/HEAD carry no body, not even an empty one.
    const body = req.method === "GET" || req.method === "HEAD" ? null : read.body;
    // The prefix is hashed only if the policy reads it (route_info.ts).
    const route = routeInfoFor(
      header,
      body,
      deps.stickyHeader,
      deps.pool.knownModels?.(),
      { prefix: deps.policy.usesPrefix === true },
    );
    // Idle engine channels are reused only for the client connection they
    // served, so a stray engine byte can never reach another client.
    const affinity = connectionKey(info);

    const upgrade = wantsUpgrade(header);
    // Backends that failed this request; made by the first retry, not per request.
    let tried: Set<number> | null = null;
    for (let attempt = 0;; attempt++) {
      const decision = deps.admission
        ? await deps.admission.admit(
          deps.pool,
          route,
          (targets) => pickTarget(targets, route, policies, tried ?? undefined),
          () => req.signal,
        )
        : pickTarget(deps.pool.routable(), route, policies, tried ?? undefined);
      if (!decision.ok) {
        if (decision.code === "client_cancelled") {
          return log(new Response(null, { status: 499 }), { clientCancelled: true });
        }
        if (decision.code === "server_busy") {
          return log(deps.admission!.busyResponse(decision.reason), { attempts: attempt });
        }
        // After a failed attempt an empty pool means the upstream failed us.
        const code: ProxyErrorCode = attempt > 0 ? "upstream_failed" : decision.code;
        return log(errorResponse(code), { attempts: attempt });
      }
      const backend = decision.target;
      const result = await dispatch(backend, {
        req,
        target,
        body,
        affinity,
        upgrade,
        clock,
        llm: { path, model: route.model ?? null },
        onHeaderDropped: (name) => dropped.note(backend.id, name),
        info,
        onDone: (d) => line(d.status, d.instance, d.bytes, attempt + 1, d.clientCancelled),
        onReleased: deps.admission?.wake,
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
      (tried ??= new Set()).add(backend.id);
      const retry = shouldRetry({
        error: result.error,
        attempt,
        clientCancelled: false,
        maxRetries,
      });
      logger.log("warn", "upstream request failed", {
        instance: backend.id,
        attempt: attempt + 1,
        error: describe(result.error),
        retry: retry ? "yes" : "no",
      });
      if (!retry) {
        return log(
          errorResponse("upstream_failed", { message: failureMessage(backend.id, result.error) }),
          { instance: backend.id, attempts: attempt + 1 },
        );
      }
    }
  };
}

/** Names the client connection a request came on (Deno.serve gives its remote address). */
function connectionKey(info: Deno.ServeHandlerInfo | undefined): string | undefined {
  // Our listener numbers its connections: a later client that gets a
  // departed one's port can never inherit its channels.
  const id = (info as { connectionId?: unknown } | undefined)?.connectionId;
  if (typeof id === "number") return `c${id}`;
  const addr = info?.remoteAddr;
  if (!addr) return undefined;
  return "hostname" in addr ? `${addr.hostname}:${addr.port}` : JSON.stringify(addr);
}

/** The 502 text: which instance, what happened, and whether it may have run. */
function failureMessage(id: number, error: unknown): string {
  const what = describe(error);
  return neverReachedEngine(error)
    ? `Instance ${id} could not be reached (${what}), nor could any other backend`
    : `Instance ${id} failed after receiving the request (${what}); not retried, since the engine may already have run it`;
}

/**
 * The request target (path and query) exactly as it appears in `url`, or
 * null when it could not go on a request line. Deno.serve builds `req.url`
 * from the raw target, so the bytes the client sent reach the engine
 * without the re-encoding `URL` would apply.
 */
export function requestTarget(url: string): string | null {
  const scheme = url.indexOf("://");
  const slash = scheme === -1 ? -1 : url.indexOf("/", scheme + 3);
  const target = slash === -1 ? "/" : url.slice(slash);
  return UNSAFE_TARGET.test(target) ? null : target;
}

// deno-lint-ignore no-control-regex -- whitespace, NUL and non-bytes cannot go on a request line
const UNSAFE_TARGET = /[\s\0]|[^\x00-\xff]/;

/** Logs a dropped response header once per instance and name, not once per response. */
class DroppedHeaderLog {
  #seen = new Set<string>();
  #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  note(instance: number, name: string): void {
    const key = `${instance} ${name}`;
    if (this.#seen.has(key) || this.#seen.size >= 1000) return;
    this.#seen.add(key);
    this.#logger.log("warn", "dropped a response header the proxy cannot send on", {
      instance,
      header: name,
      why: "control byte in its value",
    });
  }
}

/** A reason phrase the Response constructor accepts. */
const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Everything `dispatch` needs besides the backend. */
interface DispatchInput {
  req: Request;
  /** Request target for the engine (raw path and query). */
  target: string;
  body: Uint8Array | null;
  affinity: string | undefined;
  /** The client asks to switch protocols (WebSocket): relay the handshake, then the bytes. */
  upgrade: boolean;
  clock: Clock;
  /** What the LLM metrics need of the request (llm_stats.ts). */
  llm: { path: string; model: string | null };
  onHeaderDropped: (name: string) => void;
  /** The server's `info`: it tells when the answer was written (see `afterDelivery`). */
  info: Deno.ServeHandlerInfo | undefined;
  /** Called once the backend's in-flight slot is released (admission re-routes held requests). */
  onReleased?: () => void;
  /** Called once when the response body ended, with what to log. */
  onDone: (
    d: { instance: number; status: number; bytes: number; clientCancelled: boolean },
  ) => void;
}

type DispatchResult =
  | { response: Response }
  | { error: unknown; clientCancelled: boolean };

/** Statuses whose responses must not have a body (the Response constructor refuses one). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * One attempt on one backend. Resolves with a streaming response once
 * headers arrived (or a complete one, when the whole body came with them),
 * or with the failure (for the retry decision). `settle`
 * is the one place the attempt ends: it releases the backend's in-flight
 * slot exactly once and, once a response was relayed, writes its log line.
 */
async function dispatch(backend: RouteTarget, input: DispatchInput): Promise<DispatchResult> {
  // Closures below must not hold `input`: it carries the buffered body,
  // which may be released as soon as response headers arrived.
  const { req, clock, onDone } = input;
  const release = backend.acquire();
  const dispatchedAt = clock.now();
  let settled = false;
  let bytes = 0;
  // Set once response headers arrived; the log line needs it.
  let status: number | null = null;
  // Only an abort before the body was fully relayed is a client cancellation
  // (Deno.serve may abort `request.signal` after a finished response).
  let completed = false;
  let clientCancelled = false;
  // Not an AbortController: one per request, plus its listener in the
  // client, cost microseconds on every request for the rare one cancelled.
  const upstreamAbort = new RequestAbort();
  // Reads relayed chunks for TTFT and tokens; set once headers say it is a completion.
  let observer: LlmObserver | null = null;
  const onClientAbort = () => {
    if (completed) return;
    clientCancelled = true;
    upstreamAbort.abort(new DOMException("client disconnected", "AbortError"));
  };
  const settle = (transportError: boolean) => {
    if (settled) return;
    settled = true;
    completed = true;
    stopWatching();
    release({
      status,
      transportError: transportError && !clientCancelled,
      clientCancelled,
      latencyMs: clock.now() - dispatchedAt,
    });
    const sample = observer?.finish();
    if (sample) backend.recordLlm?.(sample);
    input.onReleased?.();
    if (status !== null) {
      // Headers already went out with this status; a client leaving during
      // the body (an SDK that stops reading after `data: [DONE]` does) is
      // flagged by clientCancelled, not by a fake status.
      onDone({ instance: backend.id, status, bytes, clientCancelled });
    }
  };
  // Not `req.signal`: for the server's requests this makes no AbortSignal (raw.ts).
  const stopWatching = onRequestAbort(req, onClientAbort);
  // An upgraded exchange ends when its byte pipe closes.
  const settleUpgrade = (relayed: number) => {
    status = 101;
    bytes = relayed;
    settle(false);
  };

  let upstream: Http1Response;
  try {
    // The server's parsed pairs when there are some: no `Headers` to iterate.
    const headers = upstreamRequestHeaders(
      rawRequestOf(req)?.headers ?? req.headers,
      backend.upstreamAuth(),
    );
    const out = {
      method: req.method,
      target: input.target,
      headers,
      body: input.body,
      abort: upstreamAbort,
      affinity: input.affinity,
    };
    if (input.upgrade) {
      // `Upgrade` is hop-by-hop, so the rewrite dropped it: this hop asks again.
      headers.push(["upgrade", requestHeader(req, "upgrade")!]);
      const answer = await backend.upgrade(out);
      if (answer.status === 101) {
        stopWatching();
        return {
          response: switchProtocols(
            backend.id,
            answer as Upgraded,
            input.onHeaderDropped,
            settleUpgrade,
          ),
        };
      }
      upstream = answer as Http1Response;
    } else {
      upstream = await backend.send(out);
    }
  } catch (error) {
    settle(isTransportError(error));
    return { error, clientCancelled };
  }

  status = upstream.status;
  const init = {
    status: upstream.status,
    // The Response constructor refuses some reason phrases; the status is what counts.
    statusText: REASON.test(upstream.statusText) ? upstream.statusText : "",
  };
  const pairs = downstreamResponsePairs(
    upstream.headers,
    backend.id,
    input.onHeaderDropped,
    req.method === "HEAD" || upstream.status === 304,
  );
  // A request that came through our server gets its fields beside the
  // Response, not in a Headers object (raw.ts): that server writes them as
  // they are. Any other server (Deno.serve in tests) gets ordinary Headers.
  const sideChannel = rawRequestOf(req) !== undefined;
  const respond = (body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null) =>
    sideChannel
      ? responseWithPairs(body, init, pairs)
      : new Response(body, { ...init, headers: pairs });
  const source = upstream.body;
  if (!source || NULL_BODY.has(upstream.status) || req.method === "HEAD") {
    if (source instanceof ReadableStream) source.cancel().catch(() => {});
    settle(false);
    return { response: respond(null) };
  }

  if (backend.recordLlm) {
    observer = llmObserverFor(
      { method: req.method, path: input.llm.path, model: input.llm.model },
      upstream,
      {
        startedAt: dispatchedAt,
        now: () => clock.now(),
      },
    );
  }
  if (source instanceof Uint8Array) {
    // The whole body came with the head and its channel is already back in
    // the pool; the server writes the bytes with the head, with no stream on
    // either side.
    bytes = source.byteLength;
    observer?.whole(source);
    // The log line says what the client got, so the attempt settles once the
    // server has written the answer (or failed to). That also keeps the
    // settling work off the response's path.
    afterDelivery(input.info, (delivered) => {
      if (!delivered) clientCancelled = true;
      settle(false);
    });
    return { response: respond(source) };
  }
  if (sideChannel && upstream.source !== undefined && !source.locked) {
    return { response: responseWithSource(relayedSource(upstream.source), init, pairs) };
  }
  const reader = source.getReader();
  // Pull-based with no buffer: a chunk is read from the instance only when
  // the client is ready for it, so nothing accumulates in the proxy and each
  // SSE event is forwarded the moment it arrives.
  const relayed = new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          settle(false);
          controller.close();
          return;
        }
        bytes += value.byteLength;
        controller.enqueue(value);
        observer?.chunk(value); // after enqueue: it only reads, never holds the chunk back
      } catch (err) {
        if (settled) return;
        // Headers are out, so no retry: fail the client's stream so it sees
        // a truncated response instead of a clean (wrong) end.
        settle(true);
        // A client that left needs no error (Deno.serve would print it to
        // stderr); an upstream failure must reach the client as one.
        if (clientCancelled) controller.close();
        else controller.error(err);
      }
    },
    cancel() {
      // The client went away mid-body: abort the upstream request so the
      // engine sees the connection close and stops generating.
      if (!completed) clientCancelled = true;
      upstreamAbort.abort(new DOMException("client disconnected", "AbortError"));
      reader.cancel().catch(() => {});
      settle(false);
    },
  }, { highWaterMark: 0 });
  return { response: respond(relayed) };

  /**
   * The stream above as a source, for our server (body_source.ts): the same
   * ends, failures and cancel, with one promise per chunk and what is ready
   * now told without waiting.
   */
  function relayedSource(from: BodySource): BodySource {
    // 0 open; 1 ended or cancelled (reads give null); 2 failed (reads reject).
    let state = 0;
    let failure: unknown = undefined;
    // The pending read's resolve: a cancel settles it at once, as a stream's would.
    let waiting: ((chunk: Uint8Array | null) => void) | null = null;
    const take = (chunk: Uint8Array | null): Uint8Array | null => {
      if (chunk === null) {
        state = 1;
        settle(false);
        return null;
      }
      bytes += chunk.byteLength;
      observer?.chunk(chunk); // it only reads, never holds the chunk back
      return chunk;
    };
    return {
      read() {
        if (state === 1) return Promise.resolve(null);
        if (state === 2) return Promise.reject(failure);
        return new Promise<Uint8Array | null>((resolve, reject) => {
          waiting = resolve;
          from.read().then((chunk) => {
            if (waiting !== resolve) return; // cancelled meanwhile
            waiting = null;
            resolve(take(chunk));
          }, (err) => {
            if (waiting !== resolve) return;
            waiting = null;
            if (settled) {
              state = 1;
              resolve(null);
              return;
            }
            // Headers are out, so no retry: the client's response fails, so
            // it sees a truncated answer instead of a clean (wrong) end.
            settle(true);
            if (clientCancelled) {
              // A client that left needs no error.
              state = 1;
              resolve(null);
            } else {
              state = 2;
              failure = err;
              reject(err);
            }
          });
        });
      },
      readNow() {
        if (state === 1) return null;
        if (state === 2) return undefined;
        const chunk = from.readNow();
        return chunk === undefined ? undefined : take(chunk);
      },
      cancel() {
        if (state !== 0) return;
        state = 1;
        // The client went away mid-body: abort the upstream request so the
        // engine sees the connection close and stops generating.
        if (!completed) clientCancelled = true;
        upstreamAbort.abort(new DOMException("client disconnected", "AbortError"));
        from.cancel();
        settle(false);
        const w = waiting;
        waiting = null;
        w?.(null);
      },
    };
  }
}

/**
 * Calls `fn(delivered)` once the server wrote the answer (true) or failed to
 * (false): through our server's `onCompleted` (no promise per request), else
 * `Deno.serve`'s `completed` promise, else at once (no server: the answer
 * counts as handed over).
 */
function afterDelivery(
  info: Deno.ServeHandlerInfo | undefined,
  fn: (delivered: boolean) => void,
): void {
  const server = info as
    | { onCompleted?: (fn: (delivered: boolean) => void) => void; completed?: Promise<void> }
    | undefined;
  if (typeof server?.onCompleted === "function") return server.onCompleted(fn);
  const completed = server?.completed;
  if (completed) completed.then(() => fn(true), () => fn(false));
  else fn(true);
}

/**
 * A failure as text for logs and 502 bodies: no URLs (their query may carry
 * secrets) and no addresses (the instance's internals are not the client's business).
 */
function describe(error: unknown): string {
  return errorText(error)
    .replace(/https?:\/\/\S+/g, "<url>")
    .replace(/\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g, "<address>")
    .slice(0, 300);
}
