/**
 * The proxy's CORS policy (`--cors-origin`). The proxy owns CORS: engines
 * are configured for their own use (vLLM answers `Access-Control-Allow-Origin:
 * *` by default), so their `Access-Control-*` headers are stripped from every
 * response and the proxy's own are added for allowed origins, on relayed and
 * proxy-made answers (`/v1/models`, errors, 401s) alike.
 *
 * Default: no cross-origin access at all. `--cors-origin ORIGIN` allows that
 * origin; `*` allows every origin, only when given explicitly. Credentials
 * (cookies) are never allowed: clients authenticate with an `Authorization`
 * header, which CORS treats as an ordinary request header.
 */

import type { HeaderPairs } from "../http1/types.ts";
import { pairsGet, responsePairsOf } from "../http1/raw.ts";

/** Response headers a page on an allowed origin may read. */
const EXPOSED = "x-vastproxy-instance, retry-after, x-request-id";
/** Methods a preflight may ask for. */
const METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/** Request headers always allowed (the OpenAI SDKs need both). */
const BASE_HEADERS = "authorization, content-type, x-vastproxy-instance";
/** How long browsers may cache a preflight answer, seconds (Chrome caps at 7200). */
const MAX_AGE_S = "600";

const TOKEN_LIST = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$/;

/**
 * `--cors-origin` entry as the browser sends it in `Origin`
 * (`http://localhost:3000`), `*`, or a message saying what is wrong.
 */
export function normalizeOrigin(entry: string): { origin: string } | { problem: string } {
  const text = entry.trim();
  if (text === "*") return { origin: "*" };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { problem: `"${entry}" is not an origin; use e.g. http://localhost:3000 or *` };
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return { problem: `"${entry}": only http:// and https:// origins can be allowed` };
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash || url.username) {
    return { problem: `"${entry}" is a URL, not an origin; drop the path: ${url.origin}` };
  }
  return { origin: url.origin };
}

/** How a request's `Origin` relates to the policy. */
export type OriginVerdict = "same-origin" | "allowed" | "denied";

/** The configured CORS policy. Stateless after construction. */
export class CorsPolicy {
  readonly #any: boolean;
  readonly #origins: ReadonlySet<string>;

  /** `origins`: normalized `--cors-origin` entries (see `normalizeOrigin`). */
  constructor(origins: readonly string[]) {
    this.#any = origins.includes("*");
    this.#origins = new Set(origins.filter((o) => o !== "*"));
  }

  /**
   * Whether a page on `origin` may use the proxy. Same-origin means the
   * page was served from this very `host` over http (the proxy serves no
   * pages, but a browser sends `Origin` on same-origin POSTs too).
   */
  verdict(origin: string, host: string | null): OriginVerdict {
    if (host !== null && origin.toLowerCase() === `http://${host.toLowerCase()}`) {
      return "same-origin";
    }
    if (this.#any || this.#origins.has(origin)) return "allowed";
    return "denied";
  }

  /**
   * The answer to a preflight from an origin that may use the proxy: the
   * requested headers are allowed (the OpenAI SDKs send several
   * `x-stainless-*` ones) as are the usual methods.
   */
  preflight(req: Request, origin: string): Response {
    const headers = new Headers({
      "access-control-allow-origin": this.#any ? "*" : origin,
      "access-control-allow-methods": METHODS,
      "access-control-max-age": MAX_AGE_S,
      "vary": "origin, access-control-request-method, access-control-request-headers",
    });
    const asked = req.headers.get("access-control-request-headers")?.trim();
    headers.set(
      "access-control-allow-headers",
      asked && TOKEN_LIST.test(asked) ? `${BASE_HEADERS}, ${asked.toLowerCase()}` : BASE_HEADERS,
    );
    // Chrome's Private Network Access: a public page calling localhost asks
    // for this; an origin the user allowed may have it.
    if (req.headers.get("access-control-request-private-network") === "true") {
      headers.set("access-control-allow-private-network", "true");
    }
    return new Response(null, { status: 204, headers });
  }

  /**
   * `res` without any `Access-Control-*` header from an engine, plus the
   * proxy's own when `allowedOrigin` (a cross-origin page the policy
   * allows) is given.
   */
  apply(res: Response, allowedOrigin: string | null): Response {
    const pairs = responsePairsOf(res);
    if (pairs !== undefined) {
      // Fields still beside the response (raw.ts): the same edit on the pairs.
      this.#editPairs(pairs, allowedOrigin);
      return res;
    }
    const edit = (h: Headers) => {
      for (const name of [...h.keys()]) {
        if (name.startsWith("access-control-")) h.delete(name);
      }
      // The answer depends on Origin whenever specific origins are listed.
      if (this.#origins.size > 0 && !this.#any) appendVary(h, "origin");
      if (allowedOrigin !== null) {
        h.set("access-control-allow-origin", this.#any ? "*" : allowedOrigin);
        h.set("access-control-expose-headers", EXPOSED);
      }
    };
    try {
      edit(res.headers);
      return res;
    } catch {
      // Immutable headers (a fetch() response passed through as is): copy.
      // A 101 cannot be rebuilt, and has no body a page could read anyway.
      if (res.status < 200 || res.status > 599) return res;
      const headers = new Headers(res.headers);
      edit(headers);
      return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
    }
  }

  /** `apply`'s edit on side-channel pairs (raw.ts). */
  #editPairs(pairs: HeaderPairs, allowedOrigin: string | null): void {
    removePairs(pairs, (name) => name.startsWith("access-control-"));
    if (this.#origins.size > 0 && !this.#any) {
      appendVary({
        get: (name) => pairsGet(pairs, name),
        set: (name, value) => setPair(pairs, name, value),
      }, "origin");
    }
    if (allowedOrigin !== null) {
      setPair(pairs, "access-control-allow-origin", this.#any ? "*" : allowedOrigin);
      setPair(pairs, "access-control-expose-headers", EXPOSED);
    }
  }
}

/** `set` of `Headers` on pairs that the server writes in `Headers` order. */
function setPair(pairs: HeaderPairs, name: string, value: string): void {
  removePairs(pairs, (n) => n === name);
  pairs.push([name, value]);
}

function removePairs(pairs: HeaderPairs, drop: (name: string) => boolean): void {
  let w = 0;
  for (let r = 0; r < pairs.length; r++) if (!drop(pairs[r][0])) pairs[w++] = pairs[r];
  pairs.length = w;
}

/** Adds `token` to `Vary` unless it is listed already. */
function appendVary(
  h: { get(name: string): string | null; set(name: string, v: string): void },
  token: string,
): void {
  const vary = h.get("vary");
  if (!vary) return h.set("vary", token);
  const listed = vary.split(",").map((v) => v.trim().toLowerCase());
  if (!listed.includes(token) && !listed.includes("*")) h.set("vary", `${vary}, ${token}`);
}
