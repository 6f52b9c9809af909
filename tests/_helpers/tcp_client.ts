/**
 * The production HTTP/1.1 client (lib/http1/client.ts) over plain TCP
 * sockets to a local engine double, standing in for SSH channels. Test
 * doubles of tunnels and backends send through it, so unit tests run the
 * same request path as production, minus SSH.
 */
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { Http1Client, type Http1ClientOptions } from "../../lib/http1/client.ts";

/** Opens a TCP socket to 127.0.0.1:`port`, resolved once connected. */
export function openTcp(port: number, host = "127.0.0.1"): () => Promise<Duplex> {
  return () =>
    new Promise<Duplex>((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.once("connect", () => {
        socket.setNoDelay(true);
        socket.off("error", reject);
        resolve(socket);
      });
      socket.once("error", reject);
    });
}

/** An `Http1Client` whose streams are TCP sockets to 127.0.0.1:`port`. */
export function tcpHttp1Client(
  port: number,
  opts: Partial<Http1ClientOptions> = {},
): Http1Client {
  return new Http1Client(openTcp(port), { host: `127.0.0.1:${port}`, ...opts });
}

/** The port of a `http://127.0.0.1:PORT` URL. */
export function portOf(baseUrl: string): number {
  return Number(new URL(baseUrl).port);
}
