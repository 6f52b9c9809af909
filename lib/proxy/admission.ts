/**
 * Admission: when every eligible backend is saturated, hold a request in a
 * bounded FIFO in the proxy and route it when capacity frees up (issue #15
 * item 4). Routing happens at release time, not at arrival (late binding),
 * so a held request goes to whichever backend frees first instead of
 * queueing blind inside one engine. A full queue, or a wait past the
 * deadline, answers 503 `server_busy` with `Retry-After`.
 *
 * The queue wakes on every request release the relay reports (`wake()`)
 * and polls every `pollMs` as well, since an engine's own queue (from its
 * metrics) also drains through clients other than this proxy.
 */
import { type Clock, realClock } from "../core/clock.ts";
import { errorResponse } from "./errors.ts";
import { LatencyHistogram } from "./histogram.ts";
import { eligibleFor, type RouteDecision } from "./policies.ts";
import type { Pool, RouteTarget } from "./pool.ts";
import type { RouteInfo } from "./route_info.ts";

/** Options of `Admission`, with their defaults. */
export interface AdmissionOptions {
  /**
   * True when a backend cannot usefully take another request (see
   * `Policy.saturated`), counting `extra` requests routed to it that have
   * not reached its in-flight count yet.
   */
  saturated: (target: RouteTarget, extra: number) => boolean;
  /** Requests held at most (default 256); the next one gets 503. */
  maxQueue?: number;
  /** Longest a request is held, ms (default 30_000); then 503. */
  timeoutMs?: number;
  /** Re-check interval while requests are held, ms (default 250). */
  pollMs?: number;
  /** Time source (default: real clock). */
  clock?: Clock;
}

/** What `admit` answers besides a routing decision. */
export type AdmissionResult =
  | RouteDecision
  | { ok: false; code: "server_busy"; reason: "queue_full" | "timeout" }
  | { ok: false; code: "client_cancelled" };

/** Counters and gauges for /vastproxy/metrics. */
export interface AdmissionStats {
  /** Requests held now. */
  depth: number;
  /** Requests that were held at all, since start. */
  queued: number;
  /** Requests turned away because the queue was full. */
  rejected: number;
  /** Held requests that passed the deadline. */
  timedOut: number;
  /** Time held, ms, for every request that was held (routed or not). */
  waits: LatencyHistogram;
}

/** Seconds a client is told to wait before retrying a busy answer. */
export const BUSY_RETRY_AFTER_S = 2;

/** Requests routed per backend id that its in-flight count does not show yet. */
type Granted = ReadonlyMap<number, number>;
/** What a request routed outside `wake` finds granted: nothing (never written). */
const NONE_GRANTED: Granted = new Map();

interface Waiter {
  tryRoute: (granted: Granted) => RouteDecision | null;
  settle: (r: AdmissionResult) => void;
}

/** The bounded late-binding queue in front of routing. */
export class Admission {
  readonly #saturated: (t: RouteTarget, extra: number) => boolean;
  readonly #maxQueue: number;
  readonly #timeoutMs: number;
  readonly #pollMs: number;
  readonly #clock: Clock;
  readonly #queue: Waiter[] = [];
  #polling = false;
  #queued = 0;
  #rejected = 0;
  #timedOut = 0;
  readonly #waits = new LatencyHistogram();

  /** An admission queue (see `AdmissionOptions`). */
  constructor(opts: AdmissionOptions) {
    this.#saturated = opts.saturated;
    this.#maxQueue = opts.maxQueue ?? 256;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#pollMs = opts.pollMs ?? 250;
    this.#clock = opts.clock ?? realClock;
  }

  /** A snapshot of the queue's numbers. */
  stats(): AdmissionStats {
    return {
      depth: this.#queue.length,
      queued: this.#queued,
      rejected: this.#rejected,
      timedOut: this.#timedOut,
      waits: this.#waits,
    };
  }

  /**
   * Routes one attempt: at once when a non-saturated eligible backend
   * exists and nobody is queued ahead, else after waiting its turn.
   * `pick` is `pickTarget` over the given backends (it owns pin, model,
   * sticky and policy); it is only ever called with a non-empty subset.
   * `signal` may be a function giving it: it is needed only when the
   * request is held, and a request's signal can cost an object to make.
   */
  admit(
    pool: Pool,
    route: RouteInfo,
    pick: (targets: readonly RouteTarget[]) => RouteDecision,
    signal?: AbortSignal | (() => AbortSignal),
  ): Promise<AdmissionResult> | AdmissionResult {
    // FIFO: a newcomer never overtakes a held request.
    if (this.#queue.length === 0) {
      const now = this.#tryRoute(pool, route, pick, NONE_GRANTED);
      if (now) return now;
    }
    const tryRoute = (granted: Granted) => this.#tryRoute(pool, route, pick, granted);
    if (this.#queue.length >= this.#maxQueue) {
      this.#rejected++;
      return { ok: false, code: "server_busy", reason: "queue_full" };
    }
    return this.#hold(tryRoute, typeof signal === "function" ? signal() : signal);
  }

  /** The 503 for a request turned away, with `Retry-After`. */
  busyResponse(reason: "queue_full" | "timeout"): Response {
    const message = reason === "queue_full"
      ? "Every backend that can serve this request is saturated and the proxy's queue is full: " +
        "retry after the Retry-After delay, or add backends"
      : `Every backend that can serve this request stayed saturated for ${
        Math.round(this.#timeoutMs / 1000)
      } s: retry after the Retry-After delay, or add backends`;
    return errorResponse("server_busy", {
      message,
      headers: { "retry-after": String(BUSY_RETRY_AFTER_S) },
    });
  }

  /** Tries to route held requests, oldest first; the relay calls it on every release. */
  readonly wake = (): void => {
    // Called on every release; nothing held is the usual case.
    if (this.#queue.length === 0) return;
    // A released request's relay acquires its backend only after this
    // synchronous loop, so count what the loop itself hands out.
    const granted = new Map<number, number>();
    while (this.#queue.length > 0) {
      const decision = this.#queue[0].tryRoute(granted);
      if (!decision) return;
      if (decision.ok) {
        granted.set(decision.target.id, (granted.get(decision.target.id) ?? 0) + 1);
      }
      this.#queue.shift()!.settle(decision);
    }
  };

  /** A decision over the non-saturated eligible backends, or null when all are saturated. */
  #tryRoute(
    pool: Pool,
    route: RouteInfo,
    pick: (targets: readonly RouteTarget[]) => RouteDecision,
    granted: Granted,
  ): RouteDecision | null {
    const routable = pool.routable();
    // A pin is the client's explicit choice, and errors (no backend, unknown
    // model) are answered at once: neither waits.
    if (route.pinnedId !== undefined && routable.some((t) => t.id === route.pinnedId)) {
      return pick(routable);
    }
    const eligible = eligibleFor(routable, route);
    if (!eligible.ok) return pick(routable);
    const open = eligible.targets.filter((t) => !this.#saturated(t, granted.get(t.id) ?? 0));
    return open.length > 0 ? pick(open) : null;
  }

  #hold(
    tryRoute: (granted: Granted) => RouteDecision | null,
    signal?: AbortSignal,
  ): Promise<AdmissionResult> {
    this.#queued++;
    const since = this.#clock.now();
    return new Promise<AdmissionResult>((resolve) => {
      const timer = new AbortController();
      const waiter: Waiter = {
        tryRoute,
        settle: (r) => {
          timer.abort();
          signal?.removeEventListener("abort", onAbort);
          this.#waits.observe(this.#clock.now() - since);
          resolve(r);
        },
      };
      const leave = (r: AdmissionResult) => {
        const i = this.#queue.indexOf(waiter);
        if (i < 0) return;
        this.#queue.splice(i, 1);
        waiter.settle(r);
      };
      const onAbort = () => leave({ ok: false, code: "client_cancelled" });
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#queue.push(waiter);
      this.#clock.sleep(this.#timeoutMs, timer.signal).then(() => {
        if (!this.#queue.includes(waiter)) return;
        this.#timedOut++;
        leave({ ok: false, code: "server_busy", reason: "timeout" });
      }, () => {});
      if (signal?.aborted) onAbort();
      this.#poll();
    });
  }

  /** Re-checks held requests every `pollMs` while any are held. */
  #poll(): void {
    if (this.#polling) return;
    this.#polling = true;
    void (async () => {
      try {
        while (this.#queue.length > 0) {
          await this.#clock.sleep(this.#pollMs);
          this.wake();
        }
      } finally {
        this.#polling = false;
      }
    })();
  }
}
