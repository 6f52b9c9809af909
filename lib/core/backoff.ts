/**
 * Exponential backoff with jitter, shared by the vast.ai client, the watcher
 * loop and (later) SSH reconnects. Pure: randomness is injected, so tests get
 * exact delays with `random: () => 0`.
 */

/** How a backoff sequence grows. */
export interface BackoffOptions {
  /** Delay of the first retry (attempt 0), ms. */
  baseMs: number;
  /** Upper bound of the un-jittered delay, ms. */
  maxMs: number;
  /** Source of randomness in [0, 1); default `Math.random`. */
  random?: () => number;
  /**
   * Share of the delay that jitter may remove, in [0, 1]; default 0.5, so a
   * delay lands in [cap/2, cap]. Some jitter spreads out clients that failed
   * together (vast.ai's own clients do the same); keeping half of it keeps the
   * backoff meaningful, unlike "full jitter" which can retry at once.
   */
  jitter?: number;
}

/**
 * Delay before retry number `attempt` (0-based): `min(maxMs, baseMs * 2^attempt)`,
 * reduced by up to `jitter` of itself at random. Never negative.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions): number {
  const { baseMs, maxMs, random = Math.random, jitter = 0.5 } = opts;
  // Cap the exponent so huge attempt counts cannot overflow to Infinity/NaN.
  const exp = baseMs * 2 ** Math.min(Math.max(0, attempt), 52);
  const capped = Math.min(maxMs, exp);
  const share = Math.min(1, Math.max(0, jitter));
  const r = Math.min(1, Math.max(0, random()));
  return Math.max(0, Math.round(capped * (1 - share * r)));
}
