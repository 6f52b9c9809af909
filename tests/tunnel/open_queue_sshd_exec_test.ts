/**
 * Asynchronous opens against real OpenSSH (from a hostile review): bulk exec
 * output with the peer exiting and closing right after, and the socket
 * destroyed mid-download while holds are pending.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Client, ClientChannel } from "ssh2";
import { endClient } from "../../lib/tunnel/connect.ts";
import { openQueueStats } from "../../lib/tunnel/open_queue.ts";
import { connectTestSshd, sshdAvailable, startSshd } from "../_helpers/sshd.ts";

function exec(client: Client, cmd: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) => client.exec(cmd, (e, c) => e ? reject(e) : resolve(c)));
}

Deno.test({
  name:
    "async opens, real sshd: 3 execs of 12 MiB then exit 7 + immediate session close (repeated), every byte and exit code",
  ignore: !sshdAvailable(),
  async fn() {
    const sshd = await startSshd({ extraConfig: ["RekeyLimit 1M"] });
    const before = openQueueStats.openedAsync;
    try {
      for (let round = 0; round < 3; round++) {
        const conn = await connectTestSshd(sshd);
        try {
          const ch = await exec(conn.client, "head -c 12582912 /dev/zero | tr '\\0' 'a'; exit 7");
          let n = 0;
          let bad = 0;
          let code: number | undefined;
          ch.on("data", (b: Buffer) => {
            n += b.length;
            for (let i = 0; i < b.length; i += 997) if (b[i] !== 97) bad++;
          });
          ch.on("exit", (c: number) => (code = c));
          await new Promise<void>((r, j) => {
            ch.on("close", () => r());
            setTimeout(() => j(new Error(`timeout: n=${n}`)), 20_000);
          });
          assert.equal(n, 12582912, `round ${round}`);
          assert.equal(bad, 0);
          assert.equal(code, 7);
        } finally {
          endClient(conn.client);
        }
      }
      assert.ok(openQueueStats.openedAsync - before > 100);
    } finally {
      await sshd.stop();
    }
  },
});

Deno.test({
  name:
    "async opens, real sshd: socket destroyed mid-download (holds pending): client 'close' arrives, nothing unhandled",
  ignore: !sshdAvailable(),
  async fn() {
    const sshd = await startSshd({ extraConfig: ["RekeyLimit 512K"] });
    const unhandled: unknown[] = [];
    const onU = (e: PromiseRejectionEvent) => {
      e.preventDefault();
      unhandled.push(e.reason);
    };
    globalThis.addEventListener("unhandledrejection", onU);
    try {
      for (const at of [1, 3_000_000, 6_000_000]) {
        const conn = await connectTestSshd(sshd);
        const closed = new Promise<void>((r) => conn.client.on("close", () => r()));
        conn.client.on("error", () => {});
        const ch = await exec(conn.client, "head -c 33554432 /dev/zero");
        let n = 0;
        await new Promise<void>((r) => {
          ch.on("data", (b: Buffer) => {
            n += b.length;
            if (n >= at) r();
          });
        });
        (conn.client as unknown as { _sock: { destroy(): void } })._sock.destroy();
        await Promise.race([
          closed,
          new Promise((_, j) =>
            setTimeout(() => j(new Error(`no close after destroy at ${at}`)), 5000)
          ),
        ]);
      }
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(unhandled, []);
    } finally {
      globalThis.removeEventListener("unhandledrejection", onU);
      await sshd.stop();
    }
  },
});
