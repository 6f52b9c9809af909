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
 *   when someone reads them.
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
const BYTES: unique symbol = Symbol("response bytes");

/**
 * The server's `Request`: `url` is the raw target as given (the URL parser
 * would re-encode it) and `headers` is built from the parsed pairs on first
 * read. A subclass with getters on its prototype, so no per-request
 * property definitions.
 */
class ServerRequest extends Request {
  [RAW]: RawRequest;
  [URL_KEY]: string;
  [HEADERS]: Headers | undefined;

  constructor(url: string, init: RequestInit, raw: RawRequest) {
    super(url, init);
    this[RAW] = raw;
    this[URL_KEY] = url;
    this[HEADERS] = undefined;
  }
}
Object.defineProperty(ServerRequest.prototype, "url", {
  get(this: ServerRequest) {
    return this[URL_KEY];
  },
});
Object.defineProperty(ServerRequest.prototype, "headers", {
  get(this: ServerRequest) {
    return (this[HEADERS] ??= toHeaders(this[RAW].headers));
  },
});

/**
 * A `Request` for the server: `url` exactly as given, fields from `raw`
 * (built into `headers` only when read), `init` without `headers`.
 */
export function serverRequest(url: string, init: RequestInit, raw: RawRequest): Request {
  return new ServerRequest(url, init, raw);
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

  constructor(
    body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null,
    init: ResponseInit,
    pairs: HeaderPairs,
  ) {
    super(body, init);
    this[PAIRS] = pairs;
    this[HEADERS] = undefined;
    this[BYTES] = body instanceof Uint8Array ? body : undefined;
  }
}
Object.defineProperty(PairsResponse.prototype, "headers", {
  get(this: PairsResponse) {
    if (this[HEADERS] === undefined) {
      this[HEADERS] = toHeaders(this[PAIRS]!);
      this[PAIRS] = undefined; // the Headers object is the truth from now on
    }
    return this[HEADERS];
  },
});

/**
 * A `Response` whose fields are `pairs` (names lower-case, values byte
 * strings the caller checked with the same rules as `Headers`). Code that
 * knows the side channel edits the pairs (`responsePairsOf`); reading
 * `res.headers` turns them into a `Headers` that is the truth from then on.
 * `body` must not be one that implies a field (a string, Blob or form).
 */
export function responseWithPairs(
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null,
  init: { status: number; statusText?: string },
  pairs: HeaderPairs,
): Response {
  return new PairsResponse(body, init, pairs);
}

/**
 * The body of `res` when it was given to `responseWithPairs` as bytes and
 * nobody has read `res.body` since: the server writes these with the head
 * and never makes the body stream Response would build on first access.
 */
export function responseBytesOf(res: Response): Uint8Array | undefined {
  return res instanceof PairsResponse && !res.bodyUsed ? res[BYTES] : undefined;
}

/** The fields of `res` as pairs, while they still travel beside it (mutable). */
export function responsePairsOf(res: Response): HeaderPairs | undefined {
  return res instanceof PairsResponse ? res[PAIRS] : undefined;
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
