/**
 * lib/tunnel/packet_cipher.ts (installed by connect.ts) against a real
 * OpenSSH with `RekeyLimit 64K`: several MB through one channel in both
 * directions, in writes of varying size (so packets from a few bytes to
 * 32 KiB, over both the JavaScript and the node:crypto path), across many
 * server-initiated key exchanges, for aes128-gcm and aes256-gcm. The bytes
 * must come back intact, and the replacement must have sealed and opened
 * the packets (not ssh2's own classes).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { endClient, type SshAlgorithms } from "../../lib/tunnel/connect.ts";
import { packetCipherInstalled, packetCipherStats } from "../../lib/tunnel/packet_cipher.ts";
import { openQueueStats } from "../../lib/tunnel/open_queue.ts";
import {
  connectTestSshd,
  forwardTo,
  roundTrip,
  sshdAvailable,
  startSshd,
} from "../_helpers/sshd.ts";
import { echoServer } from "../_helpers/echo_server.ts";

const ignore = !sshdAvailable();

Deno.test({
  name: "own AES-GCM packets: MBs both ways through OpenSSH across many rekeys (RekeyLimit 64K)",
  ignore,
  async fn() {
    assert.ok(packetCipherInstalled(), "connect.ts did not install the packet cipher");
    const sshd = await startSshd({ extraConfig: ["RekeyLimit 64K"] });
    const echo = echoServer();
    try {
      for (const cipher of ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]) {
        const algorithms = {
          cipher: [cipher],
          hmac: ["hmac-sha2-256-etm@openssh.com"],
        } as SshAlgorithms;
        const conn = await connectTestSshd(sshd, algorithms);
        let handshakes = 0;
        const negotiated: string[] = [];
        conn.client.on("handshake", (n) => {
          handshakes++;
          negotiated.push(n.cs.cipher, n.sc.cipher);
        });
        const before = { ...packetCipherStats };
        const asyncBefore = openQueueStats.openedAsync;
        try {
          const ch = await forwardTo(conn.client, echo.port);
          await roundTrip(ch, randomBytes(3 * 1024 * 1024));
          ch.close();
        } finally {
          endClient(conn.client);
        }
        // 6 MB through a 64 KiB limit: the server rekeys dozens of times.
        assert.ok(handshakes >= 20, `${cipher}: only ${handshakes} rekeys`);
        assert.ok(negotiated.every((c) => c === cipher), `negotiated ${negotiated}`);
        // Both paths in both directions: small packets (window adjusts, short
        // writes) in JavaScript, large ones through node:crypto.
        const d = (k: keyof typeof before) => packetCipherStats[k] - before[k];
        const counts = `sealed ${d("sealed")} (JS ${d("sealedJs")}), ` +
          `opened ${d("opened")} (JS ${d("openedJs")})`;
        assert.ok(d("sealedJs") > 100 && d("sealed") - d("sealedJs") > 50, counts);
        assert.ok(d("openedJs") > 100 && d("opened") - d("openedJs") > 50, counts);
        // Large inbound packets opened in WebCrypto, in order, across the rekeys.
        const opensAsync = openQueueStats.openedAsync - asyncBefore;
        assert.ok(opensAsync > 50, `${counts}, async ${opensAsync}`);
      }
    } finally {
      await echo.close();
      await sshd.stop();
    }
  },
});
