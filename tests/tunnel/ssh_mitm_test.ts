/**
 * A hostile network between the proxy and a real OpenSSH: a TCP
 * man-in-the-middle (tests/_helpers/tcp_mitm.ts) that, once the session is
 * up, flips one bit, injects garbage, sends an impossible packet length and
 * stalls, or cuts the stream mid-chunk, in the sshd → proxy direction. The
 * client must report it (an 'error', on which the tunnel drops the
 * connection, or a 'close'), bounded in time; the process must not crash;
 * and the channel must never deliver a byte that differs from what the
 * echo server sent (only a prefix of it).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { connectEndpoint, endClient } from "../../lib/tunnel/connect.ts";
import { loadAuthSources } from "../../lib/tunnel/keys.ts";
import { forwardTo, sshdAvailable, startSshd } from "../_helpers/sshd.ts";
import { echoServer } from "../_helpers/echo_server.ts";
import { startTcpMitm } from "../_helpers/tcp_mitm.ts";

const ignore = !sshdAvailable();

for (const attack of ["flip", "garbage", "cut", "length"] as const) {
  Deno.test({
    name: `SSH through a hostile MITM (${attack}): the connection ends, no altered byte delivered`,
    ignore,
    async fn() {
      const sshd = await startSshd();
      const echo = echoServer();
      const m = startTcpMitm(sshd.port);
      try {
        for (let round = 0; round < 3; round++) {
          const conn = await connectEndpoint(
            { host: "127.0.0.1", port: m.port, path: "direct" },
            {
              instanceId: 1,
              username: "root",
              auth: loadAuthSources({ sshKeys: [sshd.clientKeyPath] }),
              knownHosts: null,
              readyTimeoutMs: 10_000,
              keepaliveIntervalMs: 60_000,
              keepaliveCountMax: 3,
            },
          );
          let errors = 0;
          let isClosed = false;
          conn.client.on("error", () => errors++);
          conn.client.on("close", () => (isClosed = true));
          try {
            const ch = await forwardTo(conn.client, echo.port);
            ch.on("error", () => {});
            // Armed while the session is quiet, so a bad length lands at a
            // packet boundary; the next chunk from sshd carries echoed data.
            m.arm(attack);
            const sent = randomBytes(256 * 1024);
            const got: Buffer[] = [];
            ch.on("data", (b: Buffer) => got.push(Buffer.from(b)));
            for (let off = 0; off < sent.length; off += 700) {
              ch.write(sent.subarray(off, Math.min(sent.length, off + 700)));
            }
            const deadline = Date.now() + 8_000;
            while (!isClosed && errors === 0 && Date.now() < deadline) {
              await new Promise((r) => setTimeout(r, 10));
            }
            const back = Buffer.concat(got);
            assert.ok(
              sent.subarray(0, back.length).equals(back),
              `${attack}: the channel delivered bytes that differ from what was sent`,
            );
            assert.ok(m.fired, "the attack never fired");
            assert.ok(isClosed || errors > 0, `${attack}: the SSH connection did not end`);
          } finally {
            endClient(conn.client);
          }
        }
      } finally {
        await m.close();
        await echo.close();
        await sshd.stop();
      }
    },
  });
}
