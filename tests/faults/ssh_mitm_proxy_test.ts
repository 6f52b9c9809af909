/**
 * The whole proxy (real wiring, real sshd, ssh2 over DenoSocket, our own
 * AES-GCM) with one instance's SSH connection behind a hostile TCP
 * man-in-the-middle that flips a bit, injects garbage or cuts the stream
 * while small completions are in flight. The proxy must not crash, no
 * client may get a corrupted answer (every 200 is the engine's JSON), no
 * request may reach an engine twice (no replay of a request that may have
 * run), the other backend must keep serving, and no secret may appear in
 * the logs.
 */
import assert from "node:assert/strict";
import { sshdAvailable } from "../_helpers/sshd.ts";
import { E2E_API_KEY, startE2eFleet } from "../_helpers/e2e_fleet.ts";
import { type MitmAttack, startTcpMitm, type TcpMitm } from "../_helpers/tcp_mitm.ts";

for (const attack of ["flip", "garbage", "cut", "length"] as MitmAttack[]) {
  Deno.test({
    name:
      `proxy with a hostile MITM on one SSH connection (${attack}): no crash, no corrupt answer, no replay`,
    ignore: !sshdAvailable(),
    async fn() {
      let mitm: TcpMitm | undefined;
      const fleet = await startE2eFleet({
        models: ["m", "m"],
        sshPortFor: (port, i) => i === 0 ? (mitm = startTcpMitm(port)).port : port,
      });
      try {
        await fleet.waitHealthy(2);
        const send = async (n: number) => {
          const res = await fetch(`${fleet.proxy.url}/v1/chat/completions?n=${n}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: "m", messages: [{ role: "user", content: `q${n}` }] }),
          });
          const text = await res.text();
          return { status: res.status, text };
        };
        const problems: string[] = [];
        let n = 0;
        let ok = 0, failed = 0;
        const worker = async () => {
          while (n < 240) {
            const i = n++;
            // Strike once the fleet is busy.
            if (i === 60) mitm!.arm(attack);
            const r = await send(i);
            if (r.status === 200) {
              ok++;
              try {
                const body = JSON.parse(r.text);
                if (!Array.isArray(body.choices)) problems.push(`${i}: 200 without choices`);
              } catch {
                problems.push(`${i}: 200 with a body that is not JSON: ${r.text.slice(0, 80)}`);
              }
            } else if (r.status === 502) failed++;
            else problems.push(`${i}: status ${r.status} ${r.text.slice(0, 120)}`);
          }
        };
        await Promise.all(Array.from({ length: 12 }, worker));
        assert.ok(mitm!.fired, "the attack never fired");
        assert.deepEqual(problems, []);
        // Each request reached an engine at most once.
        const seen = new Map<string, number>();
        for (const e of fleet.engines) {
          for (const p of e.stats.paths) {
            if (p.includes("?n=")) seen.set(p, (seen.get(p) ?? 0) + 1);
          }
        }
        const twice = [...seen].filter(([, c]) => c > 1).map(([p]) => p);
        assert.deepEqual(twice, [], "requests that reached an engine twice");
        // Still serving afterwards.
        for (let i = 0; i < 10; i++) {
          const r = await send(1000 + i);
          assert.equal(r.status, 200, r.text);
        }
        const logs = JSON.stringify(fleet.logger.records);
        for (const secret of [E2E_API_KEY, ...fleet.tokens]) {
          assert.ok(!logs.includes(secret), "a secret reached the logs");
        }
        assert.ok(ok > 0 && ok + failed === 240, `${ok} answered, ${failed} failed`);
      } finally {
        await fleet.close();
        await mitm?.close();
      }
    },
  });
}
