/**
 * What an SSH tunnel's loop does next, as a pure function of where it
 * stands. `SshTunnel.stepOnce()` performs one such step; its loop merely
 * repeats it. Tests drive `stepOnce()` on a fake clock with a fake
 * connector, as the watcher's tests drive `pollOnce()`.
 */
import type { SshPath } from "../core/backend_spec.ts";
import { backoffDelay } from "../core/backoff.ts";

/** The loop's inputs. */
export interface TunnelLoopState {
  /** close() was called. */
  closed: boolean;
  /** The last attempt met a changed host key: stop until reconnect(). */
  mismatch: boolean;
  /** Path of the live connection, or null when there is none. */
  livePath: SshPath | null;
  /** The instance has a direct endpoint to upgrade to. */
  hasDirect: boolean;
  /** A direct endpoint offered a different host key: never upgrade. */
  directDisabled: boolean;
  /** Reconnect attempts since the last long-lived connection (the backoff exponent). */
  attempt: number;
  /** Connect now, without backoff (first connect, or reconnect() asked for it). */
  immediate: boolean;
}

/** Timing of the loop, ms. */
export interface TunnelLoopTiming {
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** How often a proxied tunnel tries its direct endpoint. */
  directRetryMs: number;
  random: () => number;
}

/** One step of the loop. */
export type TunnelStep =
  /** Closed, or refused by a host-key mismatch: the loop ends. */
  | { kind: "stop" }
  /** Up on the best path there is: wait until something changes. */
  | { kind: "wait" }
  /** Up on vast's proxy with a direct endpoint: try direct after `delayMs`. */
  | { kind: "upgrade"; delayMs: number }
  /** Down: connect after `delayMs` (0: now). */
  | { kind: "connect"; delayMs: number };

/** Decides the next step; pure, so every branch is tested alone. */
export function nextTunnelStep(s: TunnelLoopState, t: TunnelLoopTiming): TunnelStep {
  if (s.closed || s.mismatch) return { kind: "stop" };
  if (s.livePath !== null) {
    return s.livePath === "proxy" && s.hasDirect && !s.directDisabled
      ? { kind: "upgrade", delayMs: t.directRetryMs }
      : { kind: "wait" };
  }
  if (s.immediate) return { kind: "connect", delayMs: 0 };
  const delayMs = backoffDelay(s.attempt, {
    baseMs: t.backoffBaseMs,
    maxMs: t.backoffMaxMs,
    random: t.random,
  });
  return { kind: "connect", delayMs };
}
