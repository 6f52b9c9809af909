/**
 * A child process for flood_test.ts: the real proxy wiring (`startProxy`
 * through startLocalProxy: one fake engine, default serve options) in a
 * process of its own, so the test can run it under a low open-file limit
 * (`prlimit --nofile=1024`). Prints `{port}` then one JSON line per warning
 * or error log record; exits when stdin closes.
 */
import { startLocalProxy } from "./_local_proxy.ts";

// As `vastproxy serve` does: signals bound before the listener (see serve.ts).
Deno.addSignalListener("SIGINT", () => {});
Deno.addSignalListener("SIGTERM", () => {});

const p = await startLocalProxy({
  instances: 1,
  healthIntervalMs: 500,
  config: { maxBodyBytes: 32 * 1024 * 1024 },
});
const started = Date.now();
while (p.proxy.status().counts.healthy < 1 && Date.now() - started < 10_000) {
  await new Promise((r) => setTimeout(r, 20));
}
console.log(JSON.stringify({ port: Number(new URL(p.proxy.url).port) }));
let seen = 0;
const timer = setInterval(() => {
  for (const r of p.logger.records.slice(seen)) {
    if (r.level === "warn" || r.level === "error") {
      console.log(JSON.stringify({ level: r.level, msg: r.msg, ...r.fields }));
    }
  }
  seen = p.logger.records.length;
}, 100);
for await (const _ of Deno.stdin.readable) { /* until the test closes stdin */ }
clearInterval(timer);
await p.close();
