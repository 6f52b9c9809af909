/**
 * A whole simulated vast.ai account in this process: a fake vast API listing
 * N instances, one real SSH server (ssh2) per instance with a fake
 * nvidia-smi, and one fake OpenAI engine behind each. The proxy reaches the
 * engines exactly as on vast: over SSH, forwarding to port 18000 "inside the
 * instance", which the SSH server maps to the engine's real loopback port.
 *
 * `vastproxy demo`, fleet-scale tests and the benchmark share it, so start-up
 * is parallel and `close()` stops everything it started.
 */
import { type Clock, realClock } from "../core/clock.ts";
import {
  ed25519KeyPair,
  PROFILES,
  SIM_REMOTE_PORT,
  simRecord,
  statusFields,
} from "./_fleet_catalog.ts";
import { Chaos, type ChaosTarget, type SimEvent } from "./chaos.ts";
import { type FakeEngine, type FakeEngineKind, startFakeEngine } from "./fake_engine.ts";
import { makeFakeNvidiaSmi } from "./fake_nvidia_smi.ts";
import { type FakeInstanceRecord, type FakeVastApi, startFakeVastApi } from "./fake_vast_api.ts";
import { type SimSshServer, startSimSshServer } from "./ssh_server.ts";

export type { SimEvent } from "./chaos.ts";
export { ed25519KeyPair, SIM_REMOTE_PORT } from "./_fleet_catalog.ts";

/** Options of `startSimFleet`; times in ms. */
export interface SimFleetOptions {
  /** Instances at start (at least 1). */
  instances: number;
  /** Key the fake API accepts [a random one]. */
  apiKey?: string;
  /** Drives chaos, loading and deferred restarts [real clock]. */
  clock?: Clock;
  /**
   * Random source in [0, 1) for the records and for chaos [Math.random].
   * Cosmetic noise (GPU numbers, token pacing) always uses Math.random, so
   * a test scripting this source sees only the draws that change behaviour.
   */
  random?: () => number;
  /** Per-token delay range of the engines [20, 40]. */
  tokenDelayMs?: readonly [number, number];
  /** Tokens per completion [32]. */
  tokens?: number;
  /** Run random events every 20–40 s (see chaos.ts) [false]. */
  chaos?: boolean;
  /** How many instances start `loading` [1 from 4 instances up, else 0]. */
  loading?: number;
  /** How long they load [15 000, 30 000]. */
  loadingMs?: readonly [number, number];
  /** Called on every fleet event (chaos, loading done). */
  onEvent?: (event: SimEvent) => void;
}

/** One simulated instance. */
export interface SimInstance {
  readonly id: number;
  readonly model: string;
  readonly engineKind: FakeEngineKind;
  /** `RTX 4090 ×2` style, as the table shows it. */
  readonly gpu: string;
  /** Whether its record offers a direct SSH port or only vast's proxy endpoint. */
  readonly path: "direct" | "proxy";
  readonly engine: FakeEngine;
  readonly ssh: SimSshServer;
  /** Its current record (the API serves copies). */
  readonly record: FakeInstanceRecord;
  /** Listed by the API right now (false while vanished). */
  readonly listed: boolean;
  /** Whether its engine is up. */
  readonly engineUp: boolean;
}

/** A running simulated fleet. */
export interface SimFleet {
  /** Pass as `--api-url`. */
  apiUrl: string;
  /** Pass as `--api-key`. */
  apiKey: string;
  /** A private key file the SSH servers accept (`--ssh-key`). */
  clientKeyPath: string;
  /** A fresh known_hosts path (`--known-hosts`). */
  knownHostsPath: string;
  /** The fake API, for tests that script faults. */
  api: FakeVastApi;
  /** Every instance started so far, listed or not, in id order. */
  readonly instances: SimInstance[];
  /** The distinct models served, sorted. */
  models(): string[];
  /** Chaos operations, callable directly by tests. */
  ops: ChaosTarget;
  /** Stops chaos, pending events, servers and engines; removes temp files. Idempotent. */
  close(): Promise<void>;
}

class Sim implements ChaosTarget {
  readonly #o: SimFleetOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #life = new AbortController();
  readonly #tasks = new Set<Promise<void>>();
  readonly #all = new Map<number, MutableInstance>();
  readonly #clientPublic: string;
  readonly #cap: number;
  #nextId = 31_337_101;
  api!: FakeVastApi;

  constructor(opts: SimFleetOptions, clientPublic: string) {
    this.#o = opts;
    this.#clock = opts.clock ?? realClock;
    this.#random = opts.random ?? Math.random;
    this.#clientPublic = clientPublic;
    this.#cap = opts.instances + 2;
  }

  get signal(): AbortSignal {
    return this.#life.signal;
  }

  instances(): SimInstance[] {
    return [...this.#all.values()].sort((a, b) => a.id - b.id);
  }

  /** Starts one instance's engine and SSH server; not listed until `list()`. */
  async create(index: number, status: "running" | "loading"): Promise<MutableInstance> {
    const id = this.#nextId;
    // Ids grow irregularly, as on vast, where other users' rentals interleave.
    this.#nextId += 1 + Math.floor(this.#random() * 900);
    const prof = PROFILES[index % PROFILES.length];
    const token = crypto.randomUUID().replaceAll("-", "") +
      crypto.randomUUID().replaceAll("-", "");
    const engine = await startFakeEngine({
      model: prof.model,
      engine: prof.engine,
      token,
      tokenDelayMs: this.#o.tokenDelayMs ?? [20, 40],
      tokens: this.#o.tokens ?? 32,
    });
    let ssh: SimSshServer;
    try {
      ssh = await startSimSshServer({
        hostKey: ed25519KeyPair().private,
        authorizedKey: this.#clientPublic,
        // Only the LLM port exists "inside" the instance. Any other port goes
        // to port 1 of loopback, where nothing can listen unprivileged, so it
        // is refused instead of reaching a real service on this machine.
        portMap: (port) => (port === SIM_REMOTE_PORT ? engine.port : 1),
        nvidiaSmi: makeFakeNvidiaSmi({
          gpus: prof.gpus,
          name: prof.smiName,
          memTotal: prof.ram,
          now: () => this.#clock.now(),
        }),
      });
    } catch (err) {
      await engine.close();
      throw err;
    }
    // Every third instance offers no direct port, so only vast's SSH proxy
    // endpoint reaches it (🐢 in the table), as on hosts without open ports.
    const path = index % 3 === 2 ? "proxy" : "direct";
    const inst = new MutableInstance({
      id,
      model: prof.model,
      engineKind: prof.engine,
      gpu: `${prof.gpu} ×${prof.gpus}`,
      path,
      engine,
      ssh,
      record: simRecord({
        id,
        index,
        profile: prof,
        token,
        sshPort: ssh.port,
        path,
        status,
        now: this.#clock.now(),
        random: this.#random,
      }),
    });
    this.#all.set(id, inst);
    return inst;
  }

  /** Makes `inst` visible in the API (again). */
  list(inst: MutableInstance): void {
    inst.listed = true;
    if (!this.api.state.find(inst.id)) this.api.state.instances.push(inst.record);
  }

  /** Runs `fn` after `ms` on the fleet's clock, unless the fleet closes first. */
  later(ms: number, fn: () => Promise<void> | void): void {
    this.track(this.#clock.sleep(ms, this.#life.signal).then(fn, () => {/* fleet closed */}));
  }

  /** Keeps `work` so `close()` waits for it; its failure is dropped. */
  track(work: Promise<void>): void {
    const task: Promise<void> = work
      .catch(() => {/* the fleet is closing under it */})
      .finally(() => this.#tasks.delete(task));
    this.#tasks.add(task);
  }

  emit(event: SimEvent): void {
    try {
      this.#o.onEvent?.(event);
    } catch {
      // A listener's bug must not stop the simulation.
    }
  }

  /** Flips a loading instance to running after `ms`. */
  runAfter(inst: MutableInstance, ms: number): void {
    this.later(ms, () => {
      Object.assign(inst.record, statusFields("running", String(inst.record.image_uuid)));
      this.emit({ type: "instance-running", id: inst.id });
    });
  }

  // --- ChaosTarget ---

  candidates(): number[] {
    return this.instances()
      .filter((i) => i.listed && i.engineUp && i.record.actual_status === "running")
      .map((i) => i.id);
  }

  canAdd(): boolean {
    return this.#all.size < this.#cap;
  }

  async crashEngine(id: number, restartAfterMs: number): Promise<void> {
    const inst = this.#all.get(id);
    if (!inst || !inst.engineUp) return;
    inst.engineUp = false;
    await inst.engine.close();
    this.emit({ type: "engine-crashed", id, restartInMs: restartAfterMs });
    const restart = async () => {
      if (this.#life.signal.aborted) return;
      try {
        await inst.engine.restart();
      } catch {
        // Its port was taken meanwhile (rare): try again shortly.
        return this.later(2_000, restart);
      }
      inst.engineUp = true;
      this.emit({ type: "engine-restarted", id });
    };
    this.later(restartAfterMs, restart);
  }

  dropSsh(id: number): void {
    const inst = this.#all.get(id);
    if (!inst) return;
    const connections = inst.ssh.connections;
    inst.ssh.disconnectAll();
    this.emit({ type: "ssh-dropped", id, connections });
  }

  async addInstance(runningAfterMs: number): Promise<SimInstance> {
    const inst = await this.create(this.#all.size, "loading");
    this.list(inst);
    this.emit({ type: "instance-added", id: inst.id, runningInMs: runningAfterMs });
    this.runAfter(inst, runningAfterMs);
    return inst;
  }

  vanish(id: number, backAfterMs: number): void {
    const inst = this.#all.get(id);
    if (!inst || !inst.listed) return;
    inst.listed = false;
    this.api.state.instances = this.api.state.instances.filter((r) => r.id !== id);
    this.emit({ type: "instance-vanished", id, backInMs: backAfterMs });
    this.later(backAfterMs, () => {
      this.list(inst);
      this.emit({ type: "instance-back", id });
    });
  }

  async close(): Promise<void> {
    this.#life.abort();
    await Promise.allSettled([...this.#tasks]);
    await Promise.allSettled(
      [...this.#all.values()].flatMap((i) => [i.ssh.close(), i.engine.close()]),
    );
  }
}

class MutableInstance implements SimInstance {
  readonly id: number;
  readonly model: string;
  readonly engineKind: FakeEngineKind;
  readonly gpu: string;
  readonly path: "direct" | "proxy";
  readonly engine: FakeEngine;
  readonly ssh: SimSshServer;
  readonly record: FakeInstanceRecord;
  listed = false;
  engineUp = true;

  constructor(init: Omit<SimInstance, "listed" | "engineUp">) {
    this.id = init.id;
    this.model = init.model;
    this.engineKind = init.engineKind;
    this.gpu = init.gpu;
    this.path = init.path;
    this.engine = init.engine;
    this.ssh = init.ssh;
    this.record = init.record;
  }
}

/** Starts a simulated fleet of `opts.instances` instances; see `SimFleetOptions`. */
export async function startSimFleet(opts: SimFleetOptions): Promise<SimFleet> {
  const n = Math.max(1, Math.floor(opts.instances));
  const apiKey = opts.apiKey ?? `sim-${crypto.randomUUID()}`;
  const client = ed25519KeyPair("vastproxy-demo");
  const dir = await Deno.makeTempDir({ prefix: "vastproxy-sim-" });
  const clientKeyPath = `${dir}/id_ed25519`;
  await Deno.writeTextFile(clientKeyPath, client.private, { mode: 0o600 });
  const sim = new Sim({ ...opts, instances: n }, client.public);
  sim.api = startFakeVastApi({ apiKey });
  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      await sim.close();
      await sim.api.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  try {
    const loading = Math.min(n, opts.loading ?? (n >= 4 ? 1 : 0));
    // In parallel: 64 instances start in well under a second. Ids are taken
    // synchronously, so they still ascend with the index.
    const started = await Promise.all(
      Array.from({ length: n }, (_, i) => sim.create(i, i >= n - loading ? "loading" : "running")),
    );
    for (const inst of started) sim.list(inst);
    const [lo, hi] = opts.loadingMs ?? [15_000, 30_000];
    for (const inst of started.slice(n - loading)) {
      sim.runAfter(inst, Math.round(lo + (opts.random ?? Math.random)() * (hi - lo)));
    }
    if (opts.chaos) {
      const chaos = new Chaos({
        target: sim,
        clock: opts.clock ?? realClock,
        random: opts.random ?? Math.random,
      });
      sim.track(chaos.start(sim.signal));
    }
  } catch (err) {
    await close();
    throw err;
  }
  return {
    apiUrl: sim.api.url,
    apiKey,
    clientKeyPath,
    knownHostsPath: `${dir}/known_hosts`,
    api: sim.api,
    get instances() {
      return sim.instances();
    },
    models: () => [...new Set(sim.instances().map((i) => i.model))].sort(),
    ops: sim,
    close,
  };
}
