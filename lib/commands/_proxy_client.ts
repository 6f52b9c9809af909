/**
 * Talking to a running vastproxy's own endpoints, for `status` and `wait`.
 */
import type { StatusSnapshot } from "../proxy/snapshot.ts";
import { UsageError } from "../cli/config.ts";

/** Default address of a local proxy (DESIGN.md §2 default --listen). */
export const DEFAULT_PROXY_URL = "http://127.0.0.1:8080";

/** Why a status read failed, in words a CI log reader can act on. */
export class ProxyUnreachableError extends Error {
  /** HTTP status when the proxy answered, else undefined. */
  readonly status?: number;
  constructor(message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = "ProxyUnreachableError";
    this.status = opts.status;
  }
}

/** Validates `--url` and returns the base without a trailing slash. */
export function proxyBaseUrl(url: string | undefined): string {
  const text = (url ?? DEFAULT_PROXY_URL).replace(/\/+$/, "");
  try {
    const u = new URL(text);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
  } catch {
    throw new UsageError(`--url: "${text}" is not an http(s) URL like ${DEFAULT_PROXY_URL}`, "url");
  }
  return text;
}

/** GETs /vastproxy/status; throws ProxyUnreachableError with a clear reason. */
export async function fetchStatus(
  base: string,
  opts: { authToken?: string | null; fetch?: typeof fetch; timeoutMs?: number } = {},
): Promise<StatusSnapshot> {
  const doFetch = opts.fetch ?? fetch;
  const headers: HeadersInit = opts.authToken ? { authorization: `Bearer ${opts.authToken}` } : {};
  let res: Response;
  try {
    res = await doFetch(`${base}/vastproxy/status`, {
      headers,
      signal: AbortSignal.timeout(opts.timeoutMs ?? 5_000),
    });
  } catch (err) {
    throw new ProxyUnreachableError(
      `cannot reach vastproxy at ${base}: ${
        err instanceof Error ? err.message : err
      }; is it running?`,
      { cause: err },
    );
  }
  if (res.status === 401) {
    await res.body?.cancel();
    throw new ProxyUnreachableError(
      `vastproxy at ${base} rejected the request (401): pass --auth-token or set VASTPROXY_AUTH_TOKEN`,
      { status: 401 },
    );
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new ProxyUnreachableError(`vastproxy at ${base} answered HTTP ${res.status}`, {
      status: res.status,
    });
  }
  const body = await res.json() as StatusSnapshot;
  if (!body || typeof body !== "object" || !Array.isArray(body.backends) || !body.counts) {
    throw new ProxyUnreachableError(
      `${base}/vastproxy/status did not return vastproxy status JSON`,
    );
  }
  return body;
}
