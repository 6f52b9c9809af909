/**
 * A fake LLM server (vLLM, SGLang or llama.cpp flavour) on 127.0.0.1: the
 * double behind tests, `vastproxy demo` and the benchmark. It speaks the
 * OpenAI wire format exactly (list, completion and SSE chunk shapes), checks
 * the instance Bearer like vast's Caddy does, and records what it saw —
 * headers, bodies, and whether a client closed a stream mid-way — so tests
 * can assert on what reached the instance.
 *
 * Routes: GET /v1/models (each engine's own card shape: vLLM's with
 * `max_model_len`, `root`, `parent` and `permission`), GET /health,
 * POST /v1/chat/completions, POST /v1/completions (both plain and
 * `stream: true`), POST /v1/audio/transcriptions and /v1/audio/translations
 * (multipart uploads), POST /abort_request (SGLang only), GET /metrics (in the
 * engine's own Prometheus format, from its real in-flight completions), and test helpers:
 * ANY /echo, GET /bytes?n=, GET /sse?n=&interval=, GET /delay?ms=.
 */

import { engineMetricsText } from "./_engine_metrics_text.ts";

/** Which server to imitate; affects `owned_by`, model checks and /abort_request. */
export type FakeEngineKind = "vllm" | "sglang" | "llama.cpp";

/** Options of `startFakeEngine`. */
export interface FakeEngineOptions {
  /** Model id served (default `fake-model`). */
  model?: string;
  /** Server flavour (default `vllm`). */
  engine?: FakeEngineKind;
  /** When set, every request needs `Authorization: Bearer <token>` (401 otherwise). */
  token?: string;
  /**
   * Delay between streamed tokens, ms (default 0); `[min, max]` draws each
   * delay uniformly from that range, as a real engine's pace wobbles.
   */
  tokenDelayMs?: number | readonly [min: number, max: number];
  /** Random source in [0, 1) for ranged delays (default `Math.random`). */
  random?: () => number;
  /** Completion length in tokens (default 8). */
  tokens?: number;
  /** Context length reported as `max_model_len` by vLLM and SGLang (default 32768). */
  maxModelLen?: number;
  /** Port on 127.0.0.1 (default 0: any free port). */
  port?: number;
  /**
   * Serve `/metrics` (default true). Off, it answers as each engine does
   * without its metrics flag: 404 (vLLM, SGLang) or 501 (llama.cpp).
   */
  metrics?: boolean;
  /**
   * Entries of `authHeaders` and `paths` kept, the most recent (default:
   * all, for tests). A benchmark's million requests would otherwise grow the
   * engine's heap, and its garbage collection, round after round.
   */
  keepLast?: number;
}

/** What the engine observed. Mutated by the engine; read by tests. */
export interface FakeEngineStats {
  /** Requests received (all routes). */
  requests: number;
  /** `Authorization` value of each request, in order (null when absent). */
  authHeaders: (string | null)[];
  /** Method and path (with query) of each request, in order. */
  paths: string[];
  /** Response bodies currently being streamed. */
  openConnections: number;
  /** Streams the client closed before their end. */
  closedMidStream: number;
  /** Streams that reached their end. */
  completedStreams: number;
  /** Headers of the last request. */
  lastHeaders: Headers | null;
  /** Body of the last request, as text. */
  lastBody: string | null;
  /** Successful `abort_all` calls (SGLang). */
  aborts: number;
  /** WebSocket sessions open now, and ever opened (`/v1/realtime`, as vLLM serves it). */
  websocketsOpen: number;
  websocketsOpened: number;
  /** Distinct client connections (remote address and port) seen so far. */
  connections: number;
  /** Completion streams being generated now (what `/metrics` reports as running). */
  generating: number;
}

/** A running fake engine. */
export interface FakeEngine {
  /** Port it listens on (kept across `restart()`). */
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Live counters. */
  readonly stats: FakeEngineStats;
  /** Makes /health answer 503 (false) or 200 (true). */
  setHealthy(healthy: boolean): void;
  /** Answers every OpenAI route with this status and an OpenAI error body; null restores. */
  setStatus(status: number | null): void;
  /** Stops listening and ends open streams. Idempotent. */
  close(): Promise<void>;
  /** Starts again on the same port (closing first if running). */
  restart(): Promise<void>;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
}

const WORDS = [" The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."];
const encoder = new TextEncoder();

/** One streamed response body in progress. */
interface ActiveStream {
  /**
   * Ends the stream early, not by the client: `abort` (SGLang abort_all)
   * finishes it cleanly with its tail; `server` (close()) drops it abruptly,
   * as a crashed engine would.
   */
  stop(mode: "abort" | "server"): void;
}

/** Starts a fake engine; resolves once it listens. */
/**
 * A model entry as vLLM writes it in `GET /v1/models` (with its
 * `permission` list); `extra` fields are set over it.
 */
export function vllmModelCard(
  id: string,
  maxModelLen: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const created = 1_700_000_000;
  return {
    id,
    object: "model",
    created,
    owned_by: "vllm",
    root: id,
    parent: null,
    max_model_len: maxModelLen,
    permission: [{
      id: "modelperm-fake0001",
      object: "model_permission",
      created,
      allow_create_engine: false,
      allow_sampling: true,
      allow_logprobs: true,
      allow_search_indices: false,
      allow_view: true,
      allow_fine_tuning: false,
      organization: "*",
      group: null,
      is_blocking: false,
    }],
    ...extra,
  };
}

export function startFakeEngine(opts: FakeEngineOptions = {}): Promise<FakeEngine> {
  const model = opts.model ?? "fake-model";
  const kind = opts.engine ?? "vllm";
  const random = opts.random ?? Math.random;
  const delaySpec = opts.tokenDelayMs ?? 0;
  const tokenDelay = typeof delaySpec === "number"
    ? () => delaySpec
    : () => delaySpec[0] + random() * (delaySpec[1] - delaySpec[0]);
  const nTokens = opts.tokens ?? 8;
  const keepLast = opts.keepLast ?? Infinity;
  // NaN would keep everything (no length reaches it) and 0 nothing: refuse both.
  if (!(keepLast >= 1)) throw new RangeError(`keepLast must be 1 or more, got ${opts.keepLast}`);
  const maxModelLen = opts.maxModelLen ?? 32768;
  const stats: FakeEngineStats = {
    requests: 0,
    authHeaders: [],
    paths: [],
    openConnections: 0,
    closedMidStream: 0,
    completedStreams: 0,
    lastHeaders: null,
    lastBody: null,
    aborts: 0,
    connections: 0,
    websocketsOpen: 0,
    websocketsOpened: 0,
    generating: 0,
  };
  // Prefix cache: a prompt seen before counts as a full hit (in prompt tokens).
  const prefix = { queries: 0, hits: 0, seen: new Set<string>() };
  const peers = new Set<string>();
  let healthy = true;
  let forcedStatus: number | null = null;
  let seq = 0;
  const active = new Set<ActiveStream>();

  /**
   * A pull-driven body producing `next()`'s chunks until it returns null,
   * waiting `delayMs` (a number or a per-chunk draw) between chunks. The client closing the connection
   * cancels it, which is how tests observe "the engine saw the close".
   * `tail` is sent when the stream is aborted (SGLang's abort_all).
   */
  function stream(
    delayMs: number | (() => number),
    next: (i: number) => string | null,
    headers: HeadersInit,
    tail?: () => string,
    onEnd?: () => void,
  ): Response {
    let i = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let wake: (() => void) | undefined;
    let finished = false;
    const entry: ActiveStream = { stop: (mode) => end(mode) };
    function end(why: "done" | "client" | "server" | "abort") {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      wake?.();
      active.delete(entry);
      onEnd?.();
      stats.openConnections--;
      if (why === "client") stats.closedMidStream++;
      if (why === "done") stats.completedStreams++;
      if (why === "server") controllerRef?.error(new Error("fake engine closed"));
      if (why === "abort") {
        if (tail) controllerRef?.enqueue(encoder.encode(tail()));
        controllerRef?.close();
      }
    }
    let controllerRef: ReadableStreamDefaultController<Uint8Array> | undefined;
    // A client closing the connection shows up as cancel() of the body; we do
    // not watch request.signal, which Deno.serve also aborts after a response
    // completed successfully (legacy behaviour).
    stats.openConnections++;
    active.add(entry);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controllerRef = c;
      },
      async pull(c) {
        const delay = i > 0 ? (typeof delayMs === "number" ? delayMs : delayMs()) : 0;
        if (delay > 0) {
          await new Promise<void>((r) => {
            wake = r;
            timer = setTimeout(r, delay);
          });
        }
        if (finished) return;
        const chunk = next(i++);
        if (chunk === null) {
          end("done");
          c.close();
        } else {
          c.enqueue(encoder.encode(chunk));
        }
      },
      cancel() {
        end("client");
      },
    }, { highWaterMark: 0 });
    return new Response(body, { headers });
  }

  /**
   * One `/v1/models` entry as each engine writes it: vLLM's `ModelCard`
   * (with a `permission` list), SGLang's (root and max_model_len only),
   * llama.cpp's bare one.
   */
  function modelCard(): Record<string, unknown> {
    const created = 1_700_000_000;
    const base = { id: model, object: "model", created };
    if (kind === "llama.cpp") return { ...base, owned_by: "llamacpp" };
    if (kind === "sglang") {
      return { ...base, owned_by: "sglang", root: model, max_model_len: maxModelLen };
    }
    return vllmModelCard(model, maxModelLen);
  }

  /**
   * Audio transcription or translation of a multipart upload. Like vLLM it
   * answers a model it does not serve with 404, so a misrouted upload shows.
   */
  async function audio(req: Request, body: Uint8Array<ArrayBuffer>): Promise<Response> {
    let form: FormData;
    try {
      form = await new Request(req.url, { method: "POST", headers: req.headers, body }).formData();
    } catch {
      return openaiError(400, "Expected a multipart/form-data upload", "BadRequestError");
    }
    const file = form.get("file");
    const asked = form.get("model");
    if (!(file instanceof File)) {
      return openaiError(400, "Missing the `file` part", "BadRequestError");
    }
    if (kind === "vllm" && typeof asked === "string" && asked !== model) {
      return openaiError(404, `The model \`${asked}\` does not exist.`, "NotFoundError");
    }
    return Response.json({ text: `${model} heard ${file.size} bytes of ${file.name}` });
  }

  function openaiError(status: number, message: string, type: string): Response {
    return Response.json({ error: { message, type, param: null, code: status } }, { status });
  }

  /**
   * A stand-in for vLLM's Realtime API: a WebSocket that announces the
   * session, then echoes each message back (text as text, binary as binary)
   * with the model named, so tests see frames flow both ways.
   */
  function realtime(req: Request): Response {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onopen = () => {
      stats.websocketsOpen++;
      stats.websocketsOpened++;
      socket.send(JSON.stringify({ type: "session.created", model }));
    };
    socket.onmessage = (e) => {
      if (typeof e.data === "string") {
        socket.send(JSON.stringify({ type: "echo", model, data: e.data }));
      } else socket.send(e.data);
    };
    socket.onclose = () => stats.websocketsOpen--;
    socket.onerror = () => {};
    return response;
  }

  const sse = (obj: unknown) => `data: ${JSON.stringify(obj)}\n\n`;
  const sseHeaders = { "content-type": "text/event-stream", "cache-control": "no-cache" };

  /** Chat and text completions share token generation and the usage block. */
  function completion(body: Record<string, unknown>, chat: boolean): Response {
    if (kind === "vllm" && typeof body.model === "string" && body.model !== model) {
      return openaiError(404, `The model \`${body.model}\` does not exist.`, "NotFoundError");
    }
    const max = Number(body.max_completion_tokens ?? body.max_tokens ?? Infinity);
    const n = Math.max(0, Math.min(nTokens, Number.isFinite(max) ? max : nTokens));
    const finish = n < nTokens ? "length" : "stop";
    const promptText = chat ? JSON.stringify(body.messages ?? "") : String(body.prompt ?? "");
    const promptTokens = Math.max(1, promptText.split(/\s+/).length);
    prefix.queries += promptTokens;
    if (prefix.seen.has(promptText)) prefix.hits += promptTokens;
    else if (prefix.seen.size < 1000) prefix.seen.add(promptText);
    const usage = {
      prompt_tokens: promptTokens,
      completion_tokens: n,
      total_tokens: promptTokens + n,
    };
    const id = `${chat ? "chatcmpl" : "cmpl"}-fake${++seq}`;
    const created = Math.floor(Date.now() / 1000);
    const object = chat ? "chat.completion" : "text_completion";
    const word = (k: number) => WORDS[k % WORDS.length];
    if (!body.stream) {
      const text = Array.from({ length: n }, (_, k) => word(k)).join("");
      const choice = chat
        ? {
          index: 0,
          message: { role: "assistant", content: text },
          logprobs: null,
          finish_reason: finish,
        }
        : { index: 0, text, logprobs: null, finish_reason: finish };
      return Response.json({ id, object, created, model, choices: [choice], usage });
    }
    const chunkObject = chat ? "chat.completion.chunk" : "text_completion";
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      sse({ id, object: chunkObject, created, model, choices, ...extra });
    const choice = (content: string | null, fin: string | null, role = false) =>
      chat
        ? {
          index: 0,
          delta: content === null ? {} : { ...(role ? { role: "assistant" } : {}), content },
          logprobs: null,
          finish_reason: fin,
        }
        : { index: 0, text: content ?? "", logprobs: null, finish_reason: fin };
    const includeUsage = Boolean(
      (body.stream_options as Record<string, unknown> | undefined)?.include_usage,
    );
    // OpenAI's order: role chunk (chat), one chunk per token, a finish chunk,
    // a usage chunk with empty choices when asked for, then [DONE].
    const events: (() => string)[] = [];
    if (chat) events.push(() => chunk([choice("", null, true)]));
    for (let k = 0; k < n; k++) events.push(() => chunk([choice(word(k), null)]));
    events.push(() => chunk([choice(null, finish)]));
    if (includeUsage) events.push(() => chunk([], { usage }));
    events.push(() => "data: [DONE]\n\n");
    // SGLang ends an aborted request with finish_reason "abort".
    const tail = () => chunk([choice(null, "abort")]) + "data: [DONE]\n\n";
    stats.generating++;
    const done = () => stats.generating--;
    return stream(tokenDelay, (i) => events[i]?.() ?? null, sseHeaders, tail, done);
  }

  async function handle(
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Promise<Response> {
    const peer = `${info.remoteAddr.hostname}:${info.remoteAddr.port}`;
    if (!peers.has(peer)) {
      peers.add(peer);
      stats.connections = peers.size;
    }
    const url = new URL(req.url);
    let bodyBytes: Uint8Array<ArrayBuffer>;
    try {
      bodyBytes = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array();
    } catch {
      // The client left in the middle of its body (a load generator that
      // stops mid-request): nobody reads this, and it is no engine error.
      return new Response(null, { status: 400 });
    }
    const bodyText = new TextDecoder().decode(bodyBytes);
    stats.requests++;
    stats.authHeaders.push(req.headers.get("authorization"));
    stats.paths.push(`${req.method} ${url.pathname}${url.search}`);
    // Trimmed in one go at twice the limit: amortised O(1) per request.
    if (stats.paths.length >= 2 * keepLast) {
      stats.paths.splice(0, stats.paths.length - keepLast);
      stats.authHeaders.splice(0, stats.authHeaders.length - keepLast);
    }
    stats.lastHeaders = new Headers(req.headers);
    stats.lastBody = bodyText;
    if (opts.token && req.headers.get("authorization") !== `Bearer ${opts.token}`) {
      // vast's Caddy answers a missing or wrong token with a bare 401.
      return new Response("Unauthorized", { status: 401 });
    }
    if (
      url.pathname === "/v1/realtime" && req.headers.get("upgrade")?.toLowerCase() === "websocket"
    ) {
      return realtime(req);
    }
    if (
      kind === "vllm" && req.method === "OPTIONS" && req.headers.has("origin") &&
      req.headers.has("access-control-request-method")
    ) {
      // vLLM's default CORSMiddleware answers every preflight with "anyone".
      return new Response("OK", {
        headers: {
          "access-control-allow-origin": "*",
          "access-control-allow-methods": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
          "access-control-allow-headers": req.headers.get("access-control-request-headers") ??
            "*",
          "access-control-max-age": "600",
        },
      });
    }
    const route = `${req.method} ${url.pathname}`;
    const json = (): Record<string, unknown> => {
      try {
        const v = JSON.parse(bodyText);
        return v && typeof v === "object" ? v : {};
      } catch {
        return {};
      }
    };
    if (route === "GET /health") {
      return healthy
        ? Response.json({ status: "ok" })
        : Response.json({ status: "unavailable" }, { status: 503 });
    }
    if (url.pathname === "/echo") {
      return Response.json({
        method: req.method,
        path: url.pathname,
        query: url.search,
        headers: Object.fromEntries(req.headers),
        body: bodyText,
        bodyLength: bodyBytes.byteLength,
        // The raw bytes' digest: `body` is UTF-8-decoded, so binary uploads
        // are compared through this instead.
        bodySha256: await sha256Hex(bodyBytes),
      });
    }
    if (route === "GET /bytes") {
      const total = Math.max(0, Number(url.searchParams.get("n") ?? 0));
      const size = 64 * 1024;
      const block = new Uint8Array(size).map((_, k) => 97 + (k % 26));
      return stream(
        0,
        (
          i,
        ) => (i * size < total
          ? new TextDecoder().decode(block.subarray(0, Math.min(size, total - i * size)))
          : null),
        { "content-type": "application/octet-stream", "content-length": String(total) },
      );
    }
    if (route === "GET /sse") {
      const n = Number(url.searchParams.get("n") ?? 10);
      const interval = Number(url.searchParams.get("interval") ?? 20);
      // Each event carries its send time so a benchmark can measure relay delay.
      return stream(
        interval,
        (i) => (i < n ? sse({ i, t: Date.now() }) : i === n ? "data: [DONE]\n\n" : null),
        sseHeaders,
      );
    }
    if (route === "GET /delay") {
      const ms = Number(url.searchParams.get("ms") ?? 100);
      // Stop waiting when the client leaves; detach once done, since
      // Deno.serve aborts request.signal after every response (legacy).
      await new Promise<void>((resolve) => {
        const onAbort = () => {
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(() => {
          req.signal.removeEventListener("abort", onAbort);
          resolve();
        }, ms);
        req.signal.addEventListener("abort", onAbort, { once: true });
      });
      return Response.json({ delayedMs: ms });
    }
    if (forcedStatus !== null) {
      return openaiError(forcedStatus, `fake engine forced status ${forcedStatus}`, "server_error");
    }
    if (route === "GET /metrics") {
      if (opts.metrics === false) {
        return kind === "llama.cpp"
          ? openaiError(
            501,
            "This server does not support metrics endpoint.",
            "not_supported_error",
          )
          : new Response(JSON.stringify({ detail: "Not Found" }), { status: 404 });
      }
      const text = engineMetricsText(kind, {
        model,
        running: stats.generating,
        waiting: 0,
        // A made-up but monotone fill: each running stream holds 1/16 of the cache.
        kvCacheUsage: Math.min(1, stats.generating / 16),
        prefixQueries: prefix.queries,
        prefixHits: prefix.hits,
      });
      return new Response(text, { headers: { "content-type": "text/plain; version=0.0.4" } });
    }
    if (route === "GET /v1/models") return Response.json({ object: "list", data: [modelCard()] });
    if (route === "POST /v1/audio/transcriptions" || route === "POST /v1/audio/translations") {
      return audio(req, bodyBytes);
    }
    if (route === "POST /v1/chat/completions") return completion(json(), true);
    if (route === "POST /v1/completions") return completion(json(), false);
    if (route === "POST /abort_request" && kind === "sglang") {
      if (json().abort_all === true) {
        stats.aborts++;
        for (const s of [...active]) s.stop("abort");
      }
      return new Response(null, { status: 200 });
    }
    return new Response(JSON.stringify({ detail: "Not Found" }), {
      status: 404,
      headers: { "content-type": "application/json" },
    });
  }

  let server: Deno.HttpServer<Deno.NetAddr> | null = null;
  let port = opts.port ?? 0;
  const listen = () => {
    server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req, info) => {
      const res = await handle(req, info);
      // vLLM's default (--allowed-origins '["*"]'): any page may read any answer.
      if (kind === "vllm" && req.headers.has("origin")) {
        res.headers.set("access-control-allow-origin", "*");
      }
      return res;
    });
    port = server.addr.port;
  };
  const close = async () => {
    const s = server;
    if (!s) return;
    server = null;
    for (const a of [...active]) a.stop("server");
    await s.shutdown();
  };
  listen();

  return Promise.resolve({
    get port() {
      return port;
    },
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    stats,
    setHealthy(h) {
      healthy = h;
    },
    setStatus(s) {
      forcedStatus = s;
    },
    close,
    async restart() {
      await close();
      listen();
    },
  });
}
