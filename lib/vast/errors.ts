/**
 * The one error type of the vast.ai client. Callers branch on `kind` (and
 * `retryable`), never on message text; messages tell the user what to do and
 * never contain the API key.
 */

/** What went wrong, coarsely enough to decide what to do about it. */
export type VastErrorKind =
  | "auth" // 401/403: the key is wrong or missing; retrying cannot help
  | "rate-limited" // 429: too many calls; back off
  | "server" // 5xx: vast.ai is having trouble; back off
  | "network" // no answer at all: DNS, refused, reset, timeout
  | "bad-response" // an answer we cannot use: not JSON, wrong shape, other 4xx
  | "not-found"; // 404: unknown instance or endpoint

/** Kinds worth retrying with backoff inside one client call. */
const RETRYABLE: ReadonlySet<VastErrorKind> = new Set(["rate-limited", "server", "network"]);

/** A failed vast.ai API call. */
export class VastApiError extends Error {
  /** Category of the failure. */
  readonly kind: VastErrorKind;
  /** HTTP status, when the API answered. */
  readonly status?: number;
  /**
   * True when the client retries it (429, 5xx, network/timeout). A bad
   * response is not retried inside one call: the watcher's next poll is the
   * retry, with its own backoff.
   */
  readonly retryable: boolean;

  /** `message` must already be secret-free. */
  constructor(
    kind: VastErrorKind,
    message: string,
    opts: { status?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = "VastApiError";
    this.kind = kind;
    this.status = opts.status;
    this.retryable = RETRYABLE.has(kind);
  }
}

/** Maps an HTTP status to the kind of error it means. */
export function kindForStatus(status: number): VastErrorKind {
  if (status === 401 || status === 403) return "auth";
  if (status === 404) return "not-found";
  if (status === 429) return "rate-limited";
  if (status >= 500) return "server";
  return "bad-response";
}
