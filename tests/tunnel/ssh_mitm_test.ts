/**
 * A hostile network between the proxy and a real OpenSSH: a TCP
 * man-in-the-middle that, once the session is up and a channel is carrying
 * data, flips one bit, injects garbage, or cuts the stream mid-packet in
 * the sshd → proxy direction. The SSH connection must end (an 'error' or
 * 'close' on the client, bounded in time), the process must not crash, and
 * the channel must never deliver a byte that differs from what the echo
 * server sent (only a prefix of it).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import type { ClientChannel } from "ssh2";
import { connectEndpoint, endClient } from "../../lib/tunnel/connect.ts";
import { loadAuthSources } from "../../lib/tunnel/keys.ts";
import { sshdAvailable, startSshd } from "../_helpers/sshd.ts";

const ignore = !sshdAvailable();

function echoServer() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const done = (async () => {
    for await (const c of listener) {
      conns.add(c);
      c.readable.pipeTo(c.writable).catch(() => {}).finally(() => conns.delete(c));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await done.catch(() => {});
    },
  };
}

type Attack = "flip" | "garbage" | "cut" | "length";

/**
 * Forwards 127.0.0.1:port ↔ sshd. While `armed`, the next chunk from sshd
 * is tampered with as `attack` says (once).
 */
function mitm(sshdPort: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const state = {
    armed: null as Attack | null,
    fired: false,
    target: null as Deno.Conn | null,
  };
  let latest: Deno.Conn | null = null;
  const close = (c: Deno.Conn) => {
    try {
      c.close();
    } catch { /* closed */ }
  };
  const done = (async () => {
    for await (const client of listener) {
      const server = await Deno.connect({ hostname: "127.0.0.1", port: sshdPort });
      conns.add(client).add(server);
      latest = client;
      // proxy → sshd: untouched.
      client.readable.pipeTo(server.writable).catch(() => {}).finally(() => close(server));
      // sshd → proxy: tampered once when armed.
      (async () => {
        const buf = new Uint8Array(64 * 1024);
        try {
          for (;;) {
            const n = await server.read(buf);
            if (n === null) break;
            const chunk = buf.slice(0, n);
            const attack = state.armed;
            if (attack !== null && !state.fired && state.target === client) {
              state.fired = true;
              if (attack === "flip") {
                const bit = Math.floor(Math.random() * n * 8);
                chunk[bit >> 3] ^= 1 << (bit & 7);
              } else if (attack === "garbage") {
                await writeAll(client, randomBytes(200));
              } else if (attack === "length") {
                // A packet length ssh2 must refuse, then silence (no FIN).
                await writeAll(client, new Uint8Array([0x7f, 0xff, 0xff, 0xf0, 1, 2, 3, 4]));
                await new Promise(() => {}); // stall forever (until closed)
              } else {
                // Half a packet, then the proxy's side of the TCP stream ends.
                await writeAll(client, chunk.subarray(0, Math.max(1, n >> 1)));
                await client.closeWrite().catch(() => {});
                continue;
              }
            }
            if (state.fired && attack === "cut" && state.target === client) continue;
            await writeAll(client, chunk);
          }
        } catch { /* either side gone */ }
        close(client);
      })();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    state,
    latest: () => latest,
    async close() {
      listener.close();
      for (const c of conns) close(c);
      await done.catch(() => {});
    },
  };
}

async function writeAll(c: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let at = 0; at < b.length;) at += await c.write(b.subarray(at));
}

for (const attack of ["flip", "garbage", "cut", "length"] as const) {
  Deno.test({
    name: `SSH through a hostile MITM (${attack}): the connection ends, no altered byte delivered`,
    ignore,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const sshd = await startSshd();
      const echo = echoServer();
      const m = mitm(sshd.port);
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
          // Only this round's connection is tampered with.
          m.state.armed = null;
          m.state.fired = false;
          m.state.target = m.latest();
          let errors = 0;
          conn.client.on("error", () => errors++);
          const closed = new Promise<void>((r) => conn.client.on("close", () => r()));
          try {
            const ch = await new Promise<ClientChannel>((resolve, reject) =>
              conn.client.forwardOut(
                "127.0.0.1",
                0,
                "127.0.0.1",
                echo.port,
                (err, c) => err ? reject(err) : resolve(c),
              )
            );
            ch.on("error", () => {});
            // A bad length must come at a packet boundary: arm while the
            // session is quiet (sshd's last write ended with a whole packet).
            if (attack === "length") m.state.armed = attack;
            const sent = randomBytes(256 * 1024);
            const got: Buffer[] = [];
            ch.on("data", (b: Buffer) => {
              got.push(Buffer.from(b));
              // Arm once some data came back: the session is well under way.
              if (m.state.armed === null) m.state.armed = attack;
            });
            for (let off = 0; off < sent.length; off += 700) {
              ch.write(sent.subarray(off, Math.min(sent.length, off + 700)));
            }
            // Either the connection ends (tampered) or everything came back
            // (a flip that landed where... nothing may differ either way).
            const all = Buffer.concat(got);
            // An 'error' is what the tunnel acts on (it then destroys the
            // socket); a peer that also ends the stream gives 'close'.
            const deadline = Date.now() + 8_000;
            let isClosed = false;
            closed.then(() => (isClosed = true));
            while (!isClosed && errors === 0 && Date.now() < deadline) {
              await new Promise((r) => setTimeout(r, 10));
            }
            const ended = isClosed || errors > 0;
            const back = Buffer.concat(got);
            assert.ok(back.length >= all.length);
            assert.ok(
              sent.subarray(0, back.length).equals(back),
              `${attack}: the channel delivered bytes that differ from what was sent`,
            );
            assert.ok(m.state.fired, "the attack never fired");
            // A tampered stream must end the SSH connection (error then close).
            assert.ok(ended, `${attack}: the SSH connection did not end (errors: ${errors})`);
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
