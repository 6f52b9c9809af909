// deno-lint-ignore-file no-explicit-any
/**
 * lib/tunnel/channel_destroy.ts edges (from a hostile review) against an
 * in-process ssh2 Server, ours and ssh2's own alike: a writable side that is
 * ending but not finished, destroy() twice, and the peer closing first.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type net from "node:net";
import ssh2 from "ssh2";
import { DenoSocket } from "../../lib/tunnel/deno_socket.ts";
import "../../lib/tunnel/connect.ts";
import { SSH2_DESTROY } from "../../lib/tunnel/channel_destroy.ts";

const { Client, Server, utils } = ssh2 as any;
const hostKey = utils.generateKeyPairSync("ed25519").private;
/** An exec channel to a server that echoes until EOF, then exits and closes. */
async function withChannel(fn: (ch: any, serverSaw: string[]) => Promise<void>): Promise<void> {
  const serverSaw: string[] = [];
  const server = new Server({ hostKeys: [hostKey] }, (c: any) => {
    c.on("error", () => {});
    c.on("authentication", (ctx: any) => ctx.accept());
    c.on("ready", () => {
      c.on("session", (accept: any) => {
        accept().on("exec", (acc: any) => {
          const st = acc();
          st.on("data", (b: Buffer) => st.write(b));
          st.on("end", () => {
            serverSaw.push("eof");
            st.exit(0);
            st.end();
          });
          st.on("close", () => serverSaw.push("close"));
        });
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const client = new Client();
  try {
    client.on("error", () => {});
    const ready = new Promise<void>((r) => client.on("ready", r));
    client.connect({
      sock: new DenoSocket(await Deno.connect({ hostname: "127.0.0.1", port })),
      username: "u",
      password: "p",
    });
    await ready;
    const ch = await new Promise<any>((resolve, reject) =>
      client.exec("x", (err: unknown, c: any) => err ? reject(err) : resolve(c))
    );
    await fn(ch, serverSaw);
  } finally {
    client.end();
    server.close();
  }
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

for (const own of [true, false]) {
  const tag = own ? "ours" : "ssh2's";
  Deno.test(`channel destroy (${tag}): writable ending but not finished (window full), destroy twice`, async () => {
    await withChannel(async (ch, serverSaw) => {
      if (!own) ch.destroy = SSH2_DESTROY;
      const errs: unknown[] = [];
      ch.on("error", (e: unknown) => errs.push(e));
      ch.resume();
      const big = Buffer.alloc(3 * 1024 * 1024, 1);
      ch.write(big);
      ch.end();
      assert.equal(ch.writableEnded, true);
      assert.equal(ch.writableFinished, false);
      const closed = new Promise((r) => ch.on("close", r));
      ch.destroy();
      ch.destroy();
      await Promise.race([
        closed,
        tick(3000).then(() => {
          throw new Error("no close");
        }),
      ]);
      assert.deepEqual(errs, []);
      void serverSaw;
    });
  });

  Deno.test(`channel destroy (${tag}): peer closed first, then destroy() twice`, async () => {
    await withChannel(async (ch, serverSaw) => {
      if (!own) ch.destroy = SSH2_DESTROY;
      const errs: unknown[] = [];
      ch.on("error", (e: unknown) => errs.push(e));
      ch.resume();
      const closed = new Promise((r) => ch.on("close", r));
      ch.end(Buffer.from("x"));
      await closed;
      ch.destroy();
      ch.destroy();
      await tick(20);
      assert.deepEqual(errs, []);
      assert.ok(serverSaw.includes("eof"));
    });
  });
}
