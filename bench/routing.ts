/**
 * `deno task bench --routing [--minutes N] [--rounds N] [--seed N] [--json PATH]`:
 * compares routing policies on a simulated fleet (bench/_routing_sim.ts) in
 * virtual time — round-robin, least-in-flight, SGLang's published
 * cache-aware router and vastproxy's `cache-aware` — on three workloads at
 * 50%, 80% and 95% of fleet capacity. Each round draws one trace per
 * workload and load from its seed and runs every policy on that same trace
 * (interleaved rounds); the table shows medians over rounds. See
 * docs/BENCHMARKS.md for the method and the numbers.
 */
import { CacheAware } from "../lib/proxy/cache_aware_policy.ts";
import { createPolicy, type Policy } from "../lib/proxy/policies.ts";
import {
  BLOCK_TOKENS,
  type GpuSpec,
  type Session,
  type SimRequest,
  simulate,
} from "./_routing_sim.ts";
import { SglangCacheAware } from "./_sglang_cache_aware.ts";
import { median } from "./_stats.ts";
import { prng } from "../tests/_helpers/prng.ts";

/** The fleet: 2× RTX 4090, 1× A100 80GB, 1× H100, an ~8B model; vast-like prices. */
export const FLEET: readonly GpuSpec[] = [
  {
    name: "RTX 4090",
    count: 1,
    t0: 12,
    t1: 0.6,
    prefillTps: 8_000,
    slots: 24,
    kvTokens: 60_000,
    dph: 0.35,
  },
  {
    name: "RTX 4090",
    count: 1,
    t0: 12,
    t1: 0.6,
    prefillTps: 8_000,
    slots: 24,
    kvTokens: 60_000,
    dph: 0.35,
  },
  {
    name: "A100 SXM4 80GB",
    count: 1,
    t0: 10,
    t1: 0.35,
    prefillTps: 12_000,
    slots: 48,
    kvTokens: 400_000,
    dph: 0.9,
  },
  {
    name: "H100 SXM",
    count: 1,
    t0: 6,
    t1: 0.2,
    prefillTps: 24_000,
    slots: 64,
    kvTokens: 400_000,
    dph: 1.9,
  },
];

/** Policies compared, built fresh for each run. */
export const POLICIES: [
  string,
  (now: () => number, seed: number) => Policy & { entries?: number },
][] = [
  ["round-robin", () => createPolicy("round-robin")],
  ["least-inflight", () => createPolicy("least-inflight")],
  ["sglang-cache-aware", (now, seed) => new SglangCacheAware({ now, seed })],
  ["cache-aware", () => new CacheAware()],
];

/** Deterministic PRNG (mulberry32), shared with the tests. */
export const rng: (seed: number) => () => number = prng;

/** Appends `tokens` of segment `seg` to cumulative block hashes `blocks` (full blocks only). */
function extend(blocks: readonly number[], seg: number, tokens: number): number[] {
  const out = blocks.slice();
  let prev = out.length ? out[out.length - 1] : 0x2545f491;
  for (let k = 0; k < Math.floor(tokens / BLOCK_TOKENS); k++) {
    const hi = Math.floor(prev / 0x200000);
    let a = Math.imul(hi ^ seg, 0x01000193) ^ k;
    let b = Math.imul((prev % 0x200000) ^ a, 0x5bd1e995);
    a ^= a >>> 13;
    b ^= b >>> 15;
    prev = (a >>> 0) * 0x200000 + (b >>> 11);
    out.push(prev);
  }
  return out;
}

const between = (r: () => number, lo: number, hi: number) => Math.round(lo + r() * (hi - lo));

/** A workload: sessions of turns, and the per-turn sizes capacity is planned from. */
interface Workload {
  name: string;
  /** Builds one session's turn plan. */
  session(r: () => number, id: number): { turns: Turn[]; sys: number; sysTokens: number };
}
interface Turn {
  /** Tokens appended before this turn's request (user message, tool result). */
  inTokens: number;
  outTokens: number;
  thinkMs: number;
}

const SYSTEM_PROMPTS = [900, 1400, 1800, 1100];
const AGENT_PROMPTS = [3000, 2600, 3400];

/** The three workloads of issue #15 item 5. */
export const WORKLOADS: Workload[] = [
  {
    name: "multi-turn chat",
    session: (r) => {
      const sys = Math.floor(r() * SYSTEM_PROMPTS.length);
      const turns = Array.from({ length: between(r, 2, 10) }, () => ({
        inTokens: between(r, 30, 300),
        outTokens: between(r, 50, 500),
        thinkMs: between(r, 3_000, 20_000),
      }));
      return { turns, sys, sysTokens: SYSTEM_PROMPTS[sys] };
    },
  },
  {
    name: "agent loops",
    session: (r) => {
      const sys = Math.floor(r() * AGENT_PROMPTS.length);
      const turns = Array.from({ length: between(r, 4, 16) }, (_, i) => ({
        inTokens: i === 0 ? between(r, 300, 800) : between(r, 200, 1500),
        outTokens: between(r, 80, 250),
        thinkMs: between(r, 500, 3_000),
      }));
      return { turns, sys: 100 + sys, sysTokens: AGENT_PROMPTS[sys] };
    },
  },
  {
    name: "independent prompts",
    session: (r, id) => ({
      turns: [{ inTokens: between(r, 50, 1000), outTokens: between(r, 20, 400), thinkMs: 0 }],
      sys: -1 - id,
      sysTokens: 0,
    }),
  },
];

/**
 * Requests per second the fleet sustains on `w`, assuming shared system
 * prompts are cached everywhere and all other prompt tokens are prefilled:
 * per engine 1 / (out × t(slots)/slots + uncached prompt / prefill rate).
 */
export function fleetCapacity(w: Workload, seed: number): { rps: number; turnsPerSession: number } {
  const r = rng(seed ^ 0x5eed);
  let turns = 0, out = 0, prompt = 0, sessions = 0;
  for (let s = 0; s < 2000; s++) {
    const plan = w.session(r, s);
    sessions++;
    let ctx = 0;
    for (const t of plan.turns) {
      ctx += t.inTokens;
      turns++;
      out += t.outTokens;
      prompt += ctx;
      ctx += t.outTokens;
    }
  }
  const meanOut = out / turns, meanPrompt = prompt / turns;
  const rps = FLEET.reduce((sum, g) => {
    const batch = g.t0 + g.t1 * g.slots;
    const seconds = (meanOut * batch) / g.slots / 1000 + meanPrompt / g.prefillTps;
    return sum + 1 / seconds;
  }, 0);
  return { rps, turnsPerSession: turns / sessions };
}

/** One trace: sessions with Poisson starts over `minutes`, at `load` × capacity. */
export function trace(w: Workload, load: number, minutes: number, seed: number): () => Session[] {
  const cap = fleetCapacity(w, seed);
  const sessionRate = (load * cap.rps) / cap.turnsPerSession / 1000; // per ms
  const r = rng(seed);
  const plans: { start: number; plan: ReturnType<Workload["session"]>; id: number }[] = [];
  for (let t = 0, id = 0;; id++) {
    t += -Math.log(1 - r()) / sessionRate;
    if (t > minutes * 60_000) break;
    plans.push({ start: t, plan: w.session(r, id), id });
  }
  // Sessions hold mutable history, so each run gets fresh ones from the same plans.
  return () =>
    plans.map(({ start, plan, id }) => {
      let history = extend([], plan.sys, plan.sysTokens);
      let tokens = plan.sysTokens;
      return {
        start,
        next(i) {
          const turn = plan.turns[i];
          if (!turn) return null;
          const blocks = extend(history, id * 64 + i * 2 + 1, turn.inTokens);
          const promptTokens = tokens + turn.inTokens;
          const after = extend(blocks, id * 64 + i * 2 + 2, turn.outTokens);
          history = after;
          tokens = promptTokens + turn.outTokens;
          const req: SimRequest = {
            arrival: 0,
            blocks,
            promptTokens,
            outTokens: turn.outTokens,
            after,
          };
          return { req, thinkMs: turn.thinkMs };
        },
      };
    });
}

/** The numbers reported per run. */
export interface RunStats {
  ttftP50: number;
  ttftP99: number;
  e2eP50: number;
  e2eP99: number;
  tokPerS: number;
  hitRate: number;
  usdPerMTok: number;
  rejected: number;
  unfinished: number;
  maxEntries: number | null;
  maxQueue: number;
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Runs one policy on one trace and summarises it. */
export function runOne(
  make: (now: () => number, seed: number) => Policy & { entries?: number },
  sessions: Session[],
  minutes: number,
  seed: number,
): RunStats {
  let now = 0;
  const policy = make(() => now, seed);
  const horizonMs = minutes * 60_000 * 2 + 600_000;
  const tracked = sessions.map((s) => ({
    start: s.start,
    next: (i: number, t: number) => {
      now = t;
      return s.next(i, t);
    },
  }));
  const out = simulate(FLEET, policy, tracked, { horizonMs });
  const done = out.requests.filter((q) => q.done !== undefined);
  const ttft = done.map((q) => q.firstToken! - q.arrival);
  const e2e = done.map((q) => q.done! - q.arrival);
  const tokens = done.reduce((s, q) => s + q.outTokens, 0);
  const prompt = out.engines.reduce((s, e) => s + e.promptTokens, 0);
  const cached = out.engines.reduce((s, e) => s + e.cachedTokens, 0);
  const hours = out.endMs / 3_600_000;
  const dph = FLEET.reduce((s, g) => s + g.dph, 0);
  return {
    ttftP50: pct(ttft, 50),
    ttftP99: pct(ttft, 99),
    e2eP50: pct(e2e, 50),
    e2eP99: pct(e2e, 99),
    tokPerS: tokens / (out.endMs / 1000),
    hitRate: prompt ? cached / prompt : 0,
    usdPerMTok: (dph * hours) / (tokens / 1e6),
    rejected: out.rejected,
    unfinished: out.requests.length - done.length - out.rejected,
    maxEntries: out.maxPolicyEntries,
    maxQueue: out.maxQueueDepth,
  };
}

function parse(args: string[]) {
  const at = (f: string) => {
    const i = args.indexOf(f);
    return i >= 0 ? args[i + 1] : undefined;
  };
  return {
    minutes: Number(at("--minutes") ?? 10),
    rounds: Number(at("--rounds") ?? 3),
    seed: Number(at("--seed") ?? 1),
    json: at("--json"),
  };
}

const f0 = (x: number) => (Number.isFinite(x) ? Math.round(x).toString() : "-");

/** Entry point for `deno task bench --routing`. */
export function main(args: string[]): void {
  const s = parse(args);
  const loads = [0.5, 0.8, 0.95];
  const rows: Record<string, unknown>[] = [];
  console.log(
    `routing bench — simulated fleet ${FLEET.map((g) => g.name).join(", ")}; ` +
      `${s.minutes} simulated min of arrivals, median of ${s.rounds} rounds (seeds ${s.seed}…)`,
  );
  const header =
    "| workload | load | policy | TTFT p50 ms | TTFT p99 ms | E2E p50 ms | E2E p99 ms | " +
    "out tok/s | prefix hit | $/M out tok | 503s | prefix entries max |";
  console.log(header);
  console.log("|" + "---|".repeat(12));
  for (const w of WORKLOADS) {
    for (const load of loads) {
      const perPolicy = new Map<string, RunStats[]>(POLICIES.map(([n]) => [n, []]));
      for (let round = 0; round < s.rounds; round++) {
        const seed = s.seed + round;
        const sessions = trace(w, load, s.minutes, seed);
        // Interleaved: every policy runs this round's trace before the next round.
        for (const [name, make] of POLICIES) {
          perPolicy.get(name)!.push(runOne(make, sessions(), s.minutes, seed));
        }
      }
      for (const [name, runs] of perPolicy) {
        const m = (k: keyof RunStats) => median(runs.map((r) => Number(r[k] ?? NaN)));
        const row = {
          workload: w.name,
          load,
          policy: name,
          ...Object.fromEntries(
            (Object.keys(runs[0]) as (keyof RunStats)[]).map((k) => [k, m(k)]),
          ),
          rounds: runs,
        };
        rows.push(row);
        console.log(
          `| ${w.name} | ${load * 100}% | ${name} | ${f0(m("ttftP50"))} | ${f0(m("ttftP99"))} | ` +
            `${f0(m("e2eP50"))} | ${f0(m("e2eP99"))} | ${f0(m("tokPerS"))} | ` +
            `${(m("hitRate") * 100).toFixed(1)}% | ${m("usdPerMTok").toFixed(2)} | ` +
            `${f0(m("rejected") + m("unfinished"))} | ${
              runs[0].maxEntries === null ? "-" : f0(Math.max(...runs.map((r) => r.maxEntries!)))
            } |`,
        );
      }
    }
  }
  if (s.json) Deno.writeTextFileSync(s.json, JSON.stringify(rows, null, 1));
}

if (import.meta.main) main(Deno.args);
