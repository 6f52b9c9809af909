/**
 * The set of backends, kept in step with the vast.ai watcher's diffs. `Fleet`
 * is the one consumer of those diffs (STYLE.md rule 11): it applies them in
 * order, one at a time, creating, updating in place, rebuilding or removing
 * `Backend`s. Each backend still owns its own state; the fleet only decides
 * which backends exist.
 */
import type { BackendSpec } from "../core/backend_spec.ts";
import type { FleetDiff } from "../core/fleet_diff.ts";
import { connectionKey } from "../core/backend_spec.ts";
import type { Pool, RouteTarget } from "./pool.ts";
import type { BackendSnapshot, ListenerLimits, QueueStatus, StatusSnapshot } from "./snapshot.ts";
import { Backend, type BackendDeps, type BackendEvent } from "./backend.ts";
import type { HistogramData } from "./histogram.ts";
import type { LlmModelData } from "./llm_stats.ts";
import { errorText } from "../core/errors.ts";

/** Collaborators of a `Fleet`: everything each backend needs, plus drain timing. */
export interface FleetDeps extends BackendDeps {
  /** How long a removed or rebuilt backend's requests may finish (default 30 000 ms). */
  drainTimeoutMs?: number;
}

/** The process-level fields of a status snapshot that the fleet does not know. */
export interface StatusExtra {
  version: string;
  listen: string;
  policy: string;
  startedAt: number;
  apiError: string | null;
  limits?: ListenerLimits;
  queue?: QueueStatus;
}

const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/** True when each backend still has the model list it had in `lists` (same order). */
function sameModels(backends: readonly Backend[], lists: readonly (readonly string[])[]): boolean {
  for (let i = 0; i < backends.length; i++) if (backends[i].models !== lists[i]) return false;
  return true;
}

/** All backends, keyed by instance id. Implements the routing `Pool`. */
export class Fleet implements Pool {
  #deps: FleetDeps;
  #backends = new Map<number, Backend>();
  // Backends on their way out (removed or replaced by a rebuild), so that
  // `drainAll` can wait for them too.
  #retiring = new Set<Promise<void>>();
  /** Backends out of the map that still drain: their streams are still traffic. */
  #draining = new Set<Backend>();
  #queue: Promise<void> = Promise.resolve();
  #life = new AbortController();
  #closed = false;
  // Caches for routing, which asks on every request (see #sorted, knownModels).
  #sortedCache: readonly Backend[] | null = null;
  #known: {
    backends: readonly Backend[];
    lists: readonly (readonly string[])[];
    models: ReadonlySet<string>;
  } | null = null;

  /** An empty fleet; backends arrive through `apply()`. */
  constructor(deps: FleetDeps) {
    this.#deps = deps;
  }

  /**
   * Applies one watcher diff. Diffs are queued and applied strictly in order;
   * the promise resolves once this one is applied (drains of removed
   * backends continue in the background and never block the next diff).
   */
  apply(diff: FleetDiff): Promise<void> {
    const run = this.#queue.then(() => this.#apply(diff));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Backends that may take traffic now, in id order (stable for round-robin). */
  routable(): Backend[] {
    return this.#sorted().filter((b) => b.routable);
  }

  /** A backend by id, whatever its state. */
  get(id: number): RouteTarget | undefined {
    return this.#backends.get(id);
  }

  /** The owning `Backend` (for UI actions: drain, reconnect). */
  backend(id: number): Backend | undefined {
    return this.#backends.get(id);
  }

  /** The instance's current vast label, or undefined when unknown to the fleet. */
  labelOf(id: number): string | null | undefined {
    return this.#backends.get(id)?.spec.label;
  }

  /** Models of every backend the fleet still has, whatever its state. */
  knownModels(): ReadonlySet<string> {
    // Asked on every request, while the answer changes only with the
    // backends or their (frozen, replaced-not-edited) model lists: reused
    // while both are the very same objects as when it was built.
    const sorted = this.#sorted();
    const known = this.#known;
    if (known && known.backends === sorted && sameModels(sorted, known.lists)) return known.models;
    const models = new Set<string>();
    for (const b of this.#backends.values()) for (const m of b.models) models.add(m);
    this.#known = { backends: sorted, lists: sorted.map((b) => b.models), models };
    return models;
  }

  /** Frozen views of every backend (including display-only ones), sorted by id. */
  snapshots(): BackendSnapshot[] {
    return this.#sorted().map((b) => b.snapshot());
  }

  /** Copies of each backend's latency histogram by instance id, for /vastproxy/metrics. */
  histograms(): Map<number, HistogramData> {
    return new Map([...this.#backends].map(([id, b]) => [id, b.histogram()]));
  }

  /**
   * Requests relayed so far and being relayed now, over every backend,
   * those still draining after a rebuild or removal included (cheaper than
   * `status()`; for the idle collector).
   */
  traffic(): { finished: number; inFlight: number } {
    let finished = 0, inFlight = 0;
    for (const b of new Set([...this.#backends.values(), ...this.#draining])) {
      finished += b.requests;
      inFlight += b.inFlight;
    }
    return { finished, inFlight };
  }

  /** LLM metrics per instance id and model label, for /vastproxy/metrics. */
  llmData(): Map<number, Map<string, LlmModelData>> {
    return new Map([...this.#backends].map(([id, b]) => [id, b.llmData()]));
  }

  /** The whole proxy's status: counts and $/h summed over the backends shown. */
  status(extra: StatusExtra): StatusSnapshot {
    const backends = this.snapshots();
    let healthy = 0, inFlight = 0, requests = 0, errors = 0, dph = 0;
    for (const b of backends) {
      if (b.state === "healthy") healthy++;
      inFlight += b.inFlight;
      requests += b.requests;
      errors += b.errors;
      dph += b.dph ?? 0;
    }
    return Object.freeze({
      ...extra,
      time: this.#deps.clock.now(),
      counts: Object.freeze({ total: backends.length, healthy, inFlight, requests, errors }),
      dph,
      backends,
    });
  }

  /**
   * Shutdown: stops applying diffs, drains every backend (in-flight requests
   * may finish for up to `timeoutMs`) and closes every tunnel.
   */
  async drainAll(timeoutMs: number): Promise<void> {
    this.#closed = true;
    await this.#queue; // let a diff being applied finish, so nothing starts after this
    const all = [...this.#backends.values()].map((b) => this.#retire(b, timeoutMs));
    this.#life.abort();
    await Promise.all([...all, ...this.#retiring]);
  }

  #apply(diff: FleetDiff): void {
    if (this.#closed) return;
    for (const spec of diff.removed) {
      const b = this.#backends.get(spec.id);
      if (b) this.#retire(b, this.#drainTimeout());
    }
    for (const { after } of [...diff.changed, ...diff.updated]) this.#change(after);
    // An id we already hold is a change we missed, not a second backend.
    for (const spec of diff.added) this.#change(spec);
  }

  /**
   * Compares with the spec the backend actually runs on, not the diff's
   * `before`: what matters is whether the live connection is still right.
   */
  #change(after: BackendSpec): void {
    const current = this.#backends.get(after.id);
    if (current?.closing) {
      // Back while its old backend still drains (removed, then listed again):
      // let the old one finish on its own and start afresh.
      this.#remove(after.id);
      return this.#add(after);
    }
    if (!current) return this.#add(after);
    if (
      connectionKey(current.spec) === connectionKey(after) &&
      current.spec.eligible === after.eligible
    ) {
      current.updateSpec(after);
      return;
    }
    // Rebuild: the new backend takes the id at once; the old one leaves the
    // map (so routing stops picking it) and drains in the background while
    // its requests finish. Other backends are untouched.
    this.#deps.logger.log("info", "rebuilding backend: connection details changed", {
      id: after.id,
    });
    this.#remove(after.id);
    const from = current.state;
    this.#retire(current, this.#drainTimeout());
    const fresh = this.#create(after);
    // The old backend's own events are muted once replaced; tell listeners
    // the id starts over, so e.g. marks clear a label a dead connection holds.
    this.#forward(fresh, {
      type: "state",
      id: after.id,
      from,
      to: fresh.state,
      reason: "rebuilt: connection details changed",
    });
    fresh.start();
    if (after.eligible) void fresh.startLoops(this.#life.signal);
  }

  #add(spec: BackendSpec): void {
    const b = this.#create(spec);
    b.start();
    if (spec.eligible) void b.startLoops(this.#life.signal);
  }

  #create(spec: BackendSpec): Backend {
    const b: Backend = new Backend(spec, {
      ...this.#deps,
      onEvent: (e) => this.#forward(b, e),
    });
    this.#backends.set(spec.id, b);
    this.#sortedCache = null;
    return b;
  }

  /** Passes on events of the backend currently holding the id only. */
  #forward(b: Backend, e: BackendEvent): void {
    if (this.#backends.get(b.id) !== b) return;
    try {
      this.#deps.onEvent?.(e);
    } catch (err) {
      this.#deps.logger.log("error", "fleet event listener failed", {
        id: b.id,
        error: errorText(err),
      });
    }
  }

  /** Drains and closes `b`, then drops it from the map if it still holds the id. */
  #retire(b: Backend, timeoutMs: number): Promise<void> {
    this.#draining.add(b);
    const done = b.drainAndClose(timeoutMs).then(() => {
      if (this.#backends.get(b.id) === b) this.#remove(b.id);
    });
    this.#retiring.add(done);
    void done.finally(() => {
      this.#retiring.delete(done);
      this.#draining.delete(b);
    });
    return done;
  }

  /** Backends sorted by id. Shared between calls: callers copy before changing it. */
  #sorted(): readonly Backend[] {
    // Routing asks on every request; the set only changes through #create and #remove.
    return this.#sortedCache ??= [...this.#backends.values()].sort((a, b) => a.id - b.id);
  }

  #remove(id: number): void {
    this.#backends.delete(id);
    this.#sortedCache = null;
  }

  #drainTimeout(): number {
    return this.#deps.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
  }
}
