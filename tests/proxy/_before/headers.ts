// The implementation before the hot-path pass (issue #14), kept verbatim as the oracle of
// tests/proxy/hot_path_oracle_test.ts. Not used by the proxy.

import type { HeaderPairs } from "../../../lib/http1/types.ts";
import { headersOrder, pairsGet } from "../../../lib/http1/raw.ts";

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
function connectionListed(value: string | null): Set<string> | null {
  if (!value) return null;
  const named = new Set<string>();
  for (const part of value.split(",")) {
    const name = part.trim().toLowerCase();
    if (name) named.add(name);
  }
  return named;
}

/**
 * True when `value` can leave through `Deno.serve`: tab, visible ASCII and
 * obs-text (0x80–0xff) only. Deno.serve panics and exits the whole process
 * on any other byte (a control character, DEL), so nothing else may pass.
 */
export function isEmittableValue(value: string): boolean {
  return EMITTABLE.test(value);
}
const EMITTABLE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * The `Authorization` value for an instance from `RouteTarget.upstreamAuth()`.
 * Accepts either a bare token (vast's `jupyter_token`) or a full header value
 * with a scheme, so the relay works with either reading of the contract.
 */
export function instanceAuthorization(upstreamAuth: string | null): string | null {
  if (!upstreamAuth) return null;
  return /^bearer\s/i.test(upstreamAuth) ? upstreamAuth : `Bearer ${upstreamAuth}`;
}

/**
 * Request headers the proxy replaces: `Host` (the instance's own address
 * goes instead), `Content-Length` (recomputed from the buffered body),
 * `X-VastProxy-Instance`, the client's `Authorization` (the proxy token must
 * never reach an instance), and `Expect` (the proxy already has the whole
 * body, so 100-continue is over by the time the engine is asked).
 */
const UPSTREAM_DROP: ReadonlySet<string> = new Set([
  "host",
  "content-length",
  INSTANCE_HEADER,
  "authorization",
  "expect",
]);

/**
 * Headers for the request to the instance, as byte-string pairs in the
 * client's order: the client's headers minus hop-by-hop ones (including any
 * it listed in `Connection`) and `UPSTREAM_DROP`, plus the instance's token
 * as `Authorization` when it has one. Values pass through byte for byte
 * (Deno.serve hands them over as byte strings).
 */
export function upstreamRequestHeaders(
  incoming: Headers | HeaderPairs,
  upstreamAuth: string | null,
): HeaderPairs {
  if (Array.isArray(incoming)) {
    // Pairs (the server's parsed head) go out as `Headers` would list them.
    // Dropping whole names first and ordering after gives the same list, with
    // less to merge and sort (Host, Content-Length and Authorization go).
    const named = connectionListed(pairsGet(incoming, "connection"));
    const kept: HeaderPairs = [];
    for (const [name, value] of incoming) {
      if (HOP_BY_HOP_SET.has(name) || named?.has(name) || UPSTREAM_DROP.has(name)) continue;
      kept.push([name, value]);
    }
    const out = headersOrder(kept);
    const auth = instanceAuthorization(upstreamAuth);
    if (auth) out.push(["authorization", auth]);
    return out;
  }
  const named = connectionListed(incoming.get("connection"));
  const out: HeaderPairs = [];
  for (const [name, value] of incoming) {
    if (HOP_BY_HOP_SET.has(name) || named?.has(name) || UPSTREAM_DROP.has(name)) continue;
    out.push([name, value]);
  }
  const auth = instanceAuthorization(upstreamAuth);
  if (auth) out.push(["authorization", auth]);
  return out;
}

/**
 * Headers for the response to the client: the instance's fields minus
 * hop-by-hop ones (Deno.serve frames the body itself) and its own
 * `X-VastProxy-Instance`, plus `X-VastProxy-Instance: <id>`. A field that
 * the server cannot emit (a control byte in its value) is left out and
 * reported through `onDropped`, so no engine byte can take the proxy down.
 * `bodiless` (answers to HEAD, and 304s) keeps the engine's
 * `Transfer-Encoding`: there it describes the body a GET would get, and no
 * body follows for the server to frame.
 */
export function downstreamResponseHeaders(
  upstream: HeaderPairs,
  instanceId: number,
  onDropped?: (name: string) => void,
  bodiless = false,
): Headers {
  const out = new Headers();
  for (const [n, v] of downstreamResponsePairs(upstream, instanceId, onDropped, bodiless)) {
    out.append(n, v);
  }
  return out;
}

/**
 * `downstreamResponseHeaders` as pairs in the engine's order (no `Headers`
 * object): what the relay hands the server through `responseWithPairs`.
 */
export function downstreamResponsePairs(
  upstream: HeaderPairs,
  instanceId: number,
  onDropped?: (name: string) => void,
  bodiless = false,
): HeaderPairs {
  let connection: string | null = null;
  for (const [n, v] of upstream) {
    if (n === "connection") connection = connection === null ? v : `${connection},${v}`;
  }
  const named = connectionListed(connection);
  const out: HeaderPairs = [];
  for (const [name, value] of upstream) {
    const keep = bodiless && name === "transfer-encoding";
    if ((!keep && (HOP_BY_HOP_SET.has(name) || named?.has(name))) || name === INSTANCE_HEADER) {
      continue;
    }
    if (!isEmittableValue(value)) {
      onDropped?.(name);
      continue;
    }
    out.push([name, value]);
  }
  out.push([INSTANCE_HEADER, String(instanceId)]);
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
