/** A loopback TCP echo server: each connection gets back what it sent. */
export interface EchoServer {
  port: number;
  close(): Promise<void>;
}

/** Starts one on 127.0.0.1 with an ephemeral port. */
export function echoServer(): EchoServer {
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
        } catch {
          // Already closed.
        }
      }
      await done.catch(() => {});
    },
  };
}
