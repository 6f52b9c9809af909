// deno-lint-ignore-file no-explicit-any
/**
 * lib/tunnel/channel_destroy.ts: a real ssh2 Client (over DenoSocket, as
 * connect.ts runs it) against an in-process ssh2 Server. A channel whose two
 * sides finish is destroyed by Node's stream machinery; the replacement must
 * not call `end()` on its finished writable side (ssh2's does, building an
 * error nobody receives), and must otherwise behave as ssh2's own: an open
 * writable side is ended and the channel closed; a side that is ending but
 * not finished, destroy() twice, and a peer that closed first raise nothing
 * (those edges from a hostile review, run against both versions).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import "../../lib/tunnel/connect.ts";
import { channelDestroyInstalled, SSH2_DESTROY } from "../../lib/tunnel/channel_destroy.ts";
import { ssh2Pair } from "../_helpers/ssh2_server.ts";

/** An exec channel to a server that echoes until EOF, then exits and closes. */
async function withChannel(fn: (ch: any, serverSaw: string[]) => Promise<void>): Promise<void> {
  const serverSaw: string[] = [];
  const pair = await ssh2Pair((st) => {
    st.on("data", (b: Buffer) => st.write(b));
    st.on("end", () => {
      serverSaw.push("eof");
      st.exit(0);
      st.end();
    });
    st.on("close", () => serverSaw.push("close"));
  });
  try {
    await fn(await pair.exec(), serverSaw);
  } finally {
    pair.close();
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

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

Deno.test("channel destroy: installed by connect.ts", () => {
  assert.equal(channelDestroyInstalled(), true);
});

for (const own of [true, false]) {
  const tag = own ? "ours" : "ssh2's";
  Deno.test(`channel destroy (${tag}): a channel finished both ways closes${own ? " without end() on its finished side" : ", calling end() again"}`, async () => {
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

  Deno.test(`channel destroy (${tag}): writable ending but not finished (window full), destroy twice`, async () => {
    await withChannel(async (ch) => {
      if (!own) ch.destroy = SSH2_DESTROY;
      const errs: unknown[] = [];
      ch.on("error", (e: unknown) => errs.push(e));
      ch.resume();
      ch.write(Buffer.alloc(3 * 1024 * 1024, 1));
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

Deno.test("channel destroy: an open writable side is still ended (EOF sent) and the channel closed", async () => {
  await withChannel(async (ch, serverSaw) => {
    const calls = spyEnd(ch);
    const closed = new Promise((r) => ch.on("close", r));
    ch.resume();
    ch.destroy();
    await closed;
    assert.deepEqual(calls.slice(0, 1), [false], "destroy() ended the open side");
    for (let i = 0; i < 100 && !serverSaw.includes("eof"); i++) await tick(5);
    assert.ok(serverSaw.includes("eof"), `server saw ${serverSaw}`);
  });
});
