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
    const script = await this.#script(job);
    const procs = Math.max(job.spread, job.targets.length, 1);
    const per = Math.max(1, Math.floor(job.concurrency / procs));
    const seconds = Math.max(1, Math.round(job.durationMs / 1000));
    // A short warm-up on every connection first, unmeasured.
    await Promise.all(
      Array.from(
        { length: procs },
        (_, i) => wrk(job.targets[i % job.targets.length], per, 1, script, job.path),
      ),
    );
    const runs = await Promise.all(
      Array.from(
        { length: procs },
        (_, i) => wrk(job.targets[i % job.targets.length], per, seconds, script, job.path),
      ),
    );
    const p50s = runs.map((r) => r.p50Ms).sort((a, b) => a - b);
    const errors = runs.reduce((a, r) => a + r.errors, 0);
    return {
      ok: runs.reduce((a, r) => a + r.ok, 0) - errors,
      errors,
      firstError: runs.find((r) => r.firstError)?.firstError ?? null,
      seconds,
      rps: runs.reduce((a, r) => a + r.rps, 0),
      p50Ms: p50s[Math.floor((p50s.length - 1) / 2)],
      p99Ms: Math.max(...runs.map((r) => r.p99Ms)),
    };
  }

  async #script(job: WrkJob): Promise<string> {
    const lua = [
      `wrk.method = ${JSON.stringify(job.method)}`,
      `wrk.body = ${luaString(job.body)}`,
      ...Object.entries(job.headers).map(([k, v]) =>
        `wrk.headers[${luaString(k)}] = ${luaString(v)}`
      ),
    ].join("\n") + "\n";
    let path = this.#scripts.get(lua);
    if (!path) {
      path = `${this.#dir}/wrk_${this.#scripts.size}.lua`;
      await Deno.writeTextFile(path, lua);
      this.#scripts.set(lua, path);
    }
    return path;
  }
}

/** A Lua string literal (decimal escapes for anything not plainly printable). */
function luaString(s: string): string {
  let out = '"';
  for (const ch of new TextEncoder().encode(s)) {
    out += ch >= 0x20 && ch < 0x7f && ch !== 0x22 && ch !== 0x5c
      ? String.fromCharCode(ch)
      : `\\${ch}`;
  }
  return out + '"';
}

async function wrk(
  base: string,
  connections: number,
  seconds: number,
  script: string,
  path: string,
): Promise<RequestsResult> {
  const out = await new Deno.Command("wrk", {
    args: ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", "-s", script, `${base}${path}`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return parseWrk(text, seconds, out.success ? null : new TextDecoder().decode(out.stderr));
}

/** The numbers of one `wrk --latency` report. */
export function parseWrk(text: string, seconds: number, failure: string | null): RequestsResult {
  const num = (re: RegExp) => {
    const m = re.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const total = num(/^\s*(\d+) requests in /m);
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = socket ? socket.slice(1).reduce((a, v) => a + Number(v), 0) : 0;
  const errors = (Number.isNaN(non2xx) ? 0 : non2xx) + socketErrors;
  const ok = Number.isNaN(total) ? 0 : total;
  return {
    ok,
    errors,
    firstError: failure ??
      (errors > 0 ? `wrk: ${errors} errors` : Number.isNaN(total) ? "wrk: no report" : null),
    seconds,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: latencyMs(text, "50%"),
    p99Ms: latencyMs(text, "99%"),
  };
}

/** A percentile line of wrk's latency distribution, in ms. */
function latencyMs(text: string, pct: string): number {
  const m = new RegExp(`^\\s*${pct}\\s+([\\d.]+)(us|ms|s)\\s*$`, "m").exec(text);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === "us" ? v / 1000 : m[2] === "ms" ? v : v * 1000;
}
