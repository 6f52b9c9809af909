// deno-lint-ignore-file no-explicit-any
/**
 * lib/tunnel/channel_destroy.ts: a real ssh2 Client (over DenoSocket, as
 * connect.ts runs it) against an in-process ssh2 Server. A channel whose two
 * sides finish is destroyed by Node's stream machinery; the replacement must
 * not call `end()` on its finished writable side (ssh2's does, building an
 * error nobody receives), and must still end and close a channel whose
 * writable side is open.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type net from "node:net";
import ssh2 from "ssh2";
import { DenoSocket } from "../../lib/tunnel/deno_socket.ts";
import "../../lib/tunnel/connect.ts";
import { channelDestroyInstalled, SSH2_DESTROY } from "../../lib/tunnel/channel_destroy.ts";

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

/** Records, for each `end()` call on `ch`, whether its writable side had finished. */
function spyEnd(ch: any): boolean[] {
  const calls: boolean[] = [];
  const end = ch.end;
  ch.end = function (...args: unknown[]) {
    calls.push(this.writableFinished);
    return end.apply(this, args);
  };
  return calls;
}

Deno.test("channel destroy: installed by connect.ts", () => {
  assert.equal(channelDestroyInstalled(), true);
});

for (const own of [true, false]) {
  Deno.test(`channel destroy: a channel finished both ways closes${own ? " without end() on its finished side" : " (ssh2's own: end() again)"}`, async () => {
    await withChannel(async (ch, serverSaw) => {
      if (!own) ch.destroy = SSH2_DESTROY;
      const calls = spyEnd(ch);
      const got: Buffer[] = [];
      ch.on("data", (b: Buffer) => got.push(b));
      const closed = new Promise((r) => ch.on("close", r));
      ch.end(Buffer.from("ping"));
      await closed;
      assert.equal(Buffer.concat(got).toString(), "ping");
      // The first call is ours (open side); any later one came from destroy().
      assert.equal(calls[0], false);
      const onFinished = calls.slice(1).filter((f) => f).length;
      assert.equal(onFinished, own ? 0 : 1, `end() calls on a finished side: ${calls}`);
      assert.ok(serverSaw.includes("eof"));
    });
  });
}

Deno.test("channel destroy: an open writable side is still ended (EOF sent) and the channel closed", async () => {
  await withChannel(async (ch, serverSaw) => {
    const calls = spyEnd(ch);
    const closed = new Promise((r) => ch.on("close", r));
    ch.resume();
    ch.destroy();
    await closed;
    assert.deepEqual(calls.slice(0, 1), [false], "destroy() ended the open side");
    for (let i = 0; i < 100 && !serverSaw.includes("eof"); i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.ok(serverSaw.includes("eof"), `server saw ${serverSaw}`);
  });
});
