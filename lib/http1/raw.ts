/**
 * A side channel between the HTTP/1.1 server (server.ts) and the relay, so
 * the hot path builds no `Headers` objects: the server already parsed the
 * request head into byte-string pairs, and the relay already has the
 * engine's response head as pairs. Iterating and rebuilding `Headers` (with
 * WebIDL conversion and validation of every name and value, each way) cost
 * more of the proxy's CPU than the header bytes themselves.
 *
 * - Requests: the server attaches the parsed head (`rawRequestOf`), and the
 *   `Request`'s `headers` are built from it only when someone reads them.
 *   `requestHeader(req, name)` reads a field either way, with `Headers.get`'s
 *   answer (all values of the name joined by `", "`).
 * - Responses: `responseWithPairs` makes a `Response` whose fields travel
 *   as pairs (`responsePairsOf`); its `headers` are built from them only
 *   when someone reads them, and from then on the `Headers` object is the
 *   truth (the pairs are dropped), so code that edits `res.headers` keeps
 *   working unchanged.
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

const requests = new WeakMap<Request, RawRequest>();

/**
 * Attaches `raw` to `req` and makes `req.headers` lazy: built from the pairs
 * on first read (the server's `Request` is constructed without fields).
 */
export function attachRawRequest(req: Request, raw: RawRequest): void {
  requests.set(req, raw);
  lazyHeaders(req, () => raw.headers);
}

/** The server's parsed head of `req`, when it came through the server. */
export function rawRequestOf(req: Request): RawRequest | undefined {
  return requests.get(req);
}

/** `req.headers.get(name)` (`name` lower-case), without building `Headers` when possible. */
export function requestHeader(req: Request, name: string): string | null {
  const raw = requests.get(req);
  if (raw === undefined) return req.headers.get(name);
  return pairsGet(raw.headers, name);
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

/** The fields of a response made by `responseWithPairs`, until its `headers` are read. */
const responses = new WeakMap<Response, HeaderPairs>();

/**
 * A `Response` whose fields are `pairs` (names lower-case, values byte
 * strings the caller checked with the same rules as `Headers`). Code that
 * knows the side channel edits the pairs (`responsePairsOf`); reading
 * `res.headers` turns them into a `Headers` that is the truth from then on.
 */
export function responseWithPairs(
  body: BodyInit | null,
  init: { status: number; statusText?: string },
  pairs: HeaderPairs,
): Response {
  const res = new Response(body, init);
  responses.set(res, pairs);
  lazyHeaders(res, () => {
    const p = responses.get(res)!;
    responses.delete(res);
    return p;
  });
  return res;
}

/** The fields of `res` as pairs, while they still travel beside it (mutable). */
export function responsePairsOf(res: Response): HeaderPairs | undefined {
  return responses.get(res);
}

/** Replaces `target.headers` with a `Headers` built from `pairs()` on first read. */
function lazyHeaders(target: Request | Response, pairs: () => HeaderPairs): void {
  Object.defineProperty(target, "headers", {
    configurable: true,
    enumerable: true,
    get() {
      const h = new Headers();
      for (const [n, v] of pairs()) h.append(n, v);
      Object.defineProperty(target, "headers", { value: h, configurable: true, enumerable: true });
      return h;
    },
  });
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
