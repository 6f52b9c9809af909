/**
 * Real OpenSSH: 24 MB echoed through one channel while sshd rekeys every
 * 256 KiB (RekeyLimit) and the client starts key exchanges every 15 ms,
 * strict KEX negotiated by default, large inbound packets opening in
 * WebCrypto (lib/tunnel/open_queue.ts). Every byte must come back, in order.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { endClient } from "../../lib/tunnel/connect.ts";
import { openQueueStats } from "../../lib/tunnel/open_queue.ts";
import {
  connectTestSshd,
  forwardTo,
  roundTrip,
  sshdAvailable,
  startSshd,
} from "../_helpers/sshd.ts";
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
        const rekeys = setInterval(() => {
          try {
            (conn.client as unknown as { rekey(): void }).rekey();
          } catch { /* one in progress */ }
        }, 15);
        try {
          await roundTrip(ch, data, [65_000]);
        } finally {
          clearInterval(rekeys);
        }
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
