/**
 * `deno task bench [--quick] [--rounds N] [--only S1,S3] [--profile]`
 * (`deno task bench --routing …` runs bench/routing.ts instead):
 * measures the paths to the same fake engines, interleaved round by round —
 * (a) direct, (b) OpenSSH `ssh -N -L`, (c) `vastproxy serve`, (d) another
 * checkout's proxy when BENCH_BASELINE_ROOT is set, (e) the Go original's
 * core (bench/go_core) when Go builds it — and prints one table of medians
 * over the rounds; the raw rounds go to bench/results.json. S1 and S1W also
 * measure the floor under any relay at concurrency 1: (f) a byte relay in C
 * (bench/floor/relay.c, where `cc` builds it) and (g) the same relay in
 * Deno (bench/floor/relay.ts), each in front of (b)'s `ssh -L`, and the
 * floor under the proxy itself (bench/floor/ssh_forward.ts): (h) `ssh -L`
 * rebuilt on the proxy's own SSH stack, (i) the same with the HTTP work a
 * proxy cannot skip. S1W and S2W
 * repeat S1 and S2 with `wrk` as the client (bench/wrk.ts; skipped where
 * wrk is not installed). `--profile`
 * writes a V8 CPU profile of each proxy process (c, d) per scenario; see
 * bench/profile_summary.ts.
 *
 * Processes: this one runs sshd's keys/config, the fake engines and the fake
 * vast API; `bench/load.ts` (the load generator) and the proxy each run in
 * their own process, so neither steals the other's event loop. See
 * docs/BENCHMARKS.md for the method and the numbers.
 */
import { errorText } from "../lib/core/errors.ts";
import { startFakeEngine } from "../lib/sim/fake_engine.ts";
import {
  BENCH_MODEL,
  buildCRelay,
  buildGoCore,
  type Proc,
  procStatusMiB,
  type ProxyProc,
  startGoCore,
  startProxyProc,
  startRelay,
  startSshFloor,
  startSshForwards,
  startWorld,
  type World,
} from "./_fixture.ts";
import type { BulkResult, Job, RequestsResult, SseResult } from "./load.ts";
import { findWrk, type WrkJob, WrkRunner } from "./wrk.ts";
import { median } from "./_stats.ts";

export type PathName = "a" | "b" | "c" | "d" | "e" | "f" | "g" | "h" | "i";
/**
 * With `BENCH_BASELINE_ROOT=<another checkout>`, a fourth path (d) runs that
 * checkout's proxy in the same interleaved rounds: before/after in one run.
 */
const BASELINE_ROOT = Deno.env.get("BENCH_BASELINE_ROOT") || undefined;
/**
 * Runtime flags for path (c) only (`BENCH_CANDIDATE_FLAGS="--v8-flags=…"`):
 * with BENCH_BASELINE_ROOT set to this checkout, (c) against (d) is a
 * flag's before/after in one run, on the same code.
 */
const CANDIDATE_FLAGS = (Deno.env.get("BENCH_CANDIDATE_FLAGS") ?? "").split(" ").filter(Boolean);
/** Paths measured in this run; (e) is appended by `main()` once the Go core builds. */
const PATHS: PathName[] = BASELINE_ROOT ? ["a", "b", "c", "d"] : ["a", "b", "c"];
const PATH_LABEL: Record<PathName, string> = {
  a: "direct",
  b: "ssh -L",
  c: "vastproxy",
  d: "baseline",
  e: "go core",
  f: "C relay",
  g: "Deno relay",
  h: "SSH floor",
  i: "HTTP floor",
};
/**
 * The floor paths (S1 and S1W only). (f) once the C relay builds, and (g):
 * a plain byte relay in front of an `ssh -L` port, so (f) − (b) is the cost
 * of one process hop and (g) − (f) the runtime's share. (h) and (i) replace
 * `ssh -L` as the proxy does: (h) − (b) is what the proxy's SSH stack (and
 * the Deno process around it) costs over OpenSSH's client, (i) − (h) the
 * HTTP work a proxy cannot skip, and (c) − (i) everything else the proxy
 * does per request (under `--profile` also the profiler, which only (c) runs).
 */
const FLOOR_PATHS: PathName[] = [];
/** The built C relay of path (f), or null. */
let cRelayBin: string | null = null;
/** The built Go core (path e), or null when it is not part of this run. */
let goCoreBin: string | null = null;

interface Settings {
  quick: boolean;
  rounds: number;
  only: Set<string> | null;
  /** Directory for the proxies' CPU profiles (`--profile`), or null. */
  profileDir: string | null;
}

function parseArgs(args: string[]): Settings {
  const quick = args.includes("--quick");
  const at = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const rounds = Number(at("--rounds") ?? (quick ? 3 : 5));
  const only = at("--only");
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  return {
    quick,
    rounds,
    only: only ? new Set(only.split(",").map((s) => s.trim().toUpperCase())) : null,
    profileDir: args.includes("--profile")
      ? new URL(`./.cache/profiles/${stamp}`, import.meta.url).pathname
      : null,
  };
}

/** The long-lived load generator process. */
class LoadGen {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;

  constructor() {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", new URL("./load.ts", import.meta.url).pathname],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#lines = lineIterator(this.#child.stdout);
  }

  get pid(): number {
    return this.#child.pid;
  }

  async run<R>(job: Job): Promise<R> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(job) + "\n"));
    const { value, done } = await this.#lines.next();
    if (done) throw new Error("load generator exited");
    return JSON.parse(value) as R;
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#child.status;
  }
}

async function* lineIterator(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    pending += text;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      yield pending.slice(0, nl);
      pending = pending.slice(nl + 1);
    }
  }
}

/** What one scenario needs per path: base URLs to spread load over. */
interface Setup {
  targets: Record<PathName, string[]>;
  proxy: ProxyProc;
  goCore?: Proc;
  sshPids: number[];
  close(): Promise<void>;
}

/** Runtime flags that make a proxy write its CPU profile as `<dir>/<tag>.cpuprofile`. */
function profileFlags(s: Settings, tag: string): string[] {
  return s.profileDir
    ? ["--cpu-prof", `--cpu-prof-dir=${s.profileDir}`, `--cpu-prof-name=${tag}.cpuprofile`]
    : [];
}

/** Engines, ssh forwards and the proxies for `n` backends; torn down by `close()`. */
async function setup(
  world: World,
  s: Settings,
  n: number,
  tag: string,
  floor = false,
): Promise<Setup> {
  const engines = await Promise.all(
    Array.from({ length: n }, benchEngine),
  );
  const ports = engines.map((e) => e.port);
  const ssh = await startSshForwards(world, ports);
  let proxy: ProxyProc | undefined;
  let baseline: ProxyProc | undefined;
  let goCore: (Proc & { url: string }) | undefined;
  const relays: Partial<Record<PathName, Proc & { url: string }>> = {};
  try {
    proxy = await startProxyProc(world, ports, {
      tag,
      runtimeFlags: [...CANDIDATE_FLAGS, ...profileFlags(s, tag)],
    });
    if (BASELINE_ROOT) {
      baseline = await startProxyProc(world, ports, {
        tag: `${tag}-base`,
        root: BASELINE_ROOT,
        runtimeFlags: profileFlags(s, `${tag}-base`),
      });
    }
    if (goCoreBin) goCore = await startGoCore(world, goCoreBin, ports, tag);
    if (floor) {
      for (const p of FLOOR_PATHS) {
        // A floor that does not start costs its column, never the run.
        try {
          relays[p] = p === "h" || p === "i"
            ? await startSshFloor(world, p === "h" ? "bytes" : "http", ports[0], tag)
            : await startRelay(world, ssh.ports[0], p === "f" ? cRelayBin : null, tag);
        } catch (err) {
          console.error(`(${p}) ${PATH_LABEL[p]} left out of ${tag}: ${errorText(err)}`);
        }
      }
    }
  } catch (err) {
    await Promise.all(Object.values(relays).map((r) => r.stop()));
    await goCore?.stop();
    await proxy?.close();
    await baseline?.close();
    await ssh.stop();
    await Promise.all(engines.map((e) => e.close()));
    throw err;
  }
  const started = proxy;
  return {
    targets: {
      a: ports.map((p) => `http://127.0.0.1:${p}`),
      b: ssh.ports.map((p) => `http://127.0.0.1:${p}`),
      c: [started.url],
      d: baseline ? [baseline.url] : [],
      e: goCore ? [goCore.url] : [],
      f: relays.f ? [relays.f.url] : [],
      g: relays.g ? [relays.g.url] : [],
      h: relays.h ? [relays.h.url] : [],
      i: relays.i ? [relays.i.url] : [],
    },
    proxy: started,
    goCore,
    sshPids: ssh.procs.map((p) => p.pid),
    async close() {
      await Promise.all(Object.values(relays).map((r) => r.stop()));
      await started.close();
      await baseline?.close();
      await goCore?.stop();
      await ssh.stop();
      await Promise.all(engines.map((e) => e.close()));
    },
  };
}

type Metrics = Record<string, number>;

/**
 * A fake vLLM engine serving the bench model. It keeps its last 1,000
 * request records: a run's million requests would grow its heap and its
 * garbage collection round after round.
 */
function benchEngine() {
  return startFakeEngine({ model: BENCH_MODEL, engine: "vllm", keepLast: 1000 });
}

/** One scenario's rounds: per path, one metrics object per round. */
export interface ScenarioResult {
  id: string;
  title: string;
  setup: string;
  rounds: Record<PathName, Metrics[]>;
  /** Extra facts (errors, first error texts, RSS of the ssh clients). */
  notes: string[];
}

const CHAT_BODY = JSON.stringify({
  model: BENCH_MODEL,
  messages: [{ role: "user", content: "Say hello in one short sentence." }],
  max_tokens: 8,
});

/** The request of S1 and S2 (and S1W, S2W), whichever client sends it. */
const CHAT_REQUEST = {
  method: "POST",
  path: "/v1/chat/completions",
  body: CHAT_BODY,
  headers: { "content-type": "application/json" },
} as const;

function requestsJob(targets: string[], concurrency: number, durationMs: number): Job {
  return {
    kind: "requests",
    targets,
    ...CHAT_REQUEST,
    concurrency,
    durationMs,
    maxRequests: 200_000,
    warmupPerWorker: concurrency === 1 ? 100 : 10,
  };
}

/**
 * The order of the paths in round `round` (1-based): the first round in
 * the table's order, each later one a shuffle seeded by its number, so a
 * run's order is the same every time. A fixed order biased the results:
 * with two copies of the same proxy as (c) and (d), the one run right
 * after the other had a p50 at concurrency 1 lower by 0.05–0.15 ms in 5
 * of 6 rounds (docs/BENCHMARKS.md, twelfth pass).
 */
export function roundOrder<P>(paths: readonly P[], round: number): P[] {
  const out = [...paths];
  if (round <= 1) return out;
  // mulberry32: a tiny PRNG, enough to vary neighbours.
  let state = (round * 0x9e3779b9) >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * The runs of one mirrored round: `order`, then `order` reversed, so each
 * path runs twice and its two positions add up to the same number for
 * every path. A drift of the machine that is linear over the round then
 * weighs on every path alike, whatever their distance in the order. This
 * VM drifts between fast and slow phases over tens of seconds, and a path
 * whose one 3 s run fell into a slow phase moved the c=1 verdict by more
 * than its margin (docs/BENCHMARKS.md, thirteenth and fourteenth passes).
 */
export function mirroredRuns<P>(order: readonly P[]): P[] {
  return [...order, ...[...order].reverse()];
}

/**
 * One round's metrics from the two halves of a mirrored round: rates and
 * p50s are averaged (each half ran as long), p99 is the worse half, and
 * errors add up.
 */
export function combineHalves(first: Metrics, second: Metrics): Metrics {
  const out: Metrics = {};
  for (const k of new Set([...Object.keys(first), ...Object.keys(second)])) {
    const a = first[k], b = second[k];
    if (a === undefined || b === undefined) out[k] = a ?? b;
    else if (k === "errors") out[k] = a + b;
    else if (k === "p99Ms") out[k] = Math.max(a, b);
    else out[k] = (a + b) / 2;
  }
  return out;
}

/**
 * Runs `rounds` × (a, b, c, …, in `roundOrder`) of `job(path)` and collects
 * `pick(result)`. With `mirrored`, each round runs the order forwards and
 * then backwards (`mirroredRuns`) with jobs of half the duration (the
 * caller's `job` gives them), and a path's round is `combineHalves` of its
 * two runs.
 */
async function interleave<R, J = Job>(
  s: Settings,
  load: { run(job: J): Promise<unknown> },
  res: ScenarioResult,
  job: (p: PathName) => J,
  pick: (r: R, p: PathName) => Metrics,
  paths: PathName[] = PATHS,
  mirrored = false,
): Promise<void> {
  const show = (m: Metrics) => Object.entries(m).map(([k, v]) => `${k}=${fmt(v)}`).join(" ");
  for (let round = 1; round <= s.rounds; round++) {
    const order = roundOrder(paths, round);
    const halves = new Map<PathName, Metrics>();
    for (const p of mirrored ? mirroredRuns(order) : order) {
      const r = await load.run(job(p)) as R;
      const m = pick(r, p);
      const err = r as { firstError?: string | null; error?: string | null };
      const e = err.firstError ?? err.error;
      if (e) res.notes.push(`round ${round} ${PATH_LABEL[p]}: ${e}`);
      const first = halves.get(p);
      if (mirrored && first === undefined) {
        halves.set(p, m);
        console.error(
          `  ${res.id} round ${round} ${PATH_LABEL[p].padEnd(9)} (1st half) ${show(m)}`,
        );
        continue;
      }
      const whole = first === undefined ? m : combineHalves(first, m);
      res.rounds[p].push(whole);
      console.error(
        `  ${res.id} round ${round} ${PATH_LABEL[p].padEnd(9)} ${
          first === undefined ? "" : `(2nd half) ${show(m)} → `
        }${show(whole)}`,
      );
    }
  }
}

function emptyResult(id: string, title: string, setupText: string): ScenarioResult {
  return {
    id,
    title,
    setup: setupText,
    rounds: { a: [], b: [], c: [], d: [], e: [], f: [], g: [], h: [], i: [] },
    notes: [],
  };
}

/**
 * A request scenario (S1, S2 and their wrk twins): `backends` engines, the
 * request job every path runs, and the metrics kept of each round.
 */
async function requestScenario<J>(
  world: World,
  s: Settings,
  runner: { run(job: J): Promise<unknown> },
  what: {
    id: string;
    title: string;
    setup: string;
    backends: number;
    rateFirst: boolean;
    /** Also measure the relay floor, paths (f) and (g). */
    floor?: boolean;
    /** Mirrored rounds (see `interleave`); `job` then makes half-length runs. */
    mirrored?: boolean;
  },
  job: (targets: string[]) => J,
  warm: (targets: string[]) => J,
): Promise<ScenarioResult> {
  const res = emptyResult(what.id, what.title, what.setup);
  const env = await setup(world, s, what.backends, what.id.toLowerCase(), what.floor);
  // Floor paths that did not start (setup said why) are left out.
  const paths = what.floor
    ? [...PATHS, ...FLOOR_PATHS.filter((p) => env.targets[p].length > 0)]
    : PATHS;
  try {
    // Every path first serves the same unmeasured burst. V8 keeps tiering
    // the proxy's code up for ~20k requests (c=1 p50 fell ~40 µs over the
    // first 10 s of a fresh proxy), and a proxy in use has long since done
    // so; the burst costs the other paths nothing but time.
    for (const p of paths) {
      if (env.targets[p].length > 0) await runner.run(warm(env.targets[p]));
    }
    await interleave<RequestsResult, J>(
      s,
      runner,
      res,
      (p) => job(env.targets[p]),
      // The table lists a scenario's metrics in this order.
      (r) =>
        what.rateFirst
          ? { rps: r.rps, p50Ms: r.p50Ms, p99Ms: r.p99Ms, errors: r.errors }
          : { p50Ms: r.p50Ms, p99Ms: r.p99Ms, rps: r.rps, errors: r.errors },
      paths,
      what.mirrored === true,
    );
  } finally {
    await env.close();
  }
  return res;
}

const S1 = {
  id: "S1",
  title: "latency, 1 backend, concurrency 1",
  setup: "POST /v1/chat/completions (non-streaming, ~300 B each way)",
  backends: 1,
  rateFirst: false,
  floor: true,
  // The c=1 target is the one the machine's drift decides: mirrored rounds.
  mirrored: true,
};
const S2 = {
  id: "S2",
  title: "throughput, 4 backends, concurrency 32",
  setup: "same request; (a) and (b) spread the 32 workers over 4 engines / 4 ssh -L processes",
  backends: 4,
  rateFirst: true,
};

function s1(world: World, load: LoadGen, s: Settings): Promise<ScenarioResult> {
  return requestScenario(
    world,
    s,
    load,
    S1,
    // Two halves of 1.5 s per path and round (mirrored): 3 s, as before.
    (t) => requestsJob(t, 1, s.quick ? 750 : 1_500),
    (t) => requestsJob(t, 32, warmMs(s)),
  );
}

function s2(world: World, load: LoadGen, s: Settings): Promise<ScenarioResult> {
  const job = (t: string[]) => requestsJob(t, 32, s.quick ? 2_000 : 5_000);
  return requestScenario(world, s, load, S2, job, (t) => ({ ...job(t), durationMs: warmMs(s) }));
}

/** The unmeasured burst (concurrency 32) each path serves before a request scenario's rounds. */
function warmMs(s: Settings): number {
  return s.quick ? 1_000 : 8_000;
}

/** The request job of S1/S2 for `wrk` (bench/wrk.ts). */
function wrkJob(
  targets: string[],
  concurrency: number,
  durationMs: number,
  spread: number,
): WrkJob {
  return { targets, ...CHAT_REQUEST, concurrency, durationMs, spread };
}

/** S1 with `wrk` as the client (the tool #14's numbers were taken with). */
function s1w(world: World, runner: WrkRunner, s: Settings): Promise<ScenarioResult> {
  return requestScenario(
    world,
    s,
    runner,
    { ...S1, id: "S1W", title: `${S1.title} (wrk)`, setup: "as S1, with wrk (one connection)" },
    // Two halves per path and round (mirrored); wrk runs whole seconds.
    (t) => wrkJob(t, 1, s.quick ? 1_000 : 2_000, 1),
    (t) => wrkJob(t, 32, warmMs(s), 4),
  );
}

/** S2 with `wrk` as the client: four processes of eight connections on every path. */
function s2w(world: World, runner: WrkRunner, s: Settings): Promise<ScenarioResult> {
  return requestScenario(
    world,
    s,
    runner,
    {
      ...S2,
      id: "S2W",
      title: `${S2.title} (wrk)`,
      setup:
        "as S2, with four wrk processes of 8 connections (one per engine / ssh -L port for a, b)",
    },
    (t) => wrkJob(t, 32, s.quick ? 2_000 : 5_000, 4),
    (t) => wrkJob(t, 32, warmMs(s), 4),
  );
}

async function s3(world: World, load: LoadGen, s: Settings): Promise<ScenarioResult> {
  const events = s.quick ? 50 : 200;
  const res = emptyResult(
    "S3",
    "streaming, 4 backends, 200 SSE streams",
    `200 concurrent streams × ${events} events, one every 20 ms, stamped by the engine`,
  );
  const env = await setup(world, s, 4, "s3");
  const sse = (p: PathName, n: number): Job => ({
    kind: "sse",
    targets: env.targets[p],
    streams: 200,
    events: n,
    intervalMs: 20,
    timeoutMs: 60_000,
  });
  try {
    // As in the request scenarios, every path first serves the same
    // unmeasured streams: a fresh proxy's first 200 streams at once ran
    // its SSE path cold (round 1's TTFB p50 ~240–360 ms against ~120 in
    // later rounds), which a proxy in use has long since left behind.
    for (const p of PATHS) {
      if (env.targets[p].length > 0) await load.run(sse(p, s.quick ? 10 : 50));
    }
    await interleave<SseResult>(
      s,
      load,
      res,
      (p) => sse(p, events),
      (r) => ({
        delayP50Ms: r.delayP50Ms,
        delayP99Ms: r.delayP99Ms,
        ttfbP50Ms: r.ttfbP50Ms,
        ttfbP99Ms: r.ttfbP99Ms,
        merged: r.merged,
        gaps: r.gaps,
        errors: r.errors + (r.expectedEvents - r.events),
      }),
    );
  } finally {
    await env.close();
  }
  return res;
}

async function s4(world: World, load: LoadGen, s: Settings): Promise<ScenarioResult> {
  const events = s.quick ? 8 : 20;
  const res = emptyResult(
    "S4",
    "scale, 8 backends, 1,000 SSE streams",
    `1,000 concurrent streams × ${events} events, one every 500 ms; RSS = VmHWM of the proxy process`,
  );
  const env = await setup(world, s, 8, "s4");
  try {
    await interleave<SseResult>(
      s,
      load,
      res,
      (p) => ({
        kind: "sse",
        targets: env.targets[p],
        streams: 1_000,
        events,
        intervalMs: 500,
        timeoutMs: 120_000,
      }),
      (r, p) => ({
        errors: r.errors,
        completed: r.completed,
        delayP99Ms: r.delayP99Ms,
        ...(p === "c" ? { peakRssMiB: env.proxy.peakRssMiB() } : {}),
        ...(p === "e" && env.goCore ? { peakRssMiB: env.goCore.peakRssMiB() } : {}),
      }),
    );
    const sshHwm = env.sshPids.map((pid) => procStatusMiB(pid, "VmHWM"));
    res.notes.push(
      `ssh -L clients' peak RSS, summed over 8 processes: ${
        fmt(sshHwm.reduce((a, b) => a + b, 0))
      } MiB`,
    );
  } finally {
    await env.close();
  }
  return res;
}

async function s5(world: World, s: Settings): Promise<ScenarioResult> {
  const res = emptyResult(
    "S5",
    "fleet, 64 instances",
    "spawn of `vastproxy serve` → 64 backends healthy (64 SSH handshakes to a real sshd, " +
      "one fake engine behind all); only path (c) applies",
  );
  const engine = await benchEngine();
  try {
    for (let round = 1; round <= s.rounds; round++) {
      const proxy = await startProxyProc(world, Array(64).fill(engine.port), {
        tag: `s5_${round}`,
        readyTimeoutMs: 60_000,
      });
      res.rounds.c.push({ readyMs: proxy.readyMs, peakRssMiB: proxy.peakRssMiB() });
      console.error(`  S5 round ${round} vastproxy readyMs=${fmt(proxy.readyMs)}`);
      await proxy.close();
    }
  } finally {
    await engine.close();
  }
  return res;
}

async function s6(world: World, load: LoadGen, s: Settings): Promise<ScenarioResult> {
  const bytes = 200 * 1024 * 1024;
  const res = emptyResult("S6", "bulk, 1 backend", "one 200 MiB response body (GET /bytes)");
  const env = await setup(world, s, 1, "s6");
  try {
    await interleave<BulkResult>(
      s,
      load,
      res,
      (p) => ({ kind: "bulk", target: env.targets[p][0], bytes, timeoutMs: 60_000 }),
      (r) => ({ mbPerSec: r.mbPerSec, errors: r.error ? 1 : 0 }),
    );
  } finally {
    await env.close();
  }
  return res;
}

// ---- report ---------------------------------------------------------------

function fmt(v: number | undefined): string {
  if (v === undefined || Number.isNaN(v)) return "–";
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** `fmt` with its sign: "+0.04", "-0.01", and "+0.00" (not "-0.00") for what rounds to zero. */
function signed(v: number): string {
  const text = fmt(v).replace(/^-(?=0(?:\.0+)?$)/, "");
  return text === "–" || text.startsWith("-") ? text : `+${text}`;
}

function med(res: ScenarioResult, p: PathName, key: string): number {
  return median(res.rounds[p].map((m) => m[key]).filter((v) => v !== undefined));
}

/**
 * Whether `paths` measured `key` cleanly in every round of `res`: no
 * errors, and a finite value (a `wrk` or `fetch` job that failed outright
 * leaves NaN, which the median would otherwise skip). With `value`, plus
 * what went wrong when something did.
 */
function withErrors(
  value: string,
  res: ScenarioResult,
  paths: PathName[],
  key: string,
): [string, boolean] {
  let errors = 0;
  let failed = 0;
  for (const p of paths) {
    for (const m of res.rounds[p]) {
      errors += Number(m.errors) || 0;
      if (!Number.isFinite(m[key])) failed++;
    }
  }
  if (errors === 0 && failed === 0) return [value, true];
  const what = [errors && `${errors} errors`, failed && `${failed} rounds without a ${key}`]
    .filter(Boolean).join(", ");
  return [`${value}, ${what} on ${paths.join("/")}`, false];
}

/**
 * `v` rounded to `decimals`, as a number and as shown: the check reads the
 * number it shows, so neither float noise (0.165 − 0.015 is
 * 0.15000000000000002) nor display rounding can put a "0.150" next to a NO.
 */
function exact(v: number, decimals: number): [number, string] {
  const r = Math.round(v * 10 ** decimals) / 10 ** decimals;
  return [r, r.toFixed(decimals)];
}

/** Target checks, as in the issue. */
export function verdicts(all: ScenarioResult[]): { target: string; value: string; ok: boolean }[] {
  const out: { target: string; value: string; ok: boolean }[] = [];
  const by = (id: string) => all.find((r) => r.id === id);
  // #14's three targets, for the fetch client (S1, S2, with the older
  // S1/S2 targets) and for wrk (S1W, S2W). A round with errors on a
  // compared path is no measurement of it: the target fails and says why.
  for (const [latency, rate, tag] of [["S1", "S2", "#14"], ["S1W", "S2W", "#14 (wrk)"]] as const) {
    const r1 = by(latency);
    if (r1) {
      const [d, shown] = exact(med(r1, "c", "p50Ms") - med(r1, "b", "p50Ms"), 3);
      const [value, clean] = withErrors(`${shown} ms`, r1, ["b", "c"], "p50Ms");
      if (latency === "S1") {
        out.push({ target: "S1 p50 (c) − (b) ≤ 0.3 ms", value, ok: clean && d <= 0.3 });
      }
      out.push({
        target: `${tag}: ${latency} p50 (c) − (b) ≤ 0.15 ms`,
        value,
        ok: clean && d <= 0.15,
      });
    }
    const r2 = by(rate);
    if (r2) {
      const [pct, shown] = exact((med(r2, "c", "rps") / med(r2, "b", "rps")) * 100, 2);
      const [value, clean] = withErrors(`${shown}%`, r2, ["b", "c"], "rps");
      if (rate === "S2") {
        out.push({ target: "S2 req/s (c) ≥ 50% of (b)", value, ok: clean && pct >= 50 });
      }
      out.push({ target: `${tag}: ${rate} req/s (c) ≥ 60% of (b)`, value, ok: clean && pct >= 60 });
      if (r2.rounds.e.length) {
        const [vsGo, shown] = exact(med(r2, "c", "rps") / med(r2, "e", "rps"), 3);
        const [value, clean] = withErrors(`${shown}×`, r2, ["c", "e"], "rps");
        out.push({
          target: `${tag}: ${rate} req/s (c) ≥ 1.5× (e) go core`,
          value,
          ok: clean && vsGo >= 1.5,
        });
      }
    }
  }
  const r3 = by("S3");
  if (r3) {
    const d = med(r3, "c", "delayP99Ms") - med(r3, "b", "delayP99Ms");
    const merged = Math.max(...r3.rounds.c.map((m) => m.merged));
    const gaps = Math.max(...r3.rounds.c.map((m) => m.gaps + m.errors));
    out.push({
      target: "S3 event delay p99 (c) − (b) ≤ 2 ms",
      value: `${fmt(d)} ms`,
      ok: d <= 2,
    });
    out.push({
      target: "S3 no event merged or lost through (c)",
      value: `max merged ${merged}, lost/gaps ${gaps}`,
      ok: merged === 0 && gaps === 0,
    });
  }
  const r4 = by("S4");
  if (r4) {
    const errors = r4.rounds.c.reduce((a, m) => a + m.errors, 0);
    const rss = Math.max(...r4.rounds.c.map((m) => m.peakRssMiB));
    out.push({ target: "S4 0 errors through (c)", value: String(errors), ok: errors === 0 });
    out.push({ target: "S4 proxy peak RSS ≤ 300 MB", value: `${fmt(rss)} MiB`, ok: rss <= 286 });
  }
  const r5 = by("S5");
  if (r5) {
    const t = med(r5, "c", "readyMs") / 1000;
    out.push({ target: "S5 64 instances healthy ≤ 10 s", value: `${fmt(t)} s`, ok: t <= 10 });
  }
  const r6 = by("S6");
  if (r6) {
    const v = med(r6, "c", "mbPerSec");
    out.push({ target: "S6 bulk (c) ≥ 100 MB/s", value: `${fmt(v)} MB/s`, ok: v >= 100 });
  }
  return out;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(rows[0]),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...rows.slice(1)
      .map(line),
  ].join("\n");
}

/** The paths of this run's table: PATHS, then floor paths some scenario measured. */
function columns(all: ScenarioResult[]): PathName[] {
  return [...PATHS, ...FLOOR_PATHS.filter((p) => all.some((r) => r.rounds[p].length > 0))];
}

/**
 * What a relay costs at concurrency 1 over (b), beside what vastproxy adds:
 * the floor the S1 targets sit on. Not a target, so not in `verdicts`.
 */
export function floorLines(all: ScenarioResult[], floor: PathName[] = FLOOR_PATHS): string[] {
  const out: string[] = [];
  for (const r of all) {
    const measured = floor.filter((p) => r.rounds[p].length > 0);
    if (measured.length === 0) continue;
    // A path with errors or rounds without a p50 says so, as in the verdicts.
    const over = (p: PathName) =>
      withErrors(`${signed(med(r, p, "p50Ms") - med(r, "b", "p50Ms"))} ms`, r, [p], "p50Ms")[0];
    out.push(
      `  ${r.id}: p50 over (b) ssh -L: ` +
        [...measured, "c" as const].map((p) => `(${p}) ${PATH_LABEL[p]} ${over(p)}`)
          .join(", "),
    );
  }
  return out.length
    ? [
      "",
      "floor at concurrency 1 (not a target): (f), (g) a byte relay in front of ssh -L; " +
      "(h) ssh -L rebuilt on the proxy's SSH stack; (i) (h) plus the HTTP work a proxy cannot skip",
      ...out,
    ]
    : [];
}

function report(all: ScenarioResult[], s: Settings): string {
  const cols = columns(all);
  const rows: string[][] = [[
    "scenario",
    "metric",
    ...cols.map((p) => `(${p}) ${PATH_LABEL[p]}`),
  ]];
  for (const r of all) {
    const keys = [...new Set(cols.flatMap((p) => r.rounds[p].flatMap((m) => Object.keys(m))))];
    for (const k of keys) {
      rows.push([`${r.id} ${r.title}`, k, ...cols.map((p) => fmt(med(r, p, k)))]);
    }
  }
  const v = verdicts(all);
  const vrows = [
    ["target", "measured", "met"],
    ...v.map((x) => [x.target, x.value, x.ok ? "yes" : "NO"]),
  ];
  const notes = all.flatMap((r) => r.notes.map((n) => `${r.id}: ${n}`));
  return [
    `vastproxy bench — median of ${s.rounds} interleaved rounds${s.quick ? " (--quick)" : ""}`,
    "",
    table(rows),
    "",
    table(vrows),
    ...floorLines(all),
    ...(notes.length ? ["", "notes:", ...notes.slice(0, 30).map((n) => `  ${n}`)] : []),
  ].join("\n");
}

async function machine(): Promise<Record<string, string | number>> {
  const cpu = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = /model name\s*:\s*(.*)/.exec(cpu)?.[1] ?? "unknown";
  const ssh = await new Deno.Command("ssh", { args: ["-V"], stderr: "piped" }).output();
  return {
    cpu: model,
    cores: navigator.hardwareConcurrency,
    memTotalMiB: Math.round(Deno.systemMemoryInfo().total / 1024 / 1024),
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    openssh: new TextDecoder().decode(ssh.stderr).trim(),
  };
}

async function main(): Promise<number> {
  const s = parseArgs(Deno.args);
  const want = (id: string) => s.only === null || s.only.has(id);
  const started = Date.now();
  goCoreBin = await buildGoCore();
  if (goCoreBin) PATHS.push("e");
  if (want("S1") || want("S1W")) {
    cRelayBin = await buildCRelay();
    if (cRelayBin) FLOOR_PATHS.push("f");
    FLOOR_PATHS.push("g", "h", "i");
  }
  const world = await startWorld();
  const load = new LoadGen();
  const all: ScenarioResult[] = [];
  try {
    if (want("S1")) all.push(await s1(world, load, s));
    if (want("S2")) all.push(await s2(world, load, s));
    if (want("S1W") || want("S2W")) {
      if (await findWrk()) {
        const runner = new WrkRunner(world.dir);
        if (want("S1W")) all.push(await s1w(world, runner, s));
        if (want("S2W")) all.push(await s2w(world, runner, s));
      } else if (s.only !== null) {
        console.error("S1W/S2W skipped: wrk is not installed (apt-get install wrk)");
      }
    }
    if (want("S3")) all.push(await s3(world, load, s));
    if (want("S4")) all.push(await s4(world, load, s));
    if (want("S6")) all.push(await s6(world, load, s));
    if (want("S5")) all.push(await s5(world, s));
  } finally {
    await load.close();
    await world.close();
  }
  const text = report(all, s);
  console.log(text);
  const out = {
    date: new Date().toISOString(),
    command: `deno task bench ${Deno.args.join(" ")}`.trim(),
    seconds: Math.round((Date.now() - started) / 1000),
    machine: await machine(),
    rounds: s.rounds,
    quick: s.quick,
    scenarios: all.map((r) => ({
      ...r,
      median: Object.fromEntries(
        columns(all).map((p) => [
          p,
          Object.fromEntries(
            [...new Set(r.rounds[p].flatMap((m) => Object.keys(m)))].map((k) => [k, med(r, p, k)]),
          ),
        ]),
      ),
    })),
    targets: verdicts(all),
  };
  await Deno.writeTextFile(
    new URL("./results.json", import.meta.url),
    JSON.stringify(out, null, 2) + "\n",
  );
  console.error(`\nwrote bench/results.json (${out.seconds} s)`);
  if (s.profileDir) {
    const files = [...Deno.readDirSync(s.profileDir)].map((e) => e.name).sort();
    console.error(
      `CPU profiles of the proxies in ${s.profileDir}: ${files.join(", ")}\n` +
        `summarise with: deno run --allow-read bench/profile_summary.ts ${s.profileDir}/${
          files[0] ?? "s2.cpuprofile"
        }`,
    );
  }
  return 0;
}

if (import.meta.main) {
  // `--routing` is a separate benchmark (a simulated fleet in virtual time).
  if (Deno.args.includes("--routing")) {
    const { main: routing } = await import("./routing.ts");
    routing(Deno.args.filter((a) => a !== "--routing"));
    Deno.exit(0);
  }
  Deno.exit(await main());
}
