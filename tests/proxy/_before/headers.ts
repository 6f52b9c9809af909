// The implementation before the hot-path pass (issue #14), kept verbatim (only the parts under test) as the oracle of
// tests/proxy/hot_path_oracle_test.ts. Not used by the proxy.

/** Header a client may send to pin a backend, and the proxy sets on every proxied response. */
export const INSTANCE_HEADER = "x-vastproxy-instance";

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
