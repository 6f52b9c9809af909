/**
 * A TCP man-in-the-middle on loopback for SSH fault tests: forwards
 * 127.0.0.1:`port` to a target port, and on request tampers once with the
 * next chunk the target sends (towards the proxy) on the newest connection:
 * flips a bit, injects garbage, sends a packet length nothing accepts and
 * then stalls, or cuts the stream mid-chunk with a half-close.
 */

/** What the next target → client chunk suffers. */
export type MitmAttack = "flip" | "garbage" | "cut" | "length";

/** A running MITM. */
export interface TcpMitm {
  port: number;
  /** Tampers once with the next chunk towards the client on the newest connection. */
  arm(attack: MitmAttack): void;
  /** True once the armed attack was carried out. */
  readonly fired: boolean;
  /** Connections accepted so far. */
  readonly connections: number;
  close(): Promise<void>;
}

async function writeAll(c: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let at = 0; at < b.length;) at += await c.write(b.subarray(at));
}

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* closed */ }
}

/** Starts a MITM in front of 127.0.0.1:`targetPort`. */
export function startTcpMitm(targetPort: number): TcpMitm {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let armed: MitmAttack | null = null;
  let fired = false;
  let target: Deno.Conn | null = null;
  let latest: Deno.Conn | null = null;
  let accepted = 0;

  const relayDown = async (server: Deno.Conn, client: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    let cut = false;
    try {
      for (;;) {
        const n = await server.read(buf);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        if (cut) continue; // after a cut the client hears nothing more
        const attack = armed;
        if (attack !== null && !fired && target === client) {
          fired = true;
          if (attack === "flip") {
            const bit = Math.floor(Math.random() * n * 8);
            chunk[bit >> 3] ^= 1 << (bit & 7);
          } else if (attack === "garbage") {
            await writeAll(client, crypto.getRandomValues(new Uint8Array(200)));
          } else if (attack === "length") {
            // A packet length no SSH implementation accepts, then silence (no FIN).
            await writeAll(client, new Uint8Array([0x7f, 0xff, 0xff, 0xf0, 1, 2, 3, 4]));
            cut = true;
            continue;
          } else {
            await writeAll(client, chunk.subarray(0, Math.max(1, n >> 1)));
            await client.closeWrite().catch(() => {});
            cut = true;
            continue;
          }
        }
        await writeAll(client, chunk);
      }
    } catch { /* either side gone */ }
    if (!cut) closeQuietly(client);
  };

  const done = (async () => {
    for await (const client of listener) {
      accepted++;
      let server: Deno.Conn;
      try {
        server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
      } catch {
        closeQuietly(client);
        continue;
      }
      conns.add(client).add(server);
      latest = client;
      client.readable.pipeTo(server.writable).catch(() => {}).finally(() => closeQuietly(server));
      void relayDown(server, client);
    }
  })();

  return {
    port: (listener.addr as Deno.NetAddr).port,
    arm(attack) {
      armed = attack;
      fired = false;
      target = latest;
    },
    get fired() {
      return fired;
    },
    get connections() {
      return accepted;
    },
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await done.catch(() => {});
    },
  };
}
