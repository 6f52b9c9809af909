// deno-lint-ignore-file no-explicit-any
/**
 * The asynchronous opens (lib/tunnel/open_queue.ts) end to end: a real ssh2
 * Client over DenoSocket (packet cipher installed, as connect.ts does)
 * against an in-process ssh2 Server that writes 300 KB on an exec channel,
 * then exit 0, EOF, and ends the connection (DISCONNECT, FIN) at once.
 * ssh2's own decipher hands the client every byte and the exit status; the
 * asynchronous opens must too (a hostile review found 'end' freeing the
 * decipher while packets were still opening).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import net from "node:net";
import ssh2 from "ssh2";
import { DenoSocket } from "../../lib/tunnel/deno_socket.ts";
import { installPacketCipher, uninstallPacketCipher } from "../../lib/tunnel/packet_cipher.ts";

const { Client, Server, utils } = ssh2 as any;
const hostKey = utils.generateKeyPairSync("ed25519").private;

async function once(total: number): Promise<{ got: number; exit: unknown }> {
  const server = new Server({ hostKeys: [hostKey] }, (c: any) => {
    c.on("error", () => {});
    c.on("authentication", (ctx: any) => ctx.accept());
    c.on("ready", () => {
      c.on("session", (accept: any) => {
        accept().on("exec", (acc: any) => {
          const st = acc();
          st.write(Buffer.alloc(total, 0x61));
          st.exit(0);
          st.end();
          c.end();
        });
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const sock = new DenoSocket(await Deno.connect({ hostname: "127.0.0.1", port }));
    const client = new Client();
    client.on("error", () => {});
    const res = new Promise<{ got: number; exit: unknown }>((resolve) => {
      let got = 0;
      let exit: unknown = "none";
      client.on("ready", () => {
        client.exec("x", (err: unknown, ch: any) => {
          if (err) return resolve({ got: -1, exit: String(err) });
          ch.on("data", (b: Buffer) => (got += b.length));
          ch.on("exit", (code: unknown) => (exit = code));
        });
      });
      client.on("close", () => resolve({ got, exit }));
    });
    client.connect({
      sock,
      username: "u",
      password: "p",
      algorithms: { cipher: ["aes128-gcm@openssh.com"], compress: ["none"] },
    });
    return await res;
  } finally {
    server.close();
  }
}

for (const own of [false, true]) {
  Deno.test(`ssh2 end to end: data, exit, DISCONNECT and FIN all reach the client (${own ? "own cipher" : "ssh2's"})`, async () => {
    if (own) installPacketCipher();
    else uninstallPacketCipher();
    try {
      const results = [];
      for (let i = 0; i < 5; i++) results.push(await once(300_000));
      for (const r of results) assert.deepEqual(r, { got: 300_000, exit: 0 });
    } finally {
      installPacketCipher();
    }
  });
}
