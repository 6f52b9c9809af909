/** A loopback TCP server for tests: `port`, and `close()` that ends every connection. */
export interface TestTcpServer {
  port: number;
  close(): Promise<void>;
}

/** The same, by its old name: each connection gets back what it sent. */
export type EchoServer = TestTcpServer;

/**
 * Starts a server on 127.0.0.1 with an ephemeral port that runs `serve` for
 * each connection and closes the connection when `serve` ends.
 */
export function tcpServer(serve: (c: Deno.Conn) => Promise<void>): TestTcpServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const closeQuietly = (c: Deno.Conn) => {
    try {
      c.close();
    } catch {
      // Already closed.
    }
  };
  const done = (async () => {
    for await (const c of listener) {
      conns.add(c);
      serve(c).catch(() => {}).finally(() => {
        conns.delete(c);
        closeQuietly(c);
      });
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) closeQuietly(c);
      await done.catch(() => {});
    },
  };
}

/** An echo server: each connection gets back what it sent. */
export function echoServer(): EchoServer {
  return tcpServer((c) => c.readable.pipeTo(c.writable));
}
