/**
 * `wrk` as the load generator for the request scenarios (S1W, S2W): the
 * client #14's own numbers were measured with. The fetch-based generator
 * (load.ts) is a second Deno process on the same two vCPUs; its own CPU
 * and cache footprint weighs more on a path through another Deno process
 * (the proxy) than on one through OpenSSH's small `ssh` client, so both
 * clients are reported, side by side, in one run.
 *
 * A job's workers are spread over one `wrk` process per target, or per
 * `spread` when more (so every path of a scenario sees the same client
 * shape: S2 runs four processes of eight connections against one proxy as
 * against four `ssh -L` ports). Rates add up; a run's p50 is the median of
 * the processes' p50s and its p99 their largest p99.
 *
 * Latency at concurrency 1 is timed in the Lua script, not read from wrk's
 * report: wrk 4 "corrects" its histogram for coordinated omission, adding
 * made-up samples below every response slower than twice the mean
 * interval. A path with rare 40 ms stalls (`ssh -L` has them) then reports
 * a p50 well above its real one, which flattered the proxy's S1W gap by
 * 10–20 µs. With one connection per process the script's request() and
 * response() hooks bracket each request exactly; with more, wrk's own
 * (corrected) percentiles are kept, and only the rate is a target there.
 */
import type { RequestsResult } from "./load.ts";

/** A request job for `wrk` (as load.ts's, minus the count limit). */
export interface WrkJob {
  targets: string[];
  method: "POST";
  path: string;
  body: string;
  headers: Record<string, string>;
  concurrency: number;
  durationMs: number;
  /** At least this many `wrk` processes (targets are reused in turn). */
  spread: number;
}

/** Path of `wrk` when it is installed, else null. */
export async function findWrk(): Promise<string | null> {
  try {
    const out = await new Deno.Command("wrk", {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    // `wrk --version` prints its banner and exits 1.
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return /^wrk /m.test(text) ? "wrk" : null;
  } catch {
    return null;
  }
}

/** Runs `wrk` jobs; the Lua script that makes the request is written once per job shape. */
export class WrkRunner {
  #dir: string;
  #scripts = new Map<string, string>();

  constructor(dir: string) {
    this.#dir = dir;
  }

  async run(job: WrkJob): Promise<RequestsResult> {
    const procs = Math.max(job.spread, job.targets.length, 1);
    const per = Math.max(1, Math.floor(job.concurrency / procs));
    const timed = per === 1;
    const script = await this.#script(job, timed);
    const seconds = Math.max(1, Math.round(job.durationMs / 1000));
    // A short warm-up on every connection first, unmeasured.
    await Promise.all(
      Array.from(
        { length: procs },
        (_, i) => wrk(job.targets[i % job.targets.length], per, 1, script, job.path, timed),
      ),
    );
    const runs = await Promise.all(
      Array.from(
        { length: procs },
        (_, i) => wrk(job.targets[i % job.targets.length], per, seconds, script, job.path, timed),
      ),
    );
    const p50s = runs.map((r) => r.p50Ms).sort((a, b) => a - b);
    const errors = runs.reduce((a, r) => a + r.errors, 0);
    return {
      ok: Math.max(0, runs.reduce((a, r) => a + r.ok, 0) - errors),
      errors,
      firstError: runs.find((r) => r.firstError)?.firstError ?? null,
      seconds,
      rps: runs.reduce((a, r) => a + r.rps, 0),
      p50Ms: p50s[Math.floor((p50s.length - 1) / 2)],
      p99Ms: Math.max(...runs.map((r) => r.p99Ms)),
    };
  }

  async #script(job: WrkJob, timed: boolean): Promise<string> {
    const lua = wrkScript(job, timed);
    let path = this.#scripts.get(lua);
    if (!path) {
      path = `${this.#dir}/wrk_${this.#scripts.size}.lua`;
      await Deno.writeTextFile(path, lua);
      this.#scripts.set(lua, path);
    }
    return path;
  }
}

/**
 * The Lua script that makes `job`'s request; `timed` adds the per-request
 * timing (one connection per process only, see the top of this file).
 */
export function wrkScript(
  job: Pick<WrkJob, "method" | "body" | "headers">,
  timed: boolean,
): string {
  return [
    `wrk.method = ${JSON.stringify(job.method)}`,
    `wrk.body = ${luaString(job.body)}`,
    ...Object.entries(job.headers).map(([k, v]) =>
      `wrk.headers[${luaString(k)}] = ${luaString(v)}`
    ),
  ].join("\n") + "\n" + (timed ? TIMING_LUA : "");
}

/**
 * A Lua string literal (decimal escapes for anything not plainly printable).
 * Escapes take all three digits: `\10` followed by a "5" would read as
 * `\105`, an "i".
 */
export function luaString(s: string): string {
  let out = '"';
  for (const ch of new TextEncoder().encode(s)) {
    out += ch >= 0x20 && ch < 0x7f && ch !== 0x22 && ch !== 0x5c
      ? String.fromCharCode(ch)
      : `\\${String(ch).padStart(3, "0")}`;
  }
  return out + '"';
}

/**
 * Times each request from the script (for one connection per process: one
 * request in flight, so one start time), into a histogram of whole µs, and
 * prints its nearest-rank p50 and p99 at the end as `raw latency us: …`.
 * `done()` runs in wrk's main Lua state, so it collects the histograms from
 * the threads' states. LuaJIT's ffi reads CLOCK_MONOTONIC (1).
 */
const TIMING_LUA = `
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } vastproxy_timespec;
int clock_gettime(int clk, vastproxy_timespec *tp);
]]
local ts = ffi.new("vastproxy_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end
local formatted = nil
local started = nil
hist = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function request()
  if formatted == nil then formatted = wrk.format() end
  started = now_us()
  return formatted
end
function response(status, headers, body)
  if started ~= nil then
    local us = math.floor(now_us() - started)
    hist[us] = (hist[us] or 0) + 1
    started = nil
  end
end
function done(summary, latency, requests)
  local all, n, keys = {}, 0, {}
  for _, t in ipairs(threads) do
    for us, count in pairs(t:get("hist") or {}) do
      if all[us] == nil then table.insert(keys, us) end
      all[us] = (all[us] or 0) + count
      n = n + count
    end
  end
  table.sort(keys)
  local function rank(q)
    local want, seen = math.max(1, math.ceil(n * q)), 0
    for _, us in ipairs(keys) do
      seen = seen + all[us]
      if seen >= want then return us end
    end
    return -1
  end
  io.write(string.format("raw latency us: n=%d p50=%d p99=%d\\n", n, rank(0.5), rank(0.99)))
end
`;

async function wrk(
  base: string,
  connections: number,
  seconds: number,
  script: string,
  path: string,
  timed: boolean,
): Promise<RequestsResult> {
  const out = await new Deno.Command("wrk", {
    args: ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", script, `${base}${path}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return parseWrk(
    text,
    seconds,
    out.success ? null : new TextDecoder().decode(out.stderr),
    timed,
  );
}

/**
 * The numbers of one `wrk --latency` report. A run that failed or printed no
 * report counts one error at least, so no verdict reads it as clean; so
 * does a `timed` run whose script recorded nothing (wrk skips the
 * `response()` hook for a response without header lines), rather than
 * falling back to wrk's corrected percentiles unnoticed.
 */
export function parseWrk(
  text: string,
  seconds: number,
  failure: string | null,
  timed = false,
): RequestsResult {
  const num = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const total = num(/^\s*(\d+) requests in /m);
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = socket ? socket.slice(1).reduce((a, v) => a + Number(v), 0) : 0;
  const counted = (Number.isNaN(non2xx) ? 0 : non2xx) + socketErrors;
  const ok = Number.isNaN(total) ? 0 : total;
  // Only a histogram with samples in it: an empty one prints p50=-1.
  const raw = /^raw latency us: n=([1-9]\d*) p50=(\d+) p99=(\d+)$/m.exec(text);
  const untimed = timed && ok > 0 && !raw;
  const failed = failure !== null || Number.isNaN(total) || untimed;
  const errors = failed ? Math.max(1, counted) : counted;
  return {
    ok,
    errors,
    firstError: failure ??
      (Number.isNaN(total)
        ? "wrk: no report"
        : untimed
        ? "wrk: the timing script recorded no response"
        : counted > 0
        ? `wrk: ${counted} errors`
        : null),
    seconds,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    // The script's own timing when it ran (see the top of this file).
    p50Ms: raw ? Number(raw[2]) / 1000 : latencyMs(text, "50%"),
    p99Ms: raw ? Number(raw[3]) / 1000 : latencyMs(text, "99%"),
  };
}

/** A percentile line of wrk's latency distribution, in ms. */
function latencyMs(text: string, pct: string): number {
  const m = new RegExp(`^\\s*${pct}\\s+([\\d.]+)(us|ms|s)\\s*$`, "m").exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : v * 1000;
}
