/**
 * Real OpenSSH: 24 MB echoed through one channel while sshd rekeys every
 * 256 KiB (RekeyLimit) and the client starts key exchanges every 15 ms,
 * strict KEX negotiated by default, large inbound packets opening in
 * WebCrypto (lib/tunnel/open_queue.ts). Every byte must come back, in order.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { endClient } from "../../lib/tunnel/connect.ts";
import { openQueueStats } from "../../lib/tunnel/open_queue.ts";
import { connectTestSshd, forwardTo, sshdAvailable, startSshd } from "../_helpers/sshd.ts";
import { echoServer } from "../_helpers/echo_server.ts";

Deno.test({
  name: "async opens: 24 MB through OpenSSH with client- and server-initiated rekeys, bytes intact",
  ignore: !sshdAvailable(),
  async fn() {
    const sshd = await startSshd({ extraConfig: ["RekeyLimit 256K"] });
    const echo = echoServer();
    const before = { ...openQueueStats };
    try {
      const conn = await connectTestSshd(sshd);
      let handshakes = 0;
      conn.client.on("handshake", () => handshakes++);
      try {
        const ch = await forwardTo(conn.client, echo.port);
        const data = randomBytes(24 * 1024 * 1024);
        const got: Buffer[] = [];
        let n = 0;
        const back = new Promise<void>((resolve, reject) => {
          ch.on("data", (b: Buffer) => {
            got.push(Buffer.from(b));
            n += b.length;
            if (n >= data.length) resolve();
          });
          ch.on("close", () => reject(new Error(`closed after ${n}`)));
        });
        const rekeys = setInterval(() => {
          try {
            (conn.client as unknown as { rekey(): void }).rekey();
          } catch { /* one in progress */ }
        }, 15);
        for (let off = 0; off < data.length; off += 65_000) {
          if (!ch.write(data.subarray(off, Math.min(data.length, off + 65_000)))) {
            await new Promise((r) => ch.once("drain", r));
          }
        }
        await back;
        clearInterval(rekeys);
        assert.ok(Buffer.concat(got).equals(data), "bytes differ");
        assert.ok(handshakes > 10, `only ${handshakes} key exchanges`);
        const opens = openQueueStats.openedAsync - before.openedAsync;
        assert.ok(opens > 500, `only ${opens} asynchronous opens`);
      } finally {
        endClient(conn.client);
      }
    } finally {
      await echo.close();
      await sshd.stop();
    }
  },
});
