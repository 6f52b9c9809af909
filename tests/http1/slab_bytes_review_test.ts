/**
 * Hostile review of b0d53f2 (small request reads copied into the shared
 * slab, bodies taken as views, the buffer dropped once consumed): request
 * bytes must stay each request's own and never change after they were
 * handed out. Many connections pipeline requests of sizes around every
 * threshold (the 1 KiB compaction, SLAB_MAX, the 4 KiB head read, the
 * 16 KiB slab, the 64 KiB body read), split at random; the handler keeps
 * every view it got (taken bodies, stream chunks) uncopied, and at the end
 * each one must still hold exactly its request's bytes.
 */
import assert from "node:assert/strict";
import { type Http1Server, serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import { rawRequestOf } from "../../lib/http1/raw.ts";
import { latin1ToBytes } from "../../lib/http1/latin1.ts";
import { RawClient } from "../_helpers/raw_http.ts";
import { prng } from "../_helpers/prng.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The body of request `id`: `len` bytes, any values, unique to the id. */
function bodyOf(id: string, len: number): Uint8Array {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  const r = prng(h);
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (r() * 256) | 0;
  return out;
}

const SIZES = [
  1,
  7,
  27,
  500,
  1000,
  1023,
  1024,
  1025,
  2000,
  2047,
  2048,
  2049,
  3000,
  4095,
  4096,
  4097,
  8000,
  16383,
  16384,
  16385,
  20000,
  70000,
];

interface Held {
  id: string;
  len: number;
  parts: Uint8Array[];
}

function joined(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.byteLength, 0);
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("slab review: bodies handed out (taken or streamed) stay their own bytes to the end, 24 connections pipelining", async () => {
  const seed = Number(Deno.env.get("SLAB_BYTES_SEED") ?? Date.now() % 1_000_000);
  const rand = prng(seed);
  const held: Held[] = [];
  const handler: ServerHandler = async (req) => {
    const q = new URL(req.url).searchParams;
    const id = q.get("id")!;
    const len = Number(q.get("len"));
    const how = q.get("how");
    const parts: Uint8Array[] = [];
    const taken = how === "take" ? rawRequestOf(req)?.takeBody() ?? null : null;
    if (taken !== null) parts.push(taken);
    else if (req.body) {
      const reader = req.body.getReader();
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        parts.push(r.value);
        if (how === "slow") await new Promise((r) => setTimeout(r, 0));
      }
    }
    held.push({ id, len, parts });
    const ok = same(joined(parts), bodyOf(id, len));
    if (how === "slow" || rand() < 0.2) await new Promise((r) => setTimeout(r, 1));
    // A streamed answer now and then: the watch reads pipelined bytes meanwhile.
    const text = `<${id}:${ok ? "ok" : "BAD"}>`;
    if (rand() < 0.3) {
      return new Response(
        new ReadableStream({
          async start(c) {
            await new Promise((r) => setTimeout(r, 2));
            c.enqueue(new TextEncoder().encode(text));
            c.close();
          },
        }),
      );
    }
    return new Response(text);
  };
  const server: Http1Server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, handler);
  try {
    await Promise.all(Array.from({ length: 24 }, async (_, ci) => {
      const c = await RawClient.open(server.addr.port);
      try {
        const pieces: Uint8Array[] = [];
        const want: string[] = [];
        for (let i = 0; i < 20; i++) {
          const id = `${seed}-${ci}-${i}`;
          const len = SIZES[Math.floor(rand() * SIZES.length)];
          const how = ["take", "read", "slow"][Math.floor(rand() * 3)];
          const body = bodyOf(id, len);
          const cont = rand() < 0.2 ? "Expect: 100-continue\r\n" : "";
          if (rand() < 0.3) {
            pieces.push(latin1ToBytes(
              `POST /p?id=${id}&len=${len}&how=${how} HTTP/1.1\r\nHost: h\r\n${cont}Transfer-Encoding: chunked\r\n\r\n`,
            ));
            for (let at = 0; at < len;) {
              const k = 1 + Math.floor(rand() * 5000);
              const piece = body.subarray(at, at + k);
              pieces.push(latin1ToBytes(`${piece.length.toString(16)}\r\n`), piece);
              pieces.push(latin1ToBytes("\r\n"));
              at += k;
            }
            pieces.push(latin1ToBytes("0\r\n\r\n"));
          } else {
            pieces.push(latin1ToBytes(
              `POST /p?id=${id}&len=${len}&how=${how} HTTP/1.1\r\nHost: h\r\n${cont}Content-Length: ${len}\r\n\r\n`,
            ));
            pieces.push(body);
          }
          if (rand() < 0.2) pieces.push(latin1ToBytes("\r\n"));
          want.push(`<${id}:ok>`);
        }
        const all = joined(pieces);
        for (let at = 0; at < all.length;) {
          const roll = rand();
          const k = 1 + Math.floor(rand() * (roll < 0.3 ? 40 : roll < 0.6 ? 1500 : 9000));
          await c.send(all.subarray(at, at + k));
          at += k;
          if (rand() < 0.15) await new Promise((r) => setTimeout(r, 1));
        }
        await c.until(
          (s) => want.every((w) => s.includes(w)) || s.includes("BAD") || / [45]\d\d /.test(s),
          20_000,
        );
        assert.ok(!c.received.includes("BAD"), `seed ${seed}: a body arrived wrong`);
        for (const w of want) assert.ok(c.received.includes(w), `seed ${seed}: ${w} missing`);
      } finally {
        c.close();
      }
    }));
    // Long after: every view handed out still holds its request's bytes.
    const bad = held.filter((h) => !same(joined(h.parts), bodyOf(h.id, h.len)));
    assert.equal(held.length, 24 * 20);
    assert.deepEqual(bad.map((h) => h.id), [], `seed ${seed}`);
  } finally {
    await server.closeAll();
  }
});

Deno.test("slab review: 1000 connections' bodies, all held at once in shared slabs, stay each their own", async () => {
  const N = 1000;
  const held: { id: string; len: number; body: Uint8Array; taken: boolean }[] = [];
  let release!: () => void;
  const all = new Promise<void>((r) => (release = r));
  const server = serveHttp1(
    { hostname: "127.0.0.1", port: 0, maxConnections: N + 100 },
    async (req) => {
      const q = new URL(req.url).searchParams;
      const id = q.get("id")!;
      const len = Number(q.get("len"));
      const t = rawRequestOf(req)?.takeBody() ?? null;
      const body = t ?? new Uint8Array(await req.arrayBuffer());
      held.push({ id, len, body, taken: t !== null });
      if (held.length === N) release();
      await all; // every body alive at once, in flight like queued requests
      return new Response(same(body, bodyOf(id, len)) ? `<${id}:ok>` : `<${id}:BAD>`);
    },
  );
  const timeout = setTimeout(() => release(), 15_000);
  try {
    const lens = [1, 27, 300, 700, 1000, 1800, 2100];
    const answers = await Promise.all(Array.from({ length: N }, async (_, i) => {
      const c = await RawClient.open(server.addr.port);
      try {
        const id = `k${i}`;
        const len = lens[i % lens.length];
        const head = latin1ToBytes(
          `POST /p?id=${id}&len=${len} HTTP/1.1\r\nHost: h\r\nContent-Length: ${len}\r\n\r\n`,
        );
        await c.send(joined([head, bodyOf(id, len), latin1ToBytes(i % 3 === 0 ? "\r\n" : "")]));
        await c.until((s) => s.includes(`<${id}:`), 20_000);
        return c.received.includes(`<${id}:ok>`);
      } finally {
        c.close();
      }
    }));
    assert.equal(answers.filter((a) => !a).length, 0);
    assert.equal(held.length, N);
    const bad = held.filter((h) => !same(h.body, bodyOf(h.id, h.len)));
    assert.deepEqual(bad.map((h) => h.id), []);
    assert.ok(
      held.filter((h) => h.taken).length > N / 2,
      "most bodies came through the side channel",
    );
  } finally {
    clearTimeout(timeout);
    await server.closeAll();
  }
});

Deno.test("slab review: a request body chunk's .buffer holds no other client's request bytes", async () => {
  // slab.ts asks callers to use byteOffset/byteLength, but the server's
  // request body chunks (and takeBody) go to any handler: one that reads
  // `chunk.buffer` (a common Node habit) sees other connections' heads.
  const seen: string[] = [];
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    if (new URL(req.url).pathname === "/peek") {
      const r = req.body!.getReader();
      const chunk = (await r.read()).value!;
      seen.push(new TextDecoder("latin1").decode(new Uint8Array(chunk.buffer)));
      await r.cancel();
      return new Response("peeked");
    }
    return new Response("ok");
  });
  try {
    const victim = await RawClient.open(server.addr.port);
    const peeker = await RawClient.open(server.addr.port);
    try {
      await victim.send(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer sk-VICTIM-SECRET\r\nContent-Length: 2\r\n\r\n{}",
      );
      await victim.until((s) => s.includes("ok"));
      await peeker.send("POST /peek HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
      await peeker.until((s) => s.includes("peeked"));
      assert.equal(seen.length, 1);
      assert.ok(
        !seen[0].includes("sk-VICTIM-SECRET"),
        "another client's token is in the chunk's buffer",
      );
    } finally {
      victim.close();
      peeker.close();
    }
  } finally {
    await server.closeAll();
  }
});

Deno.test("slab review: a handler that transfers its body chunk's buffer does not empty another request's taken body", async () => {
  // E.g. handing the bytes to a Worker with a transfer list: on a slab view
  // that detaches the whole slab, and every other view of it reads as empty.
  let held: Uint8Array | null = null;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const timer = setTimeout(() => release(), 3_000);
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    if (new URL(req.url).pathname === "/a") {
      held = rawRequestOf(req)!.takeBody();
      await gate;
      return new Response(`<${held === null ? "none" : new TextDecoder().decode(held)}>`);
    }
    const r = req.body!.getReader();
    const chunk = (await r.read()).value!;
    structuredClone(chunk, { transfer: [chunk.buffer] });
    await r.cancel();
    release();
    return new Response("b");
  });
  const a = await RawClient.open(server.addr.port);
  const b = await RawClient.open(server.addr.port);
  try {
    await a.send("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
    await sleep(20);
    await b.send("POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nworld");
    await a.until((s) => s.includes(">"));
    assert.ok(
      a.received.includes("<hello>"),
      `a's body changed: ${a.received.split("\r\n\r\n")[1]}`,
    );
  } finally {
    clearTimeout(timer);
    a.close();
    b.close();
    await server.closeAll();
  }
});
