/**
 * `deno task soak`: a bounded soak run (opt-in, not part of CI). Starts an
 * end-to-end fleet (real sshd per instance, fake engines, fake vast API, the
 * real proxy wiring), drives mixed streaming and plain traffic through it
 * while a chaos loop restarts random engines and sshds, and reports requests,
 * errors by cause and RSS over time.
 *
 * Fails (exit 1) when memory grows without bound (RSS at the end above
 * 1.5 × RSS after warm-up + 48 MiB), when a request hangs past its deadline,
 * or when the fleet does not heal (all healthy, nothing in flight) after the
 * chaos stops.
 *
 * Usage: deno task soak [--duration 2m] [--instances 3] [--concurrency 8] [--chaos-every 6s]
 */
import { parseDuration } from "../lib/cli/units.ts";
import { startE2eFleet } from "../tests/_helpers/e2e_fleet.ts";
import { sshdAvailable } from "../tests/_helpers/sshd.ts";

function arg(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && Deno.args[i + 1] !== undefined ? Deno.args[i + 1] : fallback;
}

const durationMs = parseDuration(arg("duration", "2m")) ?? 120_000;
const instances = Math.max(2, Number(arg("instances", "3")) || 3);
const concurrency = Math.max(1, Number(arg("concurrency", "8")) || 8);
const chaosEveryMs = parseDuration(arg("chaos-every", "6s")) ?? 6_000;
const warmupMs = Math.min(20_000, Math.round(durationMs * 0.2));
const REQUEST_DEADLINE_MS = 30_000;
const MiB = 1024 * 1024;

if (!sshdAvailable()) {
  console.error("soak: /usr/sbin/sshd is required");
  Deno.exit(1);
}

const errors = new Map<string, number>();
const countError = (cause: string): void => {
  errors.set(cause, (errors.get(cause) ?? 0) + 1);
};
let requests = 0;
let ok = 0;
const rss: { atMs: number; mib: number }[] = [];
const chaosLog: string[] = [];

const fleet = await startE2eFleet({
  models: Array.from({ length: instances }, () => "m"),
  tokenDelayMs: 5,
  tokens: 40,
  healthIntervalMs: 500,
  keepaliveIntervalMs: 1_000,
  keepaliveCountMax: 3,
});
const started = Date.now();
const elapsed = () => Date.now() - started;
const stop = new AbortController();
let exitCode = 0;

/** One request of a random kind; every outcome is counted under one cause. */
async function oneRequest(): Promise<void> {
  const kind = ["stream", "stream", "plain", "sse"][Math.floor(Math.random() * 4)];
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(new Error("deadline")), REQUEST_DEADLINE_MS);
  requests++;
  try {
    const init: RequestInit = kind === "sse" ? { signal: deadline.signal } : {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m", messages: [], stream: kind === "stream" }),
      signal: deadline.signal,
    };
    const path = kind === "sse" ? "/sse?n=30&interval=10" : "/v1/chat/completions";
    const res = await fetch(`${fleet.proxy.url}${path}`, init);
    const text = await res.text().catch((err) => {
      throw deadline.signal.aborted ? err : new Error("truncated");
    });
    if (res.status !== 200) return countError(`http ${res.status}`);
    if (kind !== "plain" && !text.includes("[DONE]")) return countError("stream ended early");
    ok++;
  } catch (err) {
    if (deadline.signal.aborted) countError("HUNG (deadline)");
    else if (err instanceof Error && err.message === "truncated") countError("stream truncated");
    else countError(`client error: ${err instanceof Error ? err.name : String(err)}`);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    stop.signal.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

try {
  await fleet.waitHealthy(instances, 30_000);
  console.log(
    `soak: ${instances} instances, ${concurrency} clients, ${durationMs / 1000}s, chaos every ~${
      chaosEveryMs / 1000
    }s`,
  );

  const workers = Array.from({ length: concurrency }, async () => {
    while (!stop.signal.aborted) await oneRequest();
  });

  const chaos = (async () => {
    while (!stop.signal.aborted && elapsed() < durationMs - 15_000) {
      await sleep(chaosEveryMs * (0.5 + Math.random()));
      if (stop.signal.aborted || elapsed() >= durationMs - 15_000) break;
      const i = Math.floor(Math.random() * instances);
      const downMs = 500 + Math.floor(Math.random() * 2_500);
      if (Math.random() < 0.5) {
        chaosLog.push(`${(elapsed() / 1000).toFixed(0)}s engine ${i} down ${downMs}ms`);
        await fleet.engines[i].close();
        await sleep(downMs);
        await fleet.engines[i].restart();
      } else {
        chaosLog.push(`${(elapsed() / 1000).toFixed(0)}s sshd ${i} killed ${downMs}ms`);
        await fleet.sshds[i].kill("SIGKILL");
        await sleep(downMs);
        await fleet.sshds[i].restart();
      }
    }
  })();

  const sampler = (async () => {
    while (!stop.signal.aborted) {
      rss.push({ atMs: elapsed(), mib: Deno.memoryUsage().rss / MiB });
      const last = rss.at(-1)!;
      console.log(
        `  ${(last.atMs / 1000).toFixed(0).padStart(4)}s  rss ${last.mib.toFixed(1)} MiB  ` +
          `requests ${requests}  ok ${ok}  healthy ${fleet.proxy.status().counts.healthy}/${instances}`,
      );
      await sleep(5_000);
    }
  })();

  await sleep(durationMs);
  stop.abort();
  await Promise.all([...workers, chaos, sampler]);

  // After the chaos: the fleet must heal on its own and hold nothing in flight.
  let healed = true;
  try {
    await fleet.waitHealthy(instances, 20_000);
    const deadline = Date.now() + 5_000;
    while (fleet.proxy.status().counts.inFlight > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    if (fleet.proxy.status().counts.inFlight > 0) healed = false;
  } catch {
    healed = false;
  }

  const afterWarmup = rss.find((s) => s.atMs >= warmupMs) ?? rss[0];
  const end = rss.at(-1)!;
  const limit = afterWarmup.mib * 1.5 + 48;
  console.log("\nchaos:");
  for (const line of chaosLog) console.log(`  ${line}`);
  console.log("\nerrors by cause:");
  if (errors.size === 0) console.log("  none");
  for (const [cause, n] of [...errors].sort((a, b) => b[1] - a[1])) {
    console.log(`  ${String(n).padStart(6)}  ${cause}`);
  }
  console.log(
    `\nrequests ${requests}, ok ${ok}, errors ${requests - ok} ` +
      `(${((100 * (requests - ok)) / Math.max(1, requests)).toFixed(2)}%)`,
  );
  console.log(
    `rss after warm-up ${afterWarmup.mib.toFixed(1)} MiB, end ${end.mib.toFixed(1)} MiB, ` +
      `limit ${limit.toFixed(1)} MiB`,
  );
  const hung = errors.get("HUNG (deadline)") ?? 0;
  if (end.mib > limit) {
    console.log("FAIL: memory grew without bound");
    exitCode = 1;
  }
  if (hung > 0) {
    console.log(`FAIL: ${hung} request(s) hung past ${REQUEST_DEADLINE_MS} ms`);
    exitCode = 1;
  }
  if (!healed) {
    console.log("FAIL: the fleet did not heal after the chaos stopped");
    exitCode = 1;
  }
  if (exitCode === 0) console.log("PASS");
} finally {
  stop.abort();
  await fleet.close();
}
Deno.exit(exitCode);
