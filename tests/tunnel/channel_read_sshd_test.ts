/**
 * `Conn` reading through `readDirect` over real `direct-tcpip` channels from
 * the tunnel's `openChannel` to a real sshd and a small TCP engine: many
 * sequential responses arrive byte-exact and in order; a response several
 * times the 2 MiB SSH window, read slowly, is held back at HIGH_WATER (the
 * window stops, memory stays bounded) and then completes byte-exact, which
 * it can only do if draining restarts the window; EOF, channel close and a
 * lost SSH connection end the `Conn`; a byte arriving while idle destroys it.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import { endClient } from "../../lib/tunnel/connect.ts";
import type { Connection } from "../../lib/tunnel/connect.ts";
import { openChannel } from "../../lib/tunnel/ssh.ts";
import { Conn } from "../../lib/http1/conn.ts";
import { connectTestSshd, type Sshd, sshdAvailable, startSshd, waitFor } from "../_helpers/sshd.ts";
import { tcpServer } from "../_helpers/echo_server.ts";

const ignore = !sshdAvailable();

const MAX_WINDOW = 2 * 1024 * 1024; // ssh2 1.17's window per channel
const PACKET = 32 * 1024; // and its packet size
const HIGH_WATER = 256 * 1024; // lib/http1/conn.ts

/** `n` bytes that differ from response to response (a shifted or lost chunk shows). */
function pattern(seq: number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seq * 31 + i * 7 + (i >> 8) + (i >> 16)) & 0xff;
  return b;
}

/**
 * A line-driven engine: `S <seq> <n>` sends `pattern(seq, n)`; `L <ms>`
 * sends one byte after `ms` (unasked, to an idle stream); `E` sends "bye"
 * and closes its socket.
 */
function engine() {
  return tcpServer(async (c: Deno.Conn) => {
    const dec = new TextDecoder();
    let line = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await c.read(buf);
      if (n === null) return;
      line += dec.decode(buf.subarray(0, n));
      let nl;
      while ((nl = line.indexOf("\n")) >= 0) {
        const [cmd, a, b] = line.slice(0, nl).split(" ");
        line = line.slice(nl + 1);
        if (cmd === "S") {
          const out = pattern(Number(a), Number(b));
          for (let at = 0; at < out.length;) at += await c.write(out.subarray(at));
        } else if (cmd === "L") {
          setTimeout(() => c.write(new Uint8Array([33])).catch(() => {}), Number(a));
        } else if (cmd === "E") {
          await c.write(new TextEncoder().encode("bye"));
          c.close();
          return;
        }
      }
    }
  });
}

type Ssh2Read = ClientChannel & { _waitChanDrain: boolean; incoming: { window: number } };

async function withTunnel(
  fn: (open: () => Promise<{ ch: Ssh2Read; conn: Conn }>, ssh: Connection) => Promise<void>,
) {
  let sshd: Sshd | undefined;
  const eng = engine();
  let ssh: Connection | undefined;
  const conns: Conn[] = [];
  try {
    sshd = await startSshd();
    ssh = await connectTestSshd(sshd);
    const opener = openChannel(ssh.client, eng.port);
    const open = async () => {
      const ch = await opener() as Ssh2Read;
      const conn = new Conn(ch);
      conns.push(conn);
      assert.ok(Object.hasOwn(ch, "push"), "readDirect took the channel");
      assert.equal(ch.listenerCount("data"), 0, "Conn does not listen for 'data'");
      return { ch, conn };
    };
    await fn(open, ssh);
  } finally {
    for (const c of conns) c.destroy();
    if (ssh) endClient(ssh.client);
    await eng.close();
    await sshd?.stop();
  }
}

async function within<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: stalled after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads exactly `n` bytes (a chunk may not run past them); fails on early EOF. */
async function readExactly(conn: Conn, n: number): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  let have = 0;
  while (have < n) {
    const b = await conn.read();
    if (b === null) assert.fail(`EOF after ${have} of ${n} bytes`);
    if (have + b.byteLength > n) {
      conn.unshift(b.subarray(n - have));
      parts.push(b.subarray(0, n - have));
      have = n;
    } else {
      parts.push(b);
      have += b.byteLength;
    }
  }
  return Buffer.concat(parts);
}

function assertSame(have: Uint8Array, want: Uint8Array, what: string) {
  if (Buffer.compare(have, want) === 0) return;
  let at = 0;
  while (at < want.length && have[at] === want[at]) at++;
  assert.fail(`${what}: bytes differ from byte ${at} of ${want.length} (got ${have.length})`);
}

const enc = new TextEncoder();

Deno.test({
  name: "readDirect over a real channel: sequential responses byte-exact and in order",
  ignore,
  async fn() {
    await withTunnel(async (open) => {
      const { conn } = await open();
      for (let seq = 0; seq < 300; seq++) {
        // HTTP-sized: mostly small, some spanning many SSH packets.
        const n = seq % 50 === 49 ? 200_000 + seq : 1 + (seq * 7919) % 9000;
        conn.write(enc.encode(`S ${seq} ${n}\n`));
        const got = await within(`response ${seq}`, 10_000, readExactly(conn, n));
        assertSame(got, pattern(seq, n), `response ${seq}`);
        assert.equal(conn.buffered, 0, `nothing past response ${seq}`);
        assert.ok(conn.clean);
      }
    });
  },
});

Deno.test({
  name: "readDirect over a real channel: a large slow read is held at HIGH_WATER, then completes",
  ignore,
  async fn() {
    await withTunnel(async (open) => {
      const { ch, conn } = await open();
      const bound = HIGH_WATER + MAX_WINDOW + PACKET;
      const n = 3 * MAX_WINDOW + 12345;
      conn.write(enc.encode(`S 7 ${n}\n`));
      // Nobody reads: the engine fills the window, and no more is granted.
      await waitFor(
        "back-pressure",
        () => ch._waitChanDrain && conn.buffered >= HIGH_WATER,
        10_000,
      );
      let held = conn.buffered;
      for (;;) {
        await new Promise((r) => setTimeout(r, 150));
        if (conn.buffered === held) break; // the rest of the window has landed
        held = conn.buffered;
      }
      assert.ok(held <= bound, `held ${held} > ${bound}`);
      assert.ok(held < n, "the engine was stopped, not done");
      assert.equal(ch._waitChanDrain, true);
      // Read slowly: pause now and then, so back-pressure engages again.
      const want = pattern(7, n);
      const got = new Uint8Array(n);
      let have = 0;
      let peak = held;
      let waits = 0;
      let nextPause = 256 * 1024;
      await within(
        "slow read",
        30_000,
        (async () => {
          while (have < n) {
            const b = await conn.read();
            if (b === null) assert.fail(`EOF after ${have} of ${n}`);
            got.set(b, have);
            have += b.byteLength;
            if (have >= nextPause) {
              nextPause += 768 * 1024;
              await new Promise((r) => setTimeout(r, 60));
              if (ch._waitChanDrain) waits++;
              peak = Math.max(peak, conn.buffered);
            }
          }
        })(),
      );
      assertSame(got, want, "large response");
      assert.ok(peak <= bound, `peak ${peak} > ${bound}`);
      assert.ok(waits >= 2, `back-pressure engaged repeatedly (${waits})`);
      assert.equal(conn.buffered, 0);
      // And the channel still carries the next response.
      conn.write(enc.encode(`S 8 1000\n`));
      assertSame(await within("next", 10_000, readExactly(conn, 1000)), pattern(8, 1000), "next");
    });
  },
});

Deno.test({
  name: "readDirect over a real channel: EOF ends the Conn; the channel still closes",
  ignore,
  async fn() {
    await withTunnel(async (open) => {
      const { ch, conn } = await open();
      const seen: string[] = [];
      ch.once("end", () => seen.push("end"));
      const closed = new Promise<void>((r) => ch.once("close", () => r()));
      conn.write(enc.encode(`S 1 5000\nE\n`));
      const want = Buffer.concat([pattern(1, 5000), enc.encode("bye")]);
      assertSame(await within("response", 10_000, readExactly(conn, 5003)), want, "before EOF");
      assert.equal(await within("EOF", 10_000, conn.read()), null);
      assert.equal(conn.dead, true);
      assert.deepEqual(seen, ["end"], "the Readable ended though nobody read it");
      // The channel is half-open (sshd closes it once we end our side too):
      // ssh2 emits 'close' only after 'end', so this needs the 'end' above.
      ch.end();
      await within("channel close", 10_000, closed);
    });
  },
});

Deno.test({
  name: "readDirect over a real channel: a lost SSH connection ends a waiting read",
  ignore,
  async fn() {
    await withTunnel(async (open, ssh) => {
      const { conn } = await open();
      conn.write(enc.encode(`S 2 100\n`));
      assertSame(await within("response", 10_000, readExactly(conn, 100)), pattern(2, 100), "");
      const reading = conn.read();
      (ssh.client as unknown as { _sock: { destroy(): void } })._sock.destroy();
      assert.equal(await within("read after loss", 10_000, reading), null);
      assert.equal(conn.dead, true);
    });
  },
});

Deno.test({
  name: "readDirect over a real channel: a byte arriving while idle destroys the Conn",
  ignore,
  async fn() {
    await withTunnel(async (open) => {
      const { ch, conn } = await open();
      conn.write(enc.encode(`S 3 10\n`));
      assertSame(await within("response", 10_000, readExactly(conn, 10)), pattern(3, 10), "");
      const closed = new Promise<void>((r) => ch.once("close", () => r()));
      let dead = 0;
      conn.onDead = () => dead++;
      conn.idle = true;
      conn.write(enc.encode(`L 100\n`));
      await waitFor("idle conn destroyed", () => conn.dead, 10_000);
      assert.equal(dead, 1);
      assert.equal(conn.clean, false);
      await within("channel close", 10_000, closed);
    });
  },
});
