/**
 * `Conn.write` over a real `direct-tcpip` channel from the tunnel's
 * `openChannel` to a real sshd and a TCP echo engine: small writes take the
 * `tryWriteNow` shortcut, a write larger than the peer's window and packet
 * size goes through the Writable and waits for window, small writes made
 * while it waits must queue behind it, and later small writes take the
 * shortcut again. Everything must come back byte-exact and in order.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import { endClient } from "../../lib/tunnel/connect.ts";
import { openChannel } from "../../lib/tunnel/ssh.ts";
import type { TryWriteNow } from "../../lib/tunnel/channel_write.ts";
import { Conn } from "../../lib/http1/conn.ts";
import { echoServer } from "../_helpers/echo_server.ts";
import { connectTestSshd, sshdAvailable, startSshd, waitFor } from "../_helpers/sshd.ts";

const ignore = !sshdAvailable();

/** `n` bytes that differ from write to write (a shifted or dropped write shows). */
function piece(seq: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seq * 31 + i * 7 + (i >> 8)) & 0xff;
  return b;
}

Deno.test({
  name: "Conn.write over a real channel: shortcut and Writable writes interleave byte-exact",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const echo = echoServer();
    const conn = await connectTestSshd(sshd);
    let c: Conn | undefined;
    try {
      const ch = await openChannel(conn.client, echo.port)() as ClientChannel & TryWriteNow;
      assert.equal(typeof ch.tryWriteNow, "function", "openChannel attaches the shortcut");
      // Count what the shortcut took and what it left to write().
      let fast = 0;
      let declined = 0;
      const real = ch.tryWriteNow;
      ch.tryWriteNow = function (bytes: Uint8Array) {
        const ok = real.call(this, bytes);
        if (ok) fast++;
        else declined++;
        return ok;
      };
      const outgoing = (ch as unknown as { outgoing: { window: number; packetSize: number } })
        .outgoing;
      c = new Conn(ch);
      const sent: Uint8Array[] = [];
      let seq = 0;
      const write = (n: number) => {
        const b = piece(seq++, n);
        sent.push(b);
        c!.write(b);
      };

      // The echo comes back while we write (Conn pauses the channel above
      // its high-water mark, so it must be read concurrently).
      let expected = Infinity;
      const got: Buffer[] = [];
      let gotLen = 0;
      const reading = (async () => {
        while (gotLen < expected) {
          const b = await c!.read();
          if (b === null) break;
          got.push(Buffer.from(b));
          gotLen += b.byteLength;
        }
      })();

      // 1. Many small sequential writes (requests): all take the shortcut,
      // and each lowers ssh2's view of the peer's window (no adjust can
      // arrive within this synchronous loop).
      const window0 = outgoing.window;
      let smallTotal = 0;
      for (let i = 0; i < 200; i++) {
        const n = 1 + (i * 37) % 3000;
        smallTotal += n;
        write(n);
      }
      assert.equal(fast, 200);
      assert.equal(declined, 0);
      assert.equal(outgoing.window, window0 - smallTotal, "the window went down by every byte");

      // 2. One write larger than the peer's window and packet size: it goes
      // through the Writable and ssh2 holds its tail until window returns.
      const big = outgoing.window + 3 * outgoing.packetSize + 7;
      assert.ok(big > outgoing.packetSize);
      write(big);
      assert.equal(fast, 200, "the big write is not a shortcut");
      assert.ok(ch.writableLength > 0, "the big write waits for window");
      // 3. Small writes made meanwhile must queue behind it, not overtake it.
      for (let i = 0; i < 20; i++) write(1 + i * 13);
      assert.equal(fast, 200, "no shortcut while the Writable holds bytes");
      assert.equal(declined, 21);

      // 4. Once it has all gone out, small writes take the shortcut again
      // (ssh2 leaves a stale `_chunk` behind, which must not matter), mixed
      // with writes of exactly one packet and one byte more.
      await waitFor("big write sent", () => ch.writableLength === 0, 10_000);
      for (let i = 0; i < 100; i++) {
        if (i % 25 === 24) write(outgoing.packetSize + 1);
        else if (i % 25 === 12) write(outgoing.packetSize);
        else write(1 + (i * 53) % 900);
        // Let window adjusts arrive now and then, so later writes fit again.
        if (i % 10 === 9) await waitFor("drained", () => ch.writableLength === 0, 10_000);
      }
      assert.ok(fast >= 200 + 90, `shortcut used again after the big write (${fast})`);
      assert.ok(declined >= 21 + 4, `packet+1 writes declined (${declined})`);

      // 5. Bytes held in a corked Writable (window to spare) must not be
      // overtaken either.
      await waitFor("drained", () => ch.writableLength === 0, 10_000);
      const before = declined;
      ch.cork();
      const a = piece(seq++, 10);
      sent.push(a);
      const drained = c.writeAndDrain(a); // through write(): held by the cork
      write(20);
      ch.uncork();
      await drained;
      assert.equal(declined, before + 1, "no shortcut past corked bytes");
      for (let i = 0; i < 5; i++) write(5 + i);

      expected = sent.reduce((n, b) => n + b.byteLength, 0);
      await Promise.race([
        reading,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`echo stalled at ${gotLen}/${expected}`)), 15_000)
        ),
      ]);
      assert.equal(gotLen, expected, "every byte came back");
      const want = Buffer.concat(sent);
      const have = Buffer.concat(got);
      if (!have.equals(want)) {
        let at = 0;
        while (at < want.length && have[at] === want[at]) at++;
        assert.fail(`echoed bytes differ from byte ${at} of ${want.length}`);
      }
      assert.equal(c.written, expected);
    } finally {
      c?.destroy();
      endClient(conn.client);
      await echo.close();
      await sshd.stop();
    }
  },
});
