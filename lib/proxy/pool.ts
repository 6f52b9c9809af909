/**
 * The seam between routing (policies.ts, relay.ts) and backend ownership
 * (backend.ts, fleet.ts). The relay sees backends only through `RouteTarget`
 * and the fleet only through `Pool`; neither reaches into SSH or health
 * internals.
 */
import type { Engine } from "../core/backend_spec.ts";
import type { Http1Request, Http1Response } from "../http1/types.ts";
import type { Upgraded } from "../http1/upgrade.ts";
import type { ModelEntry } from "./models.ts";
import type { EngineLoad } from "./engine_metrics.ts";
import type { LlmSample } from "./llm_stats.ts";
import type { BackendSnapshot } from "./snapshot.ts";

export type { EngineLoad } from "./engine_metrics.ts";

/** Outcome of one proxied request, for counters and passive health. */
export interface RequestOutcome {
  /** HTTP status from the instance, or null when no response arrived. */
  status: number | null;
  /** Time from dispatch to the end of the response body, ms. */
  latencyMs: number;
  /** True when the upstream transport failed (connect, reset, tunnel down). */
  transportError: boolean;
  /** True when the client went away; never counts against the backend. */
  clientCancelled: boolean;
}

/** A backend as routing sees it. Only its owner (`Backend`) mutates it. */
export interface RouteTarget {
  readonly id: number;
  /** Requests currently running through it. */
  readonly inFlight: number;
  /** Models served, from the last successful health check. */
  readonly models: readonly string[];
  /**
   * The engine's whole entries for `models` (`max_model_len`, `root`, …),
   * passed through by `GET /v1/models`; without them it lists bare ids.
   */
  readonly modelEntries?: readonly ModelEntry[];
  readonly engine: Engine;
  /**
   * The engine's own load from its last `/metrics` scrape (may carry
   * `stale: true` and `at`), or null/absent when unknown. For policies.
   */
  readonly engineLoad?: EngineLoad | null;
  /** GPU model name and count from the vast record, for capacity priors. */
  readonly gpu?: { readonly name: string; readonly count: number };
  /** Receives what the relay measured of one completion (TTFT, ITL, tokens). */
  recordLlm?(sample: LlmSample): void;
  /** Headers every request to the instance carries (the instance's Bearer token). */
  upstreamAuth(): string | null;
  /**
   * Sends one request to the instance over its tunnel's HTTP/1.1 client.
   * Rejects with `Http1Error` (`sent: false` only when the request provably
   * never reached the engine) or, on abort, with the signal's reason.
   */
  send(req: Http1Request): Promise<Http1Response>;
  /** Like `send`, for an upgrade request (WebSocket): the raw channel on 101. */
  upgrade(req: Http1Request): Promise<Upgraded | Http1Response>;
  /**
   * Counts a request as started; call the returned function exactly once
   * when it ends (in `finally`), with its outcome.
   */
  acquire(): (outcome: RequestOutcome) => void;
}

/** The set of backends routing can choose from. */
export interface Pool {
  /** Backends that may take traffic now: healthy, not draining, tunnel up. */
  routable(): RouteTarget[];
  /** Any backend by id, whatever its state (for diagnostics and admin). */
  get(id: number): RouteTarget | undefined;
  /**
   * Models served by any backend still in the fleet, healthy or not, so a
   * model whose only server is briefly down gets 503 rather than 404 (or, in
   * a one-model fleet, a silent pass-through to the wrong model). Optional:
   * without it, only routable backends' models count.
   */
  knownModels?(): ReadonlySet<string>;
  /** Frozen views of every backend, for status, metrics and the UI. */
  snapshots(): BackendSnapshot[];
}
