import { Http1Error } from "../http1/types.ts";

/**
 * Every error the proxy itself answers with, in OpenAI's shape
 * `{"error":{"message","type","code"}}` so OpenAI clients surface the message
 * instead of a parse failure, plus the one retry rule of the relay.
 * Errors produced by an engine are passed through untouched, never rewritten.
 */

/** The proxy's own error kinds, each with a fixed status, type and code. */
export type ProxyErrorCode =
  | "invalid_api_key"
  | "model_not_found"
  | "request_too_large"
  | "request_timeout"
  | "server_busy"
  | "bad_request"
  | "host_not_allowed"
  | "origin_not_allowed"
  | "not_found"
  | "method_not_allowed"
  | "upstream_failed"
  | "no_healthy_backend";

const KINDS: Record<ProxyErrorCode, { status: number; type: string; message: string }> = {
  invalid_api_key: {
    status: 401,
    type: "invalid_request_error",
    message: "Incorrect or missing proxy token: send `Authorization: Bearer <--auth-token>`",
  },
  model_not_found: {
    status: 404,
    type: "invalid_request_error",
    message: "The requested model is not served by any healthy backend",
  },
  request_too_large: {
    status: 413,
    type: "invalid_request_error",
    message: "Request body too large: raise --max-body to accept it",
  },
  request_timeout: {
    status: 408,
    type: "invalid_request_error",
    message: "Request body not received in time: send it faster or raise --body-timeout",
  },
  server_busy: {
    status: 503,
    type: "server_error",
    message: "The proxy is holding as many request bodies as --max-buffered allows: " +
      "retry after the Retry-After delay, or raise --max-buffered",
  },
  host_not_allowed: {
    status: 403,
    type: "invalid_request_error",
    message: "Host not allowed",
  },
  origin_not_allowed: {
    status: 403,
    type: "invalid_request_error",
    message: "Cross-origin requests from this origin are not allowed: add it with --cors-origin",
  },
  bad_request: {
    status: 400,
    type: "invalid_request_error",
    message: "Cannot read the request body",
  },
  not_found: { status: 404, type: "invalid_request_error", message: "Not found" },
  method_not_allowed: {
    status: 405,
    type: "invalid_request_error",
    message: "Method not allowed",
  },
  upstream_failed: {
    status: 502,
    type: "server_error",
    message: "Upstream request failed on every backend tried",
  },
  no_healthy_backend: {
    status: 503,
    type: "server_error",
    message: "No healthy backend is available: check `vastproxy status`",
  },
};

/** HTTP status of a proxy error code. */
export function errorStatus(code: ProxyErrorCode): number {
  return KINDS[code].status;
}

/**
 * The one place proxy errors become responses. `message` replaces the
 * default text (never put a secret in it); `headers` are added (e.g. `Allow`).
 */
export function errorResponse(
  code: ProxyErrorCode,
  opts: { message?: string; headers?: HeadersInit } = {},
): Response {
  const kind = KINDS[code];
  const headers = new Headers(opts.headers);
  headers.set("content-type", "application/json");
  if (code === "invalid_api_key") headers.set("www-authenticate", 'Bearer realm="vastproxy"');
  const body = { error: { message: opts.message ?? kind.message, type: kind.type, code } };
  return new Response(JSON.stringify(body), { status: kind.status, headers });
}

/** Inputs of the retry decision for one failed attempt. */
export interface RetryInput {
  /** What the attempt threw. */
  error: unknown;
  /** Retries already made for this request (0 after the first attempt). */
  attempt: number;
  /** True when the client went away: retrying would serve nobody. */
  clientCancelled: boolean;
  /** Retry limit (default 2, DESIGN.md §7). */
  maxRetries?: number;
}

/**
 * Whether a failed attempt may be replayed (on another backend when there
 * is one). Only a request that provably never reached an engine qualifies:
 * no channel could be opened, or the channel closed before a byte was
 * written. Anything later (a crash after reading the request, a malformed
 * or oversized head, any response byte) may mean the engine already ran it,
 * and an LLM request run twice is paid twice; such a failure becomes a 502.
 */
export function shouldRetry(input: RetryInput): boolean {
  const max = input.maxRetries ?? 2;
  if (input.clientCancelled || input.attempt >= max) return false;
  return neverReachedEngine(input.error);
}

/** True when `error` proves the request never reached the engine. */
export function neverReachedEngine(error: unknown): boolean {
  return error instanceof Http1Error && !error.sent;
}

/**
 * True for a failure of the path to the engine (channel, SSH, engine
 * connection), false for aborts, which come from our own cancellation.
 * Such failures count against a backend and trigger a passive health check.
 */
export function isTransportError(error: unknown): boolean {
  if (error instanceof DOMException && error.name === "AbortError") return false;
  if (error instanceof Error && error.name === "AbortError") return false;
  return error instanceof Http1Error;
}
