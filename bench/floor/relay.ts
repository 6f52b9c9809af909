/**
 * The bench's runtime floor (path g): the smallest byte relay, in Deno.
 * Every accepted connection gets its own upstream connection, and whatever
 * one side sends is written to the other as it is: no parsing, no crypto,
 * the least JavaScript a Deno process in the path can run. (g) − (b) is
 * what a Deno process hop costs on this machine; relay.c (path f) is the
 * same loop in C.
 *
 * Usage: deno run --allow-net relay.ts LISTEN_PORT UPSTREAM_PORT MAX_SECONDS
 * (loopback only; exits by itself after MAX_SECONDS).
 */
const [listenPort, upstreamPort, maxSeconds] = Deno.args.map(Number);
if (![listenPort, upstreamPort, maxSeconds].every((n) => Number.isInteger(n) && n > 0)) {
  console.error("usage: relay.ts LISTEN_PORT UPSTREAM_PORT MAX_SECONDS");
  Deno.exit(2);
}

const open = new Set<Deno.Conn>();

/**
 * Copies `from` to `to` until `from` ends, then passes the half-close on (as
 * `ssh -L` does): the pair closes once both directions ended, or at once on
 * an error.
 */
async function pump(from: Deno.Conn, to: Deno.Conn, pair: { ended: number }): Promise<void> {
  const buf = new Uint8Array(65536);
  let failed = false;
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let at = 0; at < n;) at += await to.write(buf.subarray(at, n));
    }
    await to.closeWrite();
  } catch {
    failed = true; // either side went away
  }
  if (!failed && ++pair.ended < 2) return;
  for (const c of [from, to]) {
    if (open.delete(c)) c.close();
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: listenPort });
setTimeout(() => {
  listener.close();
  for (const c of open) c.close();
  open.clear();
}, maxSeconds * 1000);

try {
  for await (const client of listener) {
    let upstream: Deno.TcpConn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    } catch {
      client.close();
      continue;
    }
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    open.add(client);
    open.add(upstream);
    const pair = { ended: 0 };
    pump(client, upstream, pair);
    pump(upstream, client, pair);
  }
} catch { /* the listener closed at MAX_SECONDS */ }
