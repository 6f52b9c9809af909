/**
 * Header rewriting for the relay, in one place: what is removed on the way
 * to the instance and back (hop-by-hop headers, RFC 9110 §7.6.1), and what
 * the proxy adds (the instance's Bearer, `X-VastProxy-Instance`).
 */

/** Header a client may send to pin a backend, and the proxy sets on every proxied response. */
export const INSTANCE_HEADER = "x-vastproxy-instance";

/**
 * Headers that describe one connection, not the message; a proxy must not
 * forward them (the same list Hono's and Go's reverse proxies use).
 */
export const HOP_BY_HOP: readonly string[] = Object.freeze([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

const HOP_BY_HOP_SET: ReadonlySet<string> = new Set(HOP_BY_HOP);

/** Header names the sender listed in `Connection` (lower case), or null when none. */
function connectionListed(headers: Headers): Set<string> | null {
  const value = headers.get("connection");
  if (!value) return null;
  const named = new Set<string>();
  for (const part of value.split(",")) {
    const name = part.trim().toLowerCase();
    if (name) named.add(name);
  }
  return named;
}

/**
 * Copies `headers` minus hop-by-hop ones and `alsoDrop`, in one pass.
 *
 * This runs twice per proxied request, so it avoids copy-then-delete: each
 * `Headers.delete()` re-validates and rescans the list, and 10+ of them per
 * request showed up in profiles. Iterating a `Headers` yields lower-case
 * names with repeated fields already combined, exactly what the old
 * `new Headers(headers)` copy held.
 */
function copyWithout(headers: Headers, alsoDrop: ReadonlySet<string> | null): Headers {
  const named = connectionListed(headers);
  const out = new Headers();
  for (const [name, value] of headers) {
    if (HOP_BY_HOP_SET.has(name) || named?.has(name) || alsoDrop?.has(name)) continue;
    out.append(name, value);
  }
  return out;
}

/**
 * A copy of `headers` without hop-by-hop headers, including any header the
 * sender listed in `Connection` (that is how HTTP/1.1 marks custom ones).
 * A garbage `Connection` value simply names nothing that exists.
 */
export function withoutHopByHop(headers: Headers): Headers {
  return copyWithout(headers, null);
}

/**
 * The `Authorization` value for an instance from `RouteTarget.upstreamAuth()`.
 * Accepts either a bare token (vast's `jupyter_token`) or a full header value
 * with a scheme, so the relay works with either reading of the contract.
 */
export function instanceAuthorization(upstreamAuth: string | null): string | null {
  if (!upstreamAuth) return null;
  return /^bearer\s/i.test(upstreamAuth) ? upstreamAuth : `Bearer ${upstreamAuth}`;
}

/** Request headers the proxy replaces or that fetch sets itself (see below). */
const UPSTREAM_DROP: ReadonlySet<string> = new Set([
  "host",
  "content-length",
  INSTANCE_HEADER,
  "authorization",
  "accept-encoding",
]);

/** The instance's own `X-VastProxy-Instance` (if any) is replaced by the proxy's. */
const DOWNSTREAM_DROP: ReadonlySet<string> = new Set([INSTANCE_HEADER]);

/**
 * Headers for the request to the instance: the client's headers minus
 * hop-by-hop ones, `Host` (fetch sets it for the tunnel address),
 * `Content-Length` (fetch recomputes it from the buffered body),
 * `X-VastProxy-Instance`, and the client's own `Authorization`, which is
 * replaced by the instance's token or dropped when it has none: the proxy
 * token must never reach an instance, nor an instance token a client.
 *
 * `Accept-Encoding` is forced to `identity`: Deno's fetch transparently
 * decompresses gzip/br bodies yet keeps `Content-Encoding`, so passing a
 * compressed answer through would hand the client plain bytes labelled gzip.
 * Over a loopback tunnel compression buys nothing anyway; Deno.serve still
 * compresses towards the client when it asked for it.
 */
export function upstreamRequestHeaders(incoming: Headers, upstreamAuth: string | null): Headers {
  const out = copyWithout(incoming, UPSTREAM_DROP);
  const auth = instanceAuthorization(upstreamAuth);
  if (auth) out.set("authorization", auth);
  out.set("accept-encoding", "identity");
  return out;
}

/**
 * Headers for the response to the client: the instance's headers minus
 * hop-by-hop ones (Deno.serve frames the body itself), plus
 * `X-VastProxy-Instance: <id>` so clients can see and pin where they landed.
 */
export function downstreamResponseHeaders(upstream: Headers, instanceId: number): Headers {
  const out = copyWithout(upstream, DOWNSTREAM_DROP);
  out.set(INSTANCE_HEADER, String(instanceId));
  return out;
}

/**
 * Parses a pin header value: a positive integer instance id, else undefined
 * (an invalid pin falls back to the policy rather than failing the request).
 */
export function parsePin(value: string | null): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (!/^[0-9]{1,15}$/.test(v)) return undefined;
  const id = Number(v);
  return id > 0 ? id : undefined;
}
