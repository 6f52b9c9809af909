/**
 * What channel affinity costs on a slow link. A relay on 127.0.0.1 adds
 * `--delay` ms (default 50) to every chunk in each direction between the
 * ssh2 client and a real sshd, as a far-away vast host would. Then:
 * - `same client`: sequential requests with one affinity (one client
 *   connection) reuse their pooled channel: one round trip each;
 * - `new client each time`: every request names a new affinity (a client
 *   that opens a new connection per request), so each opens a channel
 *   first: one more round trip;
 * - `engine idle > TTL`: the same client after 3.5 s idle (the pooled
 *   channel expired, as it must before the engine's 5 s keep-alive).
 *
 *     deno run -A bench/latency_link.ts [--delay 50] [--n 10]
 */
import { startFakeEngine } from "../lib/sim/fake_engine.ts";
import { testTunnelFactory } from "../tests/_helpers/config.ts";
import { startSshd, testSpec, waitFor } from "../tests/_helpers/sshd.ts";
import { send } from "../tests/_helpers/http1.ts";

const arg = (name: string, d: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i === -1 ? d : Number(Deno.args[i + 1]);
};
const delay = arg("delay", 50);
const n = arg("n", 10);

/** A TCP relay that delays each chunk by `ms`, in order, both ways. */
function delayRelay(targetPort: number, ms: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const pipe = async (from: Deno.Conn, to: Deno.Conn) => {
    let chain = Promise.resolve();
    try {
      for await (const chunk of from.readable) {
        const due = performance.now() + ms;
        chain = chain.then(async () => {
          const wait = due - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          await to.write(chunk).catch(() => {});
        });
      }
    } catch { /* closed */ }
    await chain;
    try {
      to.close();
    } catch { /* already */ }
  };
  (async () => {
    for await (const c of listener) {
      c.setNoDelay(true);
      const up = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      up.setNoDelay(true);
      void pipe(c, up);
      void pipe(up, c);
    }
  })().catch(() => {});
  return { port: (listener.addr as Deno.NetAddr).port, close: () => listener.close() };
}

const sshd = await startSshd();
const engine = await startFakeEngine({ tokenDelayMs: 0 });
const relay = delayRelay(sshd.port, delay);
const t = testTunnelFactory(sshd.clientKeyPath, `${sshd.dir}/known_hosts`, {
  readyTimeoutMs: 10_000,
}).open(testSpec(1, [{ host: "127.0.0.1", port: relay.port, path: "direct" }], engine.port));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  await waitFor("up", () => t.status().state === "up", 15_000);
  const time = async (affinity: string) => {
    const t0 = performance.now();
    const res = await send(t, "/v1/models", { affinity });
    await res.arrayBuffer();
    return performance.now() - t0;
  };
  await time("warm");
  const same: number[] = [];
  for (let i = 0; i < n; i++) same.push(await time("same"));
  const fresh: number[] = [];
  for (let i = 0; i < n; i++) fresh.push(await time(`new-${i}`));
  const idle: number[] = [];
  for (let i = 0; i < Math.min(n, 3); i++) {
    await new Promise((r) => setTimeout(r, 3500));
    idle.push(await time("same"));
  }
  console.log(`link: +${delay} ms each way (RTT ${2 * delay} ms), ${n} requests each, median ms`);
  console.log(`same client (pooled channel):      ${median(same).toFixed(1)}`);
  console.log(`new client each time (new channel): ${median(fresh).toFixed(1)}`);
  console.log(`same client after 3.5 s idle:       ${median(idle).toFixed(1)}`);
} finally {
  await t.close();
  relay.close();
  await engine.close();
  await sshd.stop();
}
