/**
 * The request log's line: one per request the proxy handled, whichever path
 * ended it. The relay makes it; a `Logger` with its own `request()` formats
 * it directly (the headless writer, once per request), any other gets it as
 * an info record with `requestLogFields`.
 */
import type { LogFields, Logger } from "./logger.ts";

/** One line of the request log. Carries the path only: query strings may hold secrets. */
export interface RequestLogLine {
  method: string;
  path: string;
  /** Backend that answered, or null when the proxy answered itself. */
  instance: number | null;
  /** Status sent to the client (499 when the client left before the response headers, as nginx logs it). */
  status: number;
  /** Response body bytes relayed. */
  bytes: number;
  /** From request arrival to the end of the response body, ms. */
  durationMs: number;
  /** Upstream attempts made (0 when none). */
  attempts: number;
  clientCancelled: boolean;
}

/** The log message of a request line. */
export const REQUEST_MSG = "request";

/** The fields a request line shows, in order; `cancelled` only when the client left. */
export function requestLogFields(l: RequestLogLine): LogFields {
  return {
    method: l.method,
    path: l.path,
    instance: l.instance ?? "-",
    status: l.status,
    bytes: l.bytes,
    ms: Math.round(l.durationMs),
    attempts: l.attempts,
    cancelled: l.clientCancelled || undefined,
  };
}

/** Sends `line` to `logger`: its own formatter when it has one, else an info record. */
export function logRequest(logger: Logger, line: RequestLogLine): void {
  if (logger.request) logger.request(line);
  else logger.log("info", REQUEST_MSG, requestLogFields(line));
}
