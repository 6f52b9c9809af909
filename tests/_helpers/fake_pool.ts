/**
 * A `Pool` of fake `RouteTarget`s for relay and policy tests. Targets point
 * at fake engines (or at nothing) on 127.0.0.1 and record every
 * acquire/release, so tests can assert "released exactly once, with this
 * outcome" without a real backend.
 */
import type { EngineLoad, Pool, RequestOutcome, RouteTarget } from "../../lib/proxy/pool.ts";
import type { BackendSnapshot, StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import type { Engine } from "../../lib/core/backend_spec.ts";
import type { Http1Client } from "../../lib/http1/client.ts";
import { Http1Error, type Http1Request, type Http1Response } from "../../lib/http1/types.ts";
import type { Upgraded } from "../../lib/http1/upgrade.ts";
import { portOf, tcpHttp1Client } from "./tcp_client.ts";
import type { ModelEntry } from "../../lib/proxy/models.ts";
import { createHandler, type Handler, type RelayDeps } from "../../lib/proxy/relay.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";

/** Options of a fake target. */
export interface FakeTargetOptions {
  models?: string[];
  /** The engine's entries for `models`; when absent the target has none (bare ids). */
  modelEntries?: ModelEntry[];
  engine?: Engine;
  baseUrl?: string;
  /** Value returned by `upstreamAuth()` (the contract's full header value). */
  auth?: string | null;
  inFlight?: number;
  routable?: boolean;
  /** The engine's reported load (metrics), when the test gives one. */
  engineLoad?: EngineLoad | null;
  /** GPU class and count. */
  gpu?: { name: string; count: number };
}

/** A RouteTarget whose fields tests may change at will. */
export class FakeTarget implements RouteTarget {
  readonly id: number;
  models: string[];
  modelEntries: ModelEntry[] | undefined;
  engine: Engine;
  url: string | undefined;
  auth: string | null;
  routable: boolean;
  /** Extra in-flight load added by the test (on top of live acquisitions). */
  baseLoad: number;
  /** The engine's reported load; tests change it at will. */
  engineLoad: EngineLoad | null | undefined;
  /** GPU class and count. */
  gpu: { name: string; count: number } | undefined;
  #live = 0;
  /** Number of `acquire()` calls. */
  acquires = 0;
  /** Every release, in order. */
  readonly outcomes: RequestOutcome[] = [];
  /** Releases called more than once for the same acquisition (must stay 0). */
  doubleReleases = 0;
  #waiters: (() => void)[] = [];
  #client: Http1Client | undefined;
  #clientUrl: string | undefined;
  /** When set, answers `send()` instead of the engine at `url` (a scripted engine). */
  sender: ((req: Http1Request) => Promise<Http1Response>) | undefined;

  /** A target with id `id`. */
  constructor(id: number, opts: FakeTargetOptions = {}) {
    this.id = id;
    this.models = opts.models ?? opts.modelEntries?.map((e) => e.id) ?? ["fake-model"];
    this.modelEntries = opts.modelEntries;
    this.engine = opts.engine ?? "vllm";
    this.url = opts.baseUrl;
    this.auth = opts.auth ?? null;
    this.routable = opts.routable ?? true;
    this.baseLoad = opts.inFlight ?? 0;
    this.engineLoad = opts.engineLoad;
    this.gpu = opts.gpu;
  }

  /** Requests in flight (test load plus live ones). */
  get inFlight(): number {
    return this.baseLoad + this.#live;
  }

  /** The configured base URL. */
  baseUrl(): string | undefined {
    return this.url;
  }

  /** Streams opened to the engine so far (0 before the first request). */
  get channelsOpened(): number {
    return this.#client?.stats().opened ?? 0;
  }

  /**
   * Sends through the production HTTP/1.1 client over TCP to `url`'s port;
   * rejects as "not sent" when the target has no URL (a tunnel that is down).
   */
  send(req: Http1Request): Promise<Http1Response> {
    if (this.sender) return this.sender(req);
    if (!this.url) {
      return Promise.reject(new Http1Error(`instance ${this.id} has no tunnel`, { sent: false }));
    }
    if (this.#client === undefined || this.#clientUrl !== this.url) {
      this.#client?.close();
      this.#client = tcpHttp1Client(portOf(this.url));
      this.#clientUrl = this.url;
    }
    return this.#client.request(req);
  }

  /** Upgrade requests go to the engine at `url` through the production client. */
  upgrade(req: Http1Request): Promise<Upgraded | Http1Response> {
    if (!this.url) {
      return Promise.reject(new Http1Error(`instance ${this.id} has no tunnel`, { sent: false }));
    }
    if (this.#client === undefined || this.#clientUrl !== this.url) {
      this.#client?.close();
      this.#client = tcpHttp1Client(portOf(this.url));
      this.#clientUrl = this.url;
    }
    return this.#client.upgrade(req);
  }

  /** Closes the target's engine connections. */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  /** The configured Authorization value. */
  upstreamAuth(): string | null {
    return this.auth;
  }

  /** Counts a request; the returned release records its outcome. */
  acquire(): (outcome: RequestOutcome) => void {
    this.acquires++;
    this.#live++;
    let done = false;
    return (outcome) => {
      if (done) {
        this.doubleReleases++;
        return;
      }
      done = true;
      this.#live--;
      this.outcomes.push(outcome);
      for (const w of this.#waiters.splice(0)) w();
    };
  }

  /** Resolves once `n` releases have been recorded. */
  async released(n = 1, timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.outcomes.length < n) {
      if (Date.now() > deadline) {
        throw new Error(`target ${this.id}: no release within ${timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 10);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

/** A Pool over fake targets. */
export class FakePool implements Pool {
  readonly targets: FakeTarget[];

  /** A pool holding `targets`. */
  constructor(targets: FakeTarget[]) {
    this.targets = targets;
  }

  /** Targets flagged routable. */
  routable(): RouteTarget[] {
    return this.targets.filter((t) => t.routable);
  }

  /** A target by id. */
  get(id: number): RouteTarget | undefined {
    return this.targets.find((t) => t.id === id);
  }

  /** Minimal snapshots of every target. */
  snapshots(): BackendSnapshot[] {
    return this.targets.map((t) =>
      backendSnapshot({
        id: t.id,
        state: t.routable ? "healthy" : "unhealthy",
        models: [...t.models],
        inFlight: t.inFlight,
      })
    );
  }
}

/** A complete BackendSnapshot with test defaults, overridden by `over`. */
export function backendSnapshot(over: Partial<BackendSnapshot> & { id: number }): BackendSnapshot {
  return {
    name: `${over.id} RTX 4090`,
    state: "healthy",
    stateSince: 1_700_000_000_000,
    reason: null,
    vastStatus: "running",
    ssh: "direct",
    endpoint: "203.0.113.7:40022",
    engine: "vllm",
    models: ["fake-model"],
    port: 18000,
    gpuLabel: "RTX 4090",
    inFlight: 0,
    requests: 0,
    errors: 0,
    latencyMs: { p50: null, p99: null },
    gpus: [],
    gpuStale: false,
    dph: 0.4,
    drained: false,
    ...over,
  };
}

/** A StatusSnapshot over `backends` with counts derived from them. */
export function statusSnapshot(backends: BackendSnapshot[]): StatusSnapshot {
  return {
    version: "0.1.0",
    listen: "127.0.0.1:8080",
    policy: "least-inflight",
    time: 1_700_000_100_000,
    startedAt: 1_700_000_000_000,
    counts: {
      total: backends.length,
      healthy: backends.filter((b) => b.state === "healthy").length,
      inFlight: backends.reduce((s, b) => s + b.inFlight, 0),
      requests: backends.reduce((s, b) => s + b.requests, 0),
      errors: backends.reduce((s, b) => s + b.errors, 0),
    },
    dph: backends.reduce((s, b) => s + (b.dph ?? 0), 0),
    apiError: null,
    backends,
  };
}

/**
 * The relay over `targets` as the engine-facing tests run it: least-inflight,
 * no sticky header, no auth token, 1 MiB bodies. `extra` adds deps (a log
 * sink) or overrides these.
 */
export function relayOver(targets: FakeTarget[], extra: Partial<RelayDeps> = {}): Handler {
  return createHandler({
    pool: new FakePool(targets),
    policy: createPolicy("least-inflight"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1 << 20,
    ...extra,
  });
}

/** A base URL on 127.0.0.1 where nothing listens (bound, then closed). */
export function closedPortUrl(): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `http://127.0.0.1:${port}`;
}

/**
 * Polls `cond` every 5 ms until true; throws once `timeoutMs` passes. It
 * throws rather than returning false so a caller that forgets to assert the
 * result still fails (it resolves to `true` for callers that do assert it).
 */
export async function eventually(cond: () => boolean, timeoutMs = 1000): Promise<true> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`condition still false after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return true;
}
