/**
 * Hostile review of b0d53f2: the connection drops its buffer once all of it
 * was read (after the head, after a taken body), and `#switchProtocols`
 * hands the upgraded side `#buf.slice(#pos)` plus what a pending read
 * brings. Whatever the client sent after its upgrade request (in the same
 * read, in a later one while the handler thinks, behind a pipelined POST
 * whose body was taken) must reach the upgraded side once, in order.
 */
import assert from "node:assert/strict";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { rawRequestOf } from "../../lib/http1/raw.ts";
import { upgradeResponse } from "../../lib/http1/upgrade.ts";
import { bytesToLatin1 } from "../../lib/http1/latin1.ts";
import { RawClient } from "../_helpers/raw_http.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` bytes a client sends after its upgrade request, distinct per `tag`. */
function extraOf(tag: string, n: number): string {
  let s = "";
  for (let i = 0; s.length < n; i++) s += `${tag}:${i};`;
  return s.slice(0, n);
}

async function readAll(conn: Deno.Conn, first: Uint8Array, want: number): Promise<string> {
  let got = bytesToLatin1(first);
  const buf = new Uint8Array(8192);
  const deadline = Date.now() + 3_000;
  while (got.length < want && Date.now() < deadline) {
    const t = setTimeout(() => {
      try {
        conn.close();
      } catch { /* closed */ }
    }, deadline - Date.now());
    const n = await conn.read(buf).catch(() => null);
    clearTimeout(t);
    if (n === null) break;
    got += bytesToLatin1(buf.subarray(0, n));
  }
  return got;
}

Deno.test("slab review: bytes after an upgrade request reach the upgraded side once and in order", async () => {
  const results: { tag: string; got: string }[] = [];
  const wants = new Map<string, string>();
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    const q = new URL(req.url).searchParams;
    if (req.method === "POST") {
      const b = rawRequestOf(req)?.takeBody() ?? new Uint8Array(await req.arrayBuffer());
      return new Response(String(b.byteLength));
    }
    const tag = q.get("tag")!;
    if (q.get("think")) await sleep(30);
    return upgradeResponse({
      statusText: "Switching Protocols",
      headers: [["upgrade", "x"], ["connection", "upgrade"]],
      onUpgrade: async (client) => {
        // What the server read already, then its read under way, then the socket.
        const before = await client.initial;
        const during = await client.inFlight;
        const first = new Uint8Array(before.byteLength + during.byteLength);
        first.set(before);
        first.set(during, before.byteLength);
        const got = await readAll(client.conn, first, wants.get(tag)!.length);
        results.push({ tag, got });
        try {
          client.conn.close();
        } catch { /* closed */ }
      },
      onAbandon: () => {},
    });
  });
  const sizes = [1, 500, 1023, 1500, 2048, 3000, 5000, 20000];
  try {
    let k = 0;
    for (const n of sizes) {
      for (const how of ["with-head", "later", "behind-post", "split"]) {
        const tag = `t${k++}`;
        const extra = extraOf(tag, n);
        // The client ends with "!" once it saw the 101: a pending read then
        // always has something to bring (see the test below for why).
        wants.set(tag, extra + "!");
        const think = how === "later" || how === "split" ? "&think=1" : "";
        const head =
          `GET /ws?tag=${tag}${think} HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n`;
        const c = await RawClient.open(server.addr.port);
        try {
          if (how === "with-head") await c.send(head + extra);
          else if (how === "behind-post") {
            await c.send(
              `POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello${head}${extra}`,
            );
          } else if (how === "later") {
            await c.send(head);
            await sleep(5); // read by the disconnect watch while the handler thinks
            await c.send(extra);
          } else {
            // The head ends exactly at a read's end, the rest comes in pieces.
            await c.send(head);
            await sleep(5);
            for (let at = 0; at < extra.length; at += 700) {
              await c.send(extra.slice(at, at + 700));
              await sleep(1);
            }
          }
          await c.until((s) => s.includes("HTTP/1.1 101"));
          await c.send("!");
          const deadline = Date.now() + 3_000;
          while (!results.some((r) => r.tag === tag) && Date.now() < deadline) await sleep(5);
          const r = results.find((r) => r.tag === tag);
          assert.ok(r, `${how} ${n}: never upgraded`);
          assert.equal(r.got.length, extra.length + 1, `${how} ${n}: length`);
          assert.ok(r.got === extra + "!", `${how} ${n}: bytes differ`);
        } finally {
          c.close();
        }
      }
    }
  } finally {
    await server.closeAll();
  }
});

Deno.test({
  name:
    "review: bytes sent with an upgrade request reach the upgraded side without waiting for more",
  // Failed before `inFlight`: `initial` waited for the disconnect watch's
  // pending read, which only ends when the client sends again (or leaves),
  // so bytes already buffered were held back until then.
  async fn() {
    let first: Uint8Array | null = null;
    let upgraded: Deno.Conn | null = null;
    const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, () =>
      upgradeResponse({
        statusText: "Switching Protocols",
        headers: [["upgrade", "x"], ["connection", "upgrade"]],
        onUpgrade: async (client) => {
          upgraded = client.conn;
          first = await client.initial;
        },
        onAbandon: () => {},
      }));
    const c = await RawClient.open(server.addr.port);
    try {
      await c.send("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nhello");
      await c.until((s) => s.includes("HTTP/1.1 101"));
      const deadline = Date.now() + 1_000;
      while (first === null && Date.now() < deadline) await sleep(10);
      assert.ok(first !== null, "the bytes sent with the request were not delivered in 1 s");
      assert.equal(bytesToLatin1(first), "hello");
    } finally {
      c.close();
      (upgraded as Deno.Conn | null)?.close();
      await server.closeAll();
    }
  },
});
