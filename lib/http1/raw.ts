/**
 * A side channel between the HTTP/1.1 server (server.ts) and the relay, so
 * the hot path builds no `Headers` objects: the server already parsed the
 * request head into byte-string pairs, and the relay already has the
 * engine's response head as pairs. Iterating and rebuilding `Headers` (with
 * WebIDL conversion and validation of every name and value, each way) cost
 * more of the proxy's CPU than the header bytes themselves.
 *
 * - Requests: the server makes its `Request`s with `serverRequest`, which
 *   keeps the parsed head (`rawRequestOf`) and builds `headers` from it only
 *   when someone reads them; likewise the body stream and the `signal`
 *   (`hasBody`, `takeBody` and `onRequestAbort` serve the relay without them).
 *   `requestHeader(req, name)` reads a field either way, with `Headers.get`'s
 *   answer (all values of the name joined by `", "`).
 * - Responses: `responseWithPairs` makes a `Response` whose fields travel
 *   as pairs (`responsePairsOf`); its `headers` are built from them only
 *   when someone reads them, and from then on the `Headers` object is the
 *   truth (the pairs are dropped), so code that edits `res.headers` keeps
 *   working unchanged. A body given as bytes also stays beside it
 *   (`responseBytesOf`), so the server writes it without the stream
 *   `Response` would make of it.
 *
 * Requests and responses made elsewhere (tests calling the handler
 * directly, `Response.json`, …) have no side channel and take the ordinary
 * paths; both give the same bytes on the wire.
 */
import type { HeaderPairs } from "./types.ts";
import { type AbortView, RequestAbort, signalView } from "./request_abort.ts";
import { type BodySource, streamOfSource } from "./body_source.ts";

// Each server request carries one (`onRequestAbort` listens to it); also importable from here.
export { RequestAbort };

/** What the server knows about a request beyond the `Request`. */
export interface RawRequest {
  /** Fields in order: names lower-case, values byte strings (already validated). */
  readonly headers: HeaderPairs;
  /**
   * The whole body when it is already in the server's buffer and nobody has
   * read the body stream yet: the bytes (consumed: the stream then reads as
   * empty), else null (read `req.body` as usual). Only for a declared
   * `Content-Length`.
   */
  takeBody(): Uint8Array | null;
}

const RAW: unique symbol = Symbol("raw request");
const URL_KEY: unique symbol = Symbol("url");
const PAIRS: unique symbol = Symbol("response pairs");
const HEADERS: unique symbol = Symbol("headers");
const METHOD: unique symbol = Symbol("method");
const ABORT: unique symbol = Symbol("abort");
const MAKE_BODY: unique symbol = Symbol("make body");
const HOLDER: unique symbol = Symbol("body holder");
const INNER: unique symbol = Symbol("inner request");
const BYTES: unique symbol = Symbol("response bytes");
const SOURCE: unique symbol = Symbol("response source");
const SOURCE_BODY: unique symbol = Symbol("response source stream");

/**
 * Deno's own internal slots of a `Request` (symbols it does not export),
 * found by their descriptions: `new Request(req)` and `fetch(req)` read the
 * input's inner request (method, header list, body) and its signal through
 * these, not through the public getters, and every `Request` member checks
 * the WebIDL brand first. Undefined if a Deno release renames them
 * (tests/http1/raw_test.ts then fails).
 */
function slotOf(target: object, description: string): symbol | undefined {
  return Object.getOwnPropertySymbols(target).find((s) => s.description === description);
}
const PROBE = new Request("http://probe.invalid/");
const INNER_SLOT = slotOf(PROBE, "request");
const BRAND_SLOT = slotOf(PROBE, "[[webidl.brand]]");
const BRAND_VALUE = BRAND_SLOT === undefined
  ? undefined
  : (PROBE as unknown as Record<symbol, unknown>)[BRAND_SLOT];
const SIGNAL_SLOT = slotOf(Request.prototype, "signal");
/** A `Headers`' list of fields, which a `Request`'s inner request shares with its `headers`. */
const HEADER_LIST_SLOT = slotOf(new Headers(), "header list");
type Slots = Record<symbol, { body: unknown; headerList: unknown }>;

/**
 * Makes `inner` (a Request's or Response's inner object) use `headers`'
 * own list of fields, as an ordinary Request or Response does: later edits
 * to `headers` then reach what `inner` says (copies, `fetch`, the type).
 */
function shareHeaderList(headers: Headers, inner: { headerList: unknown } | undefined): void {
  if (HEADER_LIST_SLOT === undefined || inner === undefined) return;
  const list = (headers as unknown as Record<symbol, unknown>)[HEADER_LIST_SLOT];
  if (Array.isArray(list)) inner.headerList = list;
}

/** Gives `obj` Deno's WebIDL brand, which every `Request`/`Response` member checks first. */
function brand(obj: object): void {
  if (BRAND_SLOT !== undefined) (obj as Record<symbol, unknown>)[BRAND_SLOT] = BRAND_VALUE;
}

/**
 * The inner-request slot of every server Request, on the prototype: it is
 * made from this request's method, fields and body on first use, so code
 * that reads it (`new Request(req)`, `new Request(req, init)`, `fetch(req)`,
 * the `Request` members this class does not override) gets what an
 * ordinary Request would hold. The body is the holder's (one body, one
 * used-state, whichever way it is read).
 */
const INNER_ACCESSOR: PropertyDescriptor = {
  configurable: true,
  enumerable: false,
  get(this: ServerRequest) {
    if (this[INNER] === undefined) {
      const inner = (new Request(this[URL_KEY], {
        method: this[METHOD],
        headers: (this as unknown as Request).headers,
      }) as unknown as Slots)[INNER_SLOT!];
      const h = holderOf(this);
      inner.body = h ? (h as unknown as Slots)[INNER_SLOT!].body : null;
      // Later edits to `req.headers` reach every later `new Request(req)` and `fetch(req)`.
      shareHeaderList((this as unknown as Request).headers, inner);
      this[INNER] = inner;
    }
    return this[INNER];
  },
  set(this: ServerRequest, v: unknown) {
    this[INNER] = v;
  },
};

/** What the server gives `serverRequest` besides the raw head. */
export interface ServerRequestInit {
  /** The URL `req.url` returns, exactly (the URL parser would re-encode it). */
  url: string;
  /** The method as the client sent it (normalised as `Request` does). */
  method: string;
  /** Makes the body stream on first use of the body; null: the request has no body. */
  body: (() => ReadableStream<Uint8Array>) | null;
  abort: RequestAbort;
}

/**
 * Where the body lives once someone uses it: an ordinary `Request` made
 * with the stream, so every body member behaves exactly as `Request`'s.
 */
const HOLDER_URL = "http://body.invalid/";

/**
 * The server's `Request`: an object whose prototype chain runs through
 * `Request.prototype` (so `instanceof Request` holds and every member is
 * there), but which is never passed through the `Request` constructor.
 * That constructor parsed the URL, converted an init through WebIDL and
 * filled eight slots on every request, and replacing its inner-request slot
 * afterwards turned each request into a slow dictionary-mode object for
 * everything that read it later. `method`, `url`, `headers`, `signal` and
 * the body members are getters and methods here that make what they return
 * on first use; the brand and the inner-request slot serve the `Request`
 * members not overridden here, so code that asks still gets what an
 * ordinary `Request` would give.
 */
class ServerRequest {
  [RAW]: RawRequest;
  [URL_KEY]: string;
  [METHOD]: string;
  [HEADERS]: Headers | undefined;
  [ABORT]: RequestAbort;
  [MAKE_BODY]: (() => ReadableStream<Uint8Array>) | null;
  [HOLDER]: Request | undefined;
  [INNER]: unknown;

  constructor(init: ServerRequestInit, raw: RawRequest) {
    // Every object gets the same fields in the same order: one hidden class.
    brand(this);
    this[INNER] = undefined;
    this[RAW] = raw;
    this[URL_KEY] = init.url;
    this[METHOD] = normalizeMethod(init.method);
    this[HEADERS] = undefined;
    this[ABORT] = init.abort;
    this[MAKE_BODY] = init.body;
    this[HOLDER] = undefined;
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    const h = holderOf(this);
    return h ? h.arrayBuffer() : superRequest.arrayBuffer.call(this);
  }

  blob(): Promise<Blob> {
    const h = holderOf(this);
    return h ? h.blob() : superRequest.blob.call(this);
  }

  bytes(): Promise<Uint8Array<ArrayBuffer>> {
    const h = holderOf(this);
    return h ? h.bytes() : superRequest.bytes.call(this);
  }

  formData(): Promise<FormData> {
    const h = holderOf(this);
    return h ? h.formData() : superRequest.formData.call(this);
  }

  json(): Promise<unknown> {
    const h = holderOf(this);
    return h ? h.json() : superRequest.json.call(this);
  }

  text(): Promise<string> {
    const h = holderOf(this);
    return h ? h.text() : superRequest.text.call(this);
  }

  /** A plain `Request` with this one's URL, method, fields, signal and a tee of the body. */
  clone(): Request {
    const h = holderOf(this);
    return new Request(this[URL_KEY], {
      method: this[METHOD],
      headers: (this as unknown as Request).headers,
      body: h ? h.clone().body : null,
      signal: this[ABORT].signal,
      // @ts-ignore: `duplex` is required for a stream body, not yet in every lib.dom
      duplex: "half",
    });
  }
}
// `Request`'s own members, called on a server request (brand and inner slot above).
const superRequest = Request.prototype as unknown as Record<
  "arrayBuffer" | "blob" | "bytes" | "formData" | "json" | "text",
  // deno-lint-ignore no-explicit-any
  (this: any) => Promise<any>
>;
Object.setPrototypeOf(ServerRequest.prototype, Request.prototype);
if (INNER_SLOT !== undefined) {
  Object.defineProperty(ServerRequest.prototype, INNER_SLOT, INNER_ACCESSOR);
}

/** The `Request` holding the body stream, made on first use; undefined when there is no body. */
function holderOf(req: ServerRequest): Request | undefined {
  if (req[HOLDER] === undefined && req[MAKE_BODY] !== null) {
    const type = pairsGet(req[RAW].headers, "content-type");
    req[HOLDER] = new Request(HOLDER_URL, {
      method: "POST",
      body: req[MAKE_BODY](),
      // `blob()` and `formData()` read the type.
      headers: type === null ? undefined : [["content-type", type]],
      // @ts-ignore: `duplex` is required for a stream body, not yet in every lib.dom
      duplex: "half",
    });
  }
  return req[HOLDER];
}

// Deno's own body member (not in lib.dom), delegated as the others are.
const superTextStream = (Request.prototype as unknown as Record<string, unknown>).textStream;
if (typeof superTextStream === "function") {
  Object.defineProperty(ServerRequest.prototype, "textStream", {
    configurable: true,
    writable: true,
    value(this: ServerRequest) {
      return superTextStream.call(holderOf(this) ?? this);
    },
  });
}
Object.defineProperty(ServerRequest.prototype, "url", {
  get(this: ServerRequest) {
    return this[URL_KEY];
  },
});
Object.defineProperty(ServerRequest.prototype, "method", {
  get(this: ServerRequest) {
    return this[METHOD];
  },
});
Object.defineProperty(ServerRequest.prototype, "headers", {
  get(this: ServerRequest) {
    return (this[HEADERS] ??= toHeaders(this[RAW].headers));
  },
});
Object.defineProperty(ServerRequest.prototype, "signal", {
  get(this: ServerRequest) {
    return this[ABORT].signal;
  },
});
if (SIGNAL_SLOT !== undefined) {
  // `new Request(req)` follows the input's signal through this slot.
  Object.defineProperty(ServerRequest.prototype, SIGNAL_SLOT, {
    configurable: true,
    get(this: ServerRequest) {
      return this[ABORT].signal;
    },
  });
}
// No holder means no body: answered without making the inner request.
Object.defineProperty(ServerRequest.prototype, "body", {
  get(this: ServerRequest) {
    const h = holderOf(this);
    return h ? h.body : null;
  },
});
Object.defineProperty(ServerRequest.prototype, "bodyUsed", {
  get(this: ServerRequest) {
    const h = this[HOLDER];
    return h ? h.bodyUsed : false;
  },
});

/**
 * Throws where `new Request(url)` would: a host the URL parser refuses, or
 * credentials in the URL (the server answers 400). Whether an origin-form
 * URL parses depends on its host alone, as what follows the host is a path
 * that always parses; the answers for ordinary hosts are kept, so a request
 * costs no URL parse. Anything else is checked whole each time.
 */
function checkUrl(url: string): void {
  // Most requests name the host the last one did: its answer without a lookup.
  if (lastHost !== "" && url.startsWith(lastHost)) return;
  const end = url.indexOf("/", 7);
  const host = url.startsWith("http://") && end > 7 ? url.slice(7, end) : null;
  if (host === null || !PLAIN_HOST.test(host)) {
    new Request(url);
    return;
  }
  let ok = hosts.get(host);
  if (ok === undefined) {
    try {
      new Request(`http://${host}/`);
      ok = true;
    } catch {
      ok = false;
    }
    if (hosts.size >= 256) hosts.clear();
    hosts.set(host, ok);
  }
  if (!ok) new Request(url); // throws the constructor's own error
  // `http://host/`: a URL starting so has exactly this host (it holds no `/`).
  lastHost = `http://${host}/`;
}
const hosts = new Map<string, boolean>();
/** The last host found fine, as the start of its URLs; "" before the first. */
let lastHost = "";
/** Names, IPv4, bracketed IPv6 and a port: nothing that can end the authority early or hold credentials. */
const PLAIN_HOST = /^[A-Za-z0-9.\-_:[\]]+$/;

/**
 * `new Request(url, { method }).method`: the six standard methods upper-cased
 * whatever their case, others as sent; throws where `Request` does (CONNECT,
 * TRACE, TRACK). Clients send a handful of methods, so the answers are kept.
 */
function normalizeMethod(method: string): string {
  const known = methods.get(method);
  if (known !== undefined) return known;
  const m = new Request(HOLDER_URL, { method }).method;
  if (methods.size < 64) methods.set(method, m);
  return m;
}
const methods = new Map<string, string>();

/** A `Request` for the server (see `ServerRequest`); throws where `new Request` would. */
export function serverRequest(init: ServerRequestInit, raw: RawRequest): Request {
  checkUrl(init.url);
  return new ServerRequest(init, raw) as unknown as Request;
}

/** `req.body !== null`, without making the server's body stream. */
export function hasBody(req: Request): boolean {
  return req instanceof ServerRequest ? req[MAKE_BODY] !== null : req.body !== null;
}

/**
 * Calls `fn` when `req` is aborted (at once when it already is); returns
 * what stops that. For the server's requests no `AbortSignal` is made.
 */
export function onRequestAbort(req: Request, fn: () => void): () => void {
  const a: AbortView = req instanceof ServerRequest ? req[ABORT] : signalView(req.signal);
  if (a.aborted) {
    fn();
    return noop;
  }
  a.onAbort(fn);
  return () => a.offAbort(fn);
}

function noop(): void {}

/** True once `req` was aborted (the client left), without making an `AbortSignal`. */
export function requestAborted(req: Request): boolean {
  return req instanceof ServerRequest ? req[ABORT].aborted : req.signal.aborted;
}

/** The server's parsed head of `req`, when it came through the server. */
export function rawRequestOf(req: Request): RawRequest | undefined {
  return req instanceof ServerRequest ? req[RAW] : undefined;
}

/** `req.headers.get(name)` (`name` lower-case), without building `Headers` when possible. */
export function requestHeader(req: Request, name: string): string | null {
  if (!(req instanceof ServerRequest)) return req.headers.get(name);
  const h = req[HEADERS];
  return h !== undefined ? h.get(name) : pairsGet(req[RAW].headers, name);
}

/** `Headers.get` over pairs: every value of `name` (lower-case) joined by ", ", or null. */
export function pairsGet(pairs: HeaderPairs, name: string): string | null {
  let out: string | null = null;
  for (let i = 0; i < pairs.length; i++) {
    const p = pairs[i];
    if (p[0] === name) out = out === null ? p[1] : `${out}, ${p[1]}`;
  }
  return out;
}

/** A `Response` whose fields travel as pairs until someone reads `headers`. */
class PairsResponse extends Response {
  [PAIRS]: HeaderPairs | undefined;
  [HEADERS]: Headers | undefined;
  [BYTES]: Uint8Array | undefined;
  [SOURCE]: BodySource | undefined;
  /** The stream over `[SOURCE]`: `clone()` gives the response another (a tee of it). */
  [SOURCE_BODY]: ReadableStream<Uint8Array> | undefined;

  constructor(
    body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null,
    init: ResponseInit,
    pairs: HeaderPairs,
    source?: BodySource,
  ) {
    super(body, init);
    this[PAIRS] = pairs;
    this[HEADERS] = undefined;
    this[BYTES] = body instanceof Uint8Array ? body : undefined;
    this[SOURCE] = source;
    this[SOURCE_BODY] = source === undefined ? undefined : body as ReadableStream<Uint8Array>;
  }
}
Object.defineProperty(PairsResponse.prototype, "headers", {
  get(this: PairsResponse) {
    return headersOfPairs(this);
  },
});

/**
 * The `Headers` of a response whose fields travel as pairs, made from them
 * on first use; from then on the `Headers` object is the truth.
 */
function headersOfPairs(
  res: { [PAIRS]: HeaderPairs | undefined; [HEADERS]: Headers | undefined },
): Headers {
  if (res[HEADERS] === undefined) {
    res[HEADERS] = toHeaders(res[PAIRS]!);
    res[PAIRS] = undefined;
  }
  return res[HEADERS];
}

const RESPONSE_PROBE = new Response(null);
const RESPONSE_INNER_SLOT = slotOf(RESPONSE_PROBE, "response");
const RESPONSE_HEADERS_SLOT = slotOf(RESPONSE_PROBE, "headers");
const STATUS: unique symbol = Symbol("status");
const STATUS_TEXT: unique symbol = Symbol("status text");

/**
 * A small answer whose body is bytes, as the relay gives the server nearly
 * every non-streaming answer: like `ServerRequest`, an object whose
 * prototype chain runs through `Response.prototype` but which never passes
 * through the `Response` constructor (WebIDL conversion of the init, a copy
 * of the body, twelve slots per response). Status, reason and fields are
 * its own; every body member, and the inner-response slot that the
 * `Response` members not overridden here read, are served by an ordinary
 * `Response` with the same status, fields and bytes, made on first use.
 */
class BytesResponse {
  [STATUS]: number;
  [STATUS_TEXT]: string;
  [PAIRS]: HeaderPairs | undefined;
  [HEADERS]: Headers | undefined;
  [BYTES]: Uint8Array<ArrayBuffer>;
  [HOLDER]: Response | undefined;

  constructor(
    body: Uint8Array<ArrayBuffer>,
    status: number,
    statusText: string,
    pairs: HeaderPairs,
  ) {
    brand(this);
    this[STATUS] = status;
    this[STATUS_TEXT] = statusText;
    this[PAIRS] = pairs;
    this[HEADERS] = undefined;
    this[BYTES] = body;
    this[HOLDER] = undefined;
  }

  get status(): number {
    return this[STATUS];
  }

  get statusText(): string {
    return this[STATUS_TEXT];
  }

  get ok(): boolean {
    return this[STATUS] >= 200 && this[STATUS] <= 299;
  }

  get headers(): Headers {
    return headersOfPairs(this);
  }

  get body(): ReadableStream<Uint8Array<ArrayBuffer>> | null {
    return bytesHolder(this).body;
  }

  get bodyUsed(): boolean {
    const h = this[HOLDER];
    return h ? h.bodyUsed : false;
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return bytesHolder(this).arrayBuffer();
  }

  blob(): Promise<Blob> {
    return bytesHolder(this).blob();
  }

  bytes(): Promise<Uint8Array<ArrayBuffer>> {
    return bytesHolder(this).bytes();
  }

  formData(): Promise<FormData> {
    return bytesHolder(this).formData();
  }

  json(): Promise<unknown> {
    return bytesHolder(this).json();
  }

  text(): Promise<string> {
    return bytesHolder(this).text();
  }

  /** An ordinary `Response` with this one's status, fields and a copy of the body. */
  clone(): Response {
    const h = bytesHolder(this);
    return new Response(h.bodyUsed ? h.body : h.clone().body, {
      status: this[STATUS],
      statusText: this[STATUS_TEXT],
      headers: this.headers,
    });
  }
}
Object.setPrototypeOf(BytesResponse.prototype, Response.prototype);
if (RESPONSE_INNER_SLOT !== undefined) {
  Object.defineProperty(BytesResponse.prototype, RESPONSE_INNER_SLOT, {
    configurable: true,
    get(this: BytesResponse) {
      return (bytesHolder(this) as unknown as Record<symbol, unknown>)[RESPONSE_INNER_SLOT];
    },
  });
}
// `Response`'s own members (called directly on one of these) read the
// fields through this slot: the same `Headers` as `res.headers`.
if (RESPONSE_HEADERS_SLOT !== undefined) {
  Object.defineProperty(BytesResponse.prototype, RESPONSE_HEADERS_SLOT, {
    configurable: true,
    get(this: BytesResponse) {
      return this.headers;
    },
  });
}
// Deno's own body member (not in lib.dom), delegated as the others are.
Object.defineProperty(BytesResponse.prototype, "textStream", {
  configurable: true,
  writable: true,
  value(this: BytesResponse) {
    const h = bytesHolder(this) as unknown as { textStream?: () => unknown };
    return h.textStream!();
  },
});

/** The ordinary `Response` behind a `BytesResponse`'s body, made on first use. */
function bytesHolder(res: BytesResponse): Response {
  if (res[HOLDER] === undefined) {
    const headers = res.headers;
    const holder = new Response(res[BYTES], {
      status: res[STATUS],
      statusText: res[STATUS_TEXT],
      headers,
    });
    // Later edits to `res.headers` reach what the inner response says (content type, clone).
    shareHeaderList(
      headers,
      RESPONSE_INNER_SLOT === undefined
        ? undefined
        : (holder as unknown as Slots)[RESPONSE_INNER_SLOT],
    );
    res[HOLDER] = holder;
  }
  return res[HOLDER];
}

/** The reason phrases and statuses the `Response` constructor accepts with a body. */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]*$/;
const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

/**
 * A `Response` whose fields are `pairs` (names lower-case, values byte
 * strings the caller checked with the same rules as `Headers`). Code that
 * knows the side channel edits the pairs (`responsePairsOf`); reading
 * `res.headers` turns them into a `Headers` that is the truth from then on.
 * `body` must not be one that implies a field (a string, Blob or form).
 * Throws where the `Response` constructor would.
 */
export function responseWithPairs(
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null,
  init: { status: number; statusText?: string },
  pairs: HeaderPairs,
): Response {
  const status = init.status;
  const statusText = init.statusText ?? "";
  if (
    body instanceof Uint8Array && Number.isInteger(status) && status >= 200 && status <= 599 &&
    !NULL_BODY_STATUS.has(status) && REASON_PHRASE.test(statusText)
  ) {
    return new BytesResponse(body, status, statusText, pairs) as unknown as Response;
  }
  return new PairsResponse(body, init, pairs);
}

/**
 * The body of `res` when it was given to `responseWithPairs` as bytes and
 * nobody has read `res.body` since: the server writes these with the head
 * and never makes the body stream Response would build on first access.
 */
export function responseBytesOf(res: Response): Uint8Array | undefined {
  if (res instanceof BytesResponse) {
    const h = res[HOLDER];
    return h === undefined || !h.bodyUsed ? res[BYTES] : undefined;
  }
  return res instanceof PairsResponse && !res.bodyUsed ? res[BYTES] : undefined;
}

/**
 * `responseWithPairs` for a streamed body given as a source
 * (body_source.ts): `res.body` is an ordinary stream over it, and our server
 * reads the source itself (`responseSourceOf`) unless someone else has
 * started on that stream. Throws where the `Response` constructor would.
 */
export function responseWithSource(
  source: BodySource,
  init: { status: number; statusText?: string },
  pairs: HeaderPairs,
): Response {
  return new PairsResponse(streamOfSource(source), init, pairs, source);
}

/**
 * The source of a `responseWithSource` answer while its body stream is
 * untouched (the one it was made with, not locked, never read, not
 * cloned): the caller then reads the source instead, and nothing else may
 * read the stream.
 */
export function responseSourceOf(res: Response): BodySource | undefined {
  if (!(res instanceof PairsResponse)) return undefined;
  const src = res[SOURCE];
  // After `clone()` the body is a branch of a tee that reads the source:
  // reading the source too would take chunks from under it.
  const body = res.body;
  if (src === undefined || res.bodyUsed || body !== res[SOURCE_BODY] || body.locked) {
    return undefined;
  }
  return src;
}

/** The fields of `res` as pairs, while they still travel beside it (mutable). */
export function responsePairsOf(res: Response): HeaderPairs | undefined {
  return res instanceof PairsResponse || res instanceof BytesResponse ? res[PAIRS] : undefined;
}

function toHeaders(pairs: HeaderPairs): Headers {
  const h = new Headers();
  for (const [n, v] of pairs) h.append(n, v);
  return h;
}

/**
 * `pairs` in the order and shape iterating a `Headers` built from them
 * gives: sorted by name, the values of a repeated name joined by ", " (an
 * empty first value is replaced, as `Headers` does), `set-cookie` kept
 * apart. Writing fields this way keeps the wire bytes what they were when
 * they went through `Headers`.
 */
export function headersOrder(pairs: HeaderPairs): HeaderPairs {
  const out: HeaderPairs = [];
  let seen: Map<string, number> | null = null;
  for (let i = 0; i < pairs.length; i++) {
    const [name, value] = pairs[i];
    if (name !== "set-cookie") {
      // Few fields: a linear scan before the first repeat is cheaper than a Map.
      let at = -1;
      if (seen !== null) at = seen.get(name) ?? -1;
      else {
        for (let j = 0; j < out.length; j++) {
          if (out[j][0] === name) {
            at = j;
            break;
          }
        }
      }
      if (at !== -1) {
        const prev = out[at][1];
        out[at][1] = prev.length > 0 ? `${prev}, ${value}` : value;
        continue;
      }
      if (out.length >= 16 && seen === null) {
        seen = new Map();
        for (let j = 0; j < out.length; j++) if (out[j][0] !== "set-cookie") seen.set(out[j][0], j);
      }
      seen?.set(name, out.length);
    }
    out.push([name, value]);
  }
  return out.sort(byName);
}

function byName(a: [string, string], b: [string, string]): number {
  return a[0] > b[0] ? 1 : a[0] < b[0] ? -1 : 0;
}
