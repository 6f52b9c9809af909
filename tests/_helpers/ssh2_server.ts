// deno-lint-ignore-file no-explicit-any
/**
 * An in-process ssh2 Server on loopback and a real ssh2 Client connected to
 * it over our DenoSocket (as lib/tunnel/connect.ts runs ssh2), for tunnel
 * tests that need a peer they script: each `exec` request gets a channel
 * stream handed to `onExec`, with the server-side connection.
 */
import type net from "node:net";
import ssh2 from "ssh2";
import { DenoSocket } from "../../lib/tunnel/deno_socket.ts";

const { Client, Server, utils } = ssh2 as any;
const hostKey = utils.generateKeyPairSync("ed25519").private;

export interface Ssh2Pair {
  /** The client, ready (authenticated). */
  client: any;
  /** Opens an exec channel on the client. */
  exec(cmd?: string): Promise<any>;
  /** Ends the client and stops the server. */
  close(): void;
}

/** Starts the server, connects the client (AES-GCM, no compression) and waits until it is ready. */
export async function ssh2Pair(onExec: (stream: any, conn: any) => void): Promise<Ssh2Pair> {
  const server = new Server({ hostKeys: [hostKey] }, (c: any) => {
    c.on("error", () => {});
    c.on("authentication", (ctx: any) => ctx.accept());
    c.on("ready", () => {
      c.on("session", (accept: any) => {
        accept().on("exec", (acc: any) => onExec(acc(), c));
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const client = new Client();
  client.on("error", () => {});
  try {
    const ready = new Promise<void>((resolve, reject) => {
      client.on("ready", resolve);
      client.on("close", () => reject(new Error("ssh2 client closed before ready")));
    });
    client.connect({
      sock: new DenoSocket(await Deno.connect({ hostname: "127.0.0.1", port })),
      username: "u",
      password: "p",
      algorithms: { cipher: ["aes128-gcm@openssh.com"], compress: ["none"] },
    });
    await ready;
  } catch (err) {
    server.close();
    throw err;
  }
  return {
    client,
    exec: (cmd = "x") =>
      new Promise((resolve, reject) =>
        client.exec(cmd, (err: unknown, ch: any) => err ? reject(err) : resolve(ch))
      ),
    close() {
      client.end();
      server.close();
    },
  };
}
