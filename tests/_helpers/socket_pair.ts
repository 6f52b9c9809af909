/**
 * A DenoSocket (lib/tunnel/deno_socket.ts) connected on loopback to a plain
 * `Deno.TcpConn` that the test drives by hand as the peer.
 */
import { DenoSocket } from "../../lib/tunnel/deno_socket.ts";

export interface SocketPair {
  sock: DenoSocket;
  peer: Deno.TcpConn;
  /** Destroys the socket and closes the peer (either may be closed already). */
  close(): void;
}

export async function socketPair(): Promise<SocketPair> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const peer = await accepted;
  listener.close();
  const sock = new DenoSocket(conn);
  return {
    sock,
    peer,
    close() {
      sock.destroy();
      try {
        peer.close();
      } catch { /* closed by the test */ }
    },
  };
}
