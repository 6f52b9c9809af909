/**
 * One vast.ai instance as a proxy backend. `Backend` is the single owner of
 * everything mutable about it: its tunnel, health verdict, model list, GPU
 * metrics, request counters and lifecycle state (STYLE.md rule 8). Routing
 * sees it through `RouteTarget`; everyone else reads `snapshot()` or listens
 * to its events.
 *
 * The loops follow rule 10: `probeOnce()`, `gpuOnce()` and `metricsOnce()` are single steps
 * that tests call directly; `startLoops(signal)` merely repeats them on the
 * injected clock.
 */
import type { Clock } from "../core/clock.ts";
import { errorText } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Tunnel, TunnelEvent, TunnelFactory } from "../tunnel/tunnel.ts";
import {
  type BackendSpec,
  connectionKey,
  type Engine,
  type SshPath,
} from "../core/backend_spec.ts";
import type { Http1Request, Http1Response } from "../http1/types.ts";
import { Http1Error } from "../http1/types.ts";
import type { Upgraded } from "../http1/upgrade.ts";
import type { RequestOutcome, RouteTarget } from "./pool.ts";
import type { BackendSnapshot, BackendState, GpuMetrics } from "./snapshot.ts";
import {
  applyProbe,
  applyTunnelEvent,
  type BackendEvent,
  type BackendStatus,
  deriveState,
  INITIAL_INPUTS,
  initialStatus,
  type StateInputs,
  transition,
} from "./backend_state.ts";
import { type HistogramData, LatencyHistogram } from "./histogram.ts";
import {
  DEFAULT_HEALTH_TIMEOUT_MS,
  type GpuProbe,
  probeModels,
  readGpus,
  type Sender,
} from "./health.ts";
import { maxModelLens, type ModelEntry } from "./models.ts";
import { type EngineLoadView, EngineScraper } from "./engine_scrape.ts";
import { type LlmModelData, type LlmSample, LlmStats } from "./llm_stats.ts";

export type { BackendEvent } from "./backend_state.ts";
export type { GpuProbe, GpuResult } from "./health.ts";

/** Collaborators of a `Backend`. */
export interface BackendDeps {
  tunnelFactory: TunnelFactory;
  clock: Clock;
  logger: Logger;
  /** Time between health checks (and GPU reads). */
  healthIntervalMs: number;
  /** Active-check timeout; default 5000 ms. */
  healthTimeoutMs?: number;
  /** GPU metrics reader; without it no metrics are collected. */
  gpuProbe?: GpuProbe;
  /** Receives state and path events, in order. */
  onEvent?: (event: BackendEvent) => void;
}

/** The owner of one instance's tunnel, health, counters and state. */
export class Backend implements RouteTarget {
  /** vast.ai instance id. */
  readonly id: number;
  #spec: BackendSpec;
  #deps: BackendDeps;
  #status: BackendStatus;
  // What the state is derived from; replaced whole through `#update()`.
  #inputs: StateInputs = INITIAL_INPUTS;
  #tunnel: Tunnel | undefined;
  #unsubscribe: (() => void) | undefined;
  #path: SshPath | null = null;
  // Bumped on every tunnel event so a probe that started on an older
  // connection cannot decide the health of the new one.
  #epoch = 0;
  #models: readonly string[] = Object.freeze([]);
  #modelEntries: readonly ModelEntry[] = Object.freeze([]);
  // The engine's list was cut (see models.ts); warned once per backend, not per check.
  #modelsCapLogged = false;
  #gpus: readonly GpuMetrics[] = Object.freeze([]);
  #gpuStale = false;
  #inFlight = 0;
  #requests = 0;
  #errors = 0;
  #histogram = new LatencyHistogram();
  #engineScraper: EngineScraper;
  #llm = new LlmStats();
  #probing: Promise<void> | undefined;
  #probeQueued = false;
  #idle: PromiseWithResolvers<void> | undefined;
  #life = new AbortController();
  #closing: Promise<void> | undefined;

  /** A backend for `spec`; nothing happens until `start()`. */
  constructor(spec: BackendSpec, deps: BackendDeps) {
    this.id = spec.id;
    this.#spec = spec;
    this.#deps = deps;
    this.#status = initialStatus(deps.clock.now());
    this.#engineScraper = new EngineScraper({
      id: spec.id,
      clock: deps.clock,
      logger: deps.logger,
      intervalMs: deps.healthIntervalMs,
    });
  }

  /** Requests currently running through this backend. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Requests finished through this backend so far. */
  get requests(): number {
    return this.#requests;
  }

  /** Models from the last successful health check. */
  get models(): readonly string[] {
    return this.#models;
  }

  /** The engine's entries for `models` (deep-frozen), for `/v1/models`. */
  get modelEntries(): readonly ModelEntry[] {
    return this.#modelEntries;
  }

  /** Detected engine. */
  get engine(): Engine {
    return this.#spec.engine;
  }

  /** The engine's own load from its last `/metrics` scrape (frozen), or null before one worked. */
  get engineLoad(): EngineLoadView | null {
    return this.#engineScraper.load;
  }

  /** GPU model and count from the vast record, for capacity priors. */
  get gpu(): { name: string; count: number } {
    return { name: this.#spec.gpuName, count: this.#spec.numGpus };
  }

  /** Current state name. */
  get state(): BackendState {
    return this.#status.name;
  }

  /** The spec this backend was built from, as last updated. Holds the token: never log it. */
  get spec(): BackendSpec {
    return this.#spec;
  }

  /** A copy of the latency histogram, for /vastproxy/metrics. */
  histogram(): HistogramData {
    return this.#histogram.data();
  }

  /** True once removal began (`drainAndClose()`); such a backend never comes back. */
  get closing(): boolean {
    return this.#closing !== undefined;
  }

  /** True when routing may pick it: healthy, not drained, tunnel up. */
  get routable(): boolean {
    return this.#status.name === "healthy" && !this.#inputs.drained &&
      this.#inputs.tunnel === "up";
  }

  /**
   * Sends one request over the tunnel's current connection: relayed
   * traffic, health checks and abort-all all take this one path. Not sent
   * (and so safe to retry elsewhere) while the tunnel is down.
   */
  send(req: Http1Request): Promise<Http1Response> {
    const tunnel = this.#tunnel;
    if (!tunnel || this.#inputs.tunnel !== "up") return this.#notConnected();
    return tunnel.request(req);
  }

  /** Sends an upgrade request (WebSocket) over the tunnel; see `send`. */
  upgrade(req: Http1Request): Promise<Upgraded | Http1Response> {
    const tunnel = this.#tunnel;
    if (!tunnel || this.#inputs.tunnel !== "up") return this.#notConnected();
    return tunnel.upgrade(req);
  }

  #notConnected(): Promise<never> {
    return Promise.reject(
      new Http1Error(`instance ${this.id} has no SSH connection`, { sent: false }),
    );
  }

  /** The `Authorization` value every request to the instance carries (§4). */
  upstreamAuth(): string | null {
    return this.#spec.token ? `Bearer ${this.#spec.token}` : null;
  }

  /**
   * Opens the tunnel (state `connecting`). The tunnel's `verify` runs this
   * backend's own health check against a candidate path, so a direct upgrade
   * only replaces a working proxy path with another working path (§5).
   * Ineligible specs are display-only and never connect; calling twice is a no-op.
   */
  start(): void {
    if (this.#inputs.phase !== "idle" || !this.#spec.eligible || this.closing) return;
    const tunnel = this.#deps.tunnelFactory.open(this.#spec, {
      verify: async (send) => (await this.#probe(send)).ok,
    });
    this.#tunnel = tunnel;
    const s = tunnel.status();
    if (s.state === "up") this.#path = s.path;
    this.#unsubscribe = tunnel.subscribe((e) => this.#onTunnel(e));
    this.#update({ ...this.#inputs, phase: "running", tunnel: s.state, tunnelReason: s.reason });
    if (s.state === "up") this.#probeSoon();
  }

  /** Repeats `probeOnce()`, `gpuOnce()` and `metricsOnce()` every health interval until `signal` aborts or the backend closes. */
  async startLoops(signal: AbortSignal): Promise<void> {
    const stop = AbortSignal.any([signal, this.#life.signal]);
    // GPU reads run beside the health checks, at most one at a time: a slow
    // or hanging nvidia-smi must not stretch the interval at which a dead
    // engine is noticed.
    let gpu: Promise<void> | undefined;
    let metrics: Promise<void> | undefined;
    while (!stop.aborted) {
      gpu ??= this.gpuOnce().finally(() => (gpu = undefined));
      metrics ??= this.metricsOnce().finally(() => (metrics = undefined));
      await this.probeOnce();
      try {
        await this.#deps.clock.sleep(this.#deps.healthIntervalMs, stop);
      } catch {
        break; // aborted: the loop ends quietly
      }
    }
    await gpu;
    await metrics;
  }

  /**
   * One active health check. Success marks the backend healthy and refreshes
   * its models; failures count, and two in a row take it down. Joins a check
   * already running instead of starting a second one.
   */
  probeOnce(): Promise<void> {
    if (this.#probing) return this.#probing;
    this.#probing = (async () => {
      try {
        do {
          this.#probeQueued = false;
          await this.#probeStep();
        } while (this.#probeQueued && this.#inputs.phase === "running");
      } finally {
        this.#probing = undefined;
      }
    })();
    return this.#probing;
  }

  /** One GPU read. A failure only marks the metrics stale; tunnel and state are untouched (§5). */
  async gpuOnce(): Promise<void> {
    const probe = this.#deps.gpuProbe;
    const tunnel = this.#tunnel;
    if (!probe || !tunnel || this.#inputs.phase !== "running") return;
    if (this.#inputs.tunnel !== "up") {
      this.#gpuStale = this.#gpus.length > 0; // old numbers from a lost connection
      return;
    }
    const result = await readGpus(probe, tunnel, this.#timeoutMs());
    if (result.ok) {
      this.#gpus = Object.freeze(result.gpus.map((g) => Object.freeze({ ...g })));
      this.#gpuStale = false;
      return;
    }
    // Logged once per stale period, not once per interval.
    if (!this.#gpuStale) {
      this.#deps.logger.log("warn", "GPU metrics unavailable", {
        id: this.id,
        error: result.error,
      });
    }
    this.#gpuStale = true;
  }

  /**
   * One engine-metrics scrape (`GET /metrics` through the tunnel). Like
   * `gpuOnce()`, a failure only marks the load stale; an engine that does not
   * serve metrics is asked less and less often (engine_scrape.ts).
   */
  async metricsOnce(): Promise<void> {
    if (this.#inputs.phase !== "running" || !this.#tunnel) return;
    if (this.#inputs.tunnel !== "up") return this.#engineScraper.markStale();
    await this.#engineScraper.once((req) => this.send(req), {
      engine: this.#spec.engine,
      token: this.#spec.token,
      timeoutMs: this.#timeoutMs(),
      signal: this.#life.signal,
    });
  }

  /**
   * Records what the relay saw of one completion. The model label is the
   * request's model when this backend serves it, else its only model, else
   * `other`: labels stay within the engine's own list, whatever clients send.
   */
  recordLlm(sample: LlmSample): void {
    const m = sample.model;
    const label = m !== null && this.#models.includes(m)
      ? m
      : this.#models.length === 1
      ? this.#models[0]
      : "other";
    this.#llm.record(label, sample);
  }

  /** LLM metrics per model label, for /vastproxy/metrics. */
  llmData(): Map<string, LlmModelData> {
    return this.#llm.data();
  }

  /**
   * Counts a request as started. The returned function ends it: it
   * decrements in-flight exactly once (later calls are ignored), counts the
   * request, counts an error for 5xx or a transport failure — never for a
   * client that went away (rule 13) — and records latency of real responses.
   * A transport failure triggers a passive health check at once (§6).
   */
  acquire(): (outcome: RequestOutcome) => void {
    this.#inFlight++;
    let released = false;
    return (outcome) => {
      if (released) return;
      released = true;
      this.#inFlight--;
      this.#requests++;
      if (!outcome.clientCancelled) {
        if (outcome.transportError || (outcome.status !== null && outcome.status >= 500)) {
          this.#errors++;
        }
        if (outcome.status !== null) this.#histogram.observe(outcome.latencyMs);
        // Debounced: a burst of failures shares the one check already running.
        if (outcome.transportError && !this.#probing && this.#inputs.phase === "running") {
          void this.probeOnce();
        }
      }
      if (this.#inFlight === 0) this.#idle?.resolve();
    };
  }

  /** Manual drain (`x`): a drained backend takes no traffic but keeps being checked. */
  setDrained(drained: boolean): void {
    this.#update({ ...this.#inputs, drained });
  }

  /** Drops the SSH connection and reconnects now (`r`). */
  reconnect(): void {
    this.#tunnel?.reconnect();
  }

  /**
   * Updates display fields (label, vast status, price, names) in place. The
   * fleet rebuilds instead when connection details or eligibility change, so
   * this refuses such a spec rather than silently keep a stale connection.
   */
  updateSpec(spec: BackendSpec): void {
    if (
      spec.id !== this.id || connectionKey(spec) !== connectionKey(this.#spec) ||
      spec.eligible !== this.#spec.eligible
    ) {
      throw new Error(`Cannot update backend ${this.id} in place: connection changed; rebuild it`);
    }
    this.#spec = spec;
  }

  /**
   * Removes the backend gracefully: state `draining`, wait until in-flight
   * requests end or `timeoutMs` passes, then close the tunnel → `removed`.
   * Idempotent: later calls share the first one's promise.
   */
  drainAndClose(timeoutMs: number): Promise<void> {
    this.#closing ??= this.#drainAndClose(timeoutMs);
    return this.#closing;
  }

  async #drainAndClose(timeoutMs: number): Promise<void> {
    // Health no longer matters: stop the loops and ignore late probe results.
    this.#life.abort();
    if (this.#inputs.phase === "running") {
      this.#update({ ...this.#inputs, phase: "closing" });
      await this.#waitIdle(timeoutMs);
    }
    this.#unsubscribe?.();
    const tunnel = this.#tunnel;
    if (tunnel) {
      try {
        // This backend counted every request it relayed, so once in-flight is 0
        // (or the drain deadline passed) only idle keep-alive sockets remain:
        // a graceful forward drain would just wait out their idle timer and
        // make every shutdown seconds slower.
        await tunnel.close({ graceful: false });
      } catch (err) {
        this.#deps.logger.log("warn", "closing tunnel failed", {
          id: this.id,
          error: errorText(err),
        });
      }
    }
    this.#update({ ...this.#inputs, phase: "closed", tunnel: tunnel ? "closed" : null });
  }

  /** A frozen view for status, metrics and the UI. Carries no token. */
  snapshot(): BackendSnapshot {
    const s = this.#spec;
    const up = this.#inputs.tunnel === "up";
    const ts = this.#tunnel?.status();
    return Object.freeze({
      id: this.id,
      name: s.displayName,
      state: this.#status.name,
      stateSince: this.#status.since,
      reason: this.#status.reason,
      vastStatus: s.status,
      ssh: up ? this.#path : null,
      endpoint: ts?.endpoint ?? null,
      engine: s.engine,
      models: [...this.#models],
      maxModelLen: maxModelLens(this.#modelEntries),
      port: s.remotePort,
      gpuLabel: s.gpuLabel,
      inFlight: this.#inFlight,
      requests: this.#requests,
      errors: this.#errors,
      latencyMs: Object.freeze({
        p50: this.#histogram.quantile(0.5),
        p99: this.#histogram.quantile(0.99),
      }),
      gpus: this.#gpus.map((g) => ({ ...g })),
      gpuStale: this.#gpuStale,
      engineLoad: this.#engineScraper.snapshot(),
      llm: this.#llm.snapshot(),
      dph: s.dph,
      drained: this.#inputs.drained,
    });
  }

  #onTunnel(e: TunnelEvent): void {
    if (this.#inputs.phase !== "running") return;
    this.#epoch++;
    if (e.type === "up") {
      const before = this.#path;
      this.#path = e.path;
      if (before !== null && before !== e.path) {
        this.#emit({ type: "path", id: this.id, from: before, to: e.path });
      }
    }
    this.#update(applyTunnelEvent(this.#inputs, e));
    // Don't wait an interval to take traffic again.
    if (e.type === "up") this.#probeSoon();
  }

  /** Runs a check now, or right after the one in progress (its result may be stale). */
  #probeSoon(): void {
    if (this.#probing) this.#probeQueued = true;
    else void this.probeOnce();
  }

  async #probeStep(): Promise<void> {
    if (this.#inputs.phase !== "running") return;
    const tunnel = this.#tunnel;
    if (!tunnel || this.#inputs.tunnel !== "up") return; // the tunnel state already says why
    const epoch = this.#epoch;
    const result = await this.#probe((req) => tunnel.request(req));
    if (epoch !== this.#epoch || this.#inputs.phase !== "running") return;
    if (result.ok) {
      this.#models = result.models;
      this.#modelEntries = result.entries;
      if (result.capped && !this.#modelsCapLogged) {
        this.#modelsCapLogged = true;
        this.#deps.logger.log("warn", "model list capped", { id: this.id, reason: result.capped });
      }
    }
    this.#update(applyProbe(this.#inputs, result));
  }

  #probe(send: Sender) {
    return probeModels(send, {
      token: this.#spec.token,
      clock: this.#deps.clock,
      timeoutMs: this.#timeoutMs(),
      signal: this.#life.signal,
    });
  }

  #timeoutMs(): number {
    return this.#deps.healthTimeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  }

  /** Replaces the inputs, re-derives the state and reports a real change. */
  #update(inputs: StateInputs): void {
    this.#inputs = inputs;
    const target = deriveState(inputs);
    const from = this.#status.name;
    const { status, changed } = transition(this.#status, target, this.#deps.clock.now());
    this.#status = status;
    if (!changed) return;
    const level = status.name === "unhealthy" || status.name === "hostkey-mismatch"
      ? "warn"
      : "info";
    this.#deps.logger.log(level, `backend ${status.name}`, {
      id: this.id,
      from,
      reason: status.reason ?? undefined,
    });
    this.#emit({ type: "state", id: this.id, from, to: status.name, reason: status.reason });
  }

  #emit(event: BackendEvent): void {
    try {
      this.#deps.onEvent?.(event);
    } catch (err) {
      // A listener's bug must not break the owner's bookkeeping.
      this.#deps.logger.log("error", "backend event listener failed", {
        id: this.id,
        error: errorText(err),
      });
    }
  }

  /** Resolves when in-flight reaches 0 (see `acquire`) or `timeoutMs` passes. */
  async #waitIdle(timeoutMs: number): Promise<void> {
    if (this.#inFlight === 0 || timeoutMs <= 0) return;
    this.#idle = Promise.withResolvers<void>();
    const timer = new AbortController();
    const timedOut = this.#deps.clock.sleep(timeoutMs, timer.signal).then(() => true, () => false);
    if (await Promise.race([this.#idle.promise.then(() => false), timedOut])) {
      this.#deps.logger.log("warn", "drain timed out with requests in flight", {
        id: this.id,
        inFlight: this.#inFlight,
      });
    }
    timer.abort();
  }
}
