/**
 * Hostile review of the issue #14 performance changes: bodies taken whole
 * as views of the read buffer under pipelining, random framing split at
 * random read boundaries, header and idle timeouts with the head awaited
 * directly and the disconnect watch stepped per read, and an engine whose
 * stray or smuggled bytes must never reach the next request on a pooled
 * channel (Conn reads settled directly, idle lists kept while out).
 */
import assert from "node:assert/strict";
import { type Http1Server, serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import { rawRequestOf } from "../../lib/http1/raw.ts";
import { Http1Client } from "../../lib/http1/client.ts";
import { Duplex } from "node:stream";
import { countResponses, RawClient } from "../_helpers/raw_http.ts";

async function withServer(
  handler: ServerHandler,
  fn: (port: number, server: Http1Server) => Promise<void>,
): Promise<void> {
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, handler);
  try {
    await fn(server.addr.port, server);
  } finally {
    await server.closeAll();
  }
}

Deno.test("pipelined bodies taken whole stay each request's own bytes after later reads", async () => {
  const held: { want: string; got: Uint8Array }[] = [];
  const handler: ServerHandler = async (req) => {
    const want = new URL(req.url).searchParams.get("b")!;
    const raw = rawRequestOf(req);
    let got = raw?.takeBody() ?? null;
    if (got === null) got = new Uint8Array(await req.arrayBuffer());
    held.push({ want, got });
    await new Promise((r) => setTimeout(r, 1));
    return new Response(String(got.byteLength));
  };
  await withServer(handler, async (port) => {
    const c = await RawClient.open(port);
    try {
      let all = "";
      const n = 60;
      for (let i = 0; i < n; i++) {
        const body = String.fromCharCode(97 + (i % 26)).repeat(1 + (i * 37) % 900);
        all += `POST /x?b=${body.length}${
          body[0]
        } HTTP/1.1\r\nHost: h\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      }
      // In uneven pieces so reads end anywhere.
      for (let at = 0; at < all.length;) {
        const k = 1 + Math.floor(Math.random() * 3000);
        await c.send(all.slice(at, at + k));
        at += k;
      }
      await c.until((s) => countResponses(s) === n);
    } finally {
      c.close();
    }
  });
  assert.equal(held.length, 60);
  for (const { want, got } of held) {
    const len = Number(want.slice(0, -1));
    const text = new TextDecoder().decode(got);
    assert.equal(text, want.slice(-1).repeat(len));
  }
});

Deno.test("a head dribbled a byte at a time is cut at the header timeout, first or later request", async () => {
  const server = serveHttp1(
    { hostname: "127.0.0.1", port: 0, headerTimeoutMs: 300, idleTimeoutMs: 5_000 },
    () => new Response("ok"),
  );
  try {
    for (const first of [true, false]) {
      const c = await RawClient.open(server.addr.port);
      try {
        if (!first) {
          await c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
          await c.until((s) => countResponses(s) === 1);
          c.received = "";
        }
        const start = Date.now();
        const head = "GET /slow HTTP/1.1\r\nHost: x\r\nX-A: " + "a".repeat(200);
        let closedAt = 0;
        for (const ch of head) {
          if (Date.now() - start > 2_000) break;
          try {
            await c.send(ch);
          } catch {
            break;
          }
          await new Promise((r) => setTimeout(r, 20));
          if (c.received.length > 0 || c.closed) break;
        }
        await c.untilClosed(3_000);
        closedAt = Date.now() - start;
        assert.ok(closedAt < 1_500, `closed after ${closedAt} ms`);
        assert.match(c.received, /^HTTP\/1\.1 408 /);
      } finally {
        c.close();
      }
    }
  } finally {
    await server.closeAll();
  }
});

Deno.test("random pipelines of mixed framing, split anywhere, are answered in order with their own bodies", async () => {
  const handler: ServerHandler = async (req) => {
    const how = new URL(req.url).searchParams.get("how");
    let body: Uint8Array | null = null;
    if (how === "take") body = rawRequestOf(req)?.takeBody() ?? null;
    if (body === null) {
      body = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array(0);
    }
    if (how === "slow") await new Promise((r) => setTimeout(r, 2));
    return new Response(
      `<${new URL(req.url).searchParams.get("id")}:${new TextDecoder().decode(body)}>`,
    );
  };
  await withServer(handler, async (port) => {
    let seed = 12345;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 25; round++) {
      const c = await RawClient.open(port);
      try {
        let all = "";
        const want: string[] = [];
        const n = 1 + rnd(12);
        for (let i = 0; i < n; i++) {
          const how = ["take", "read", "slow"][rnd(3)];
          const text = "xyz0123456789".repeat(rnd(200)).slice(0, rnd(2000));
          const id = `${round}-${i}`;
          const kind = rnd(4);
          const cont = rnd(3) === 0 ? "Expect: 100-continue\r\n" : "";
          if (kind === 0 && text.length > 0) {
            // chunked in random pieces
            let chunks = "";
            for (let at = 0; at < text.length;) {
              const k = 1 + rnd(300);
              const piece = text.slice(at, at + k);
              chunks += `${piece.length.toString(16)}\r\n${piece}\r\n`;
              at += k;
            }
            all +=
              `POST /p?id=${id}&how=${how} HTTP/1.1\r\nHost: h\r\n${cont}Transfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n`;
          } else {
            all +=
              `POST /p?id=${id}&how=${how} HTTP/1.1\r\nHost: h\r\n${cont}Content-Length: ${text.length}\r\n\r\n${text}`;
          }
          if (rnd(4) === 0) all += "\r\n";
          want.push(`<${id}:${text}>`);
        }
        for (let at = 0; at < all.length;) {
          const k = 1 + rnd(rnd(2) ? 20 : 5000);
          await c.send(all.slice(at, at + k));
          at += k;
          if (rnd(8) === 0) await new Promise((r) => setTimeout(r, 1));
        }
        await c.until(
          (s) => want.every((w) => s.includes(w)) || s.includes(" 400 ") || s.includes(" 500 "),
          5_000,
        );
        const bodies = c.received.split(/HTTP\/1\.1 \d{3} [^\r]*\r\n(?:[^\r]+\r\n)*\r\n/).join("");
        assert.equal(bodies, want.join(""), `round ${round}`);
      } finally {
        c.close();
      }
    }
  });
});

Deno.test("idle timeouts still close a silent keep-alive connection and a stalled body", async () => {
  let aborted = false;
  const server = serveHttp1(
    { hostname: "127.0.0.1", port: 0, headerTimeoutMs: 5_000, idleTimeoutMs: 300 },
    async (req) => {
      req.signal.addEventListener("abort", () => (aborted = true));
      const body = req.body ? await req.arrayBuffer().catch(() => new ArrayBuffer(0)) : null;
      return new Response(`n=${body?.byteLength ?? 0}`);
    },
  );
  try {
    const a = await RawClient.open(server.addr.port);
    try {
      await a.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await a.until((s) => s.endsWith("n=0"));
      const t0 = Date.now();
      await a.untilClosed(3_000);
      assert.ok(Date.now() - t0 < 1_500);
    } finally {
      a.close();
    }
    const b = await RawClient.open(server.addr.port);
    try {
      await b.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
      const t0 = Date.now();
      await b.untilClosed(3_000);
      assert.ok(Date.now() - t0 < 1_500);
      assert.ok(!/n=100/.test(b.received), b.received);
    } finally {
      b.close();
    }
    const deadline = Date.now() + 2_000;
    while (!aborted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(aborted, "the stalled request was aborted");
  } finally {
    await server.closeAll();
  }
});

// --- client side: a hostile engine on a reused channel ----------------------

class EngineChannel extends Duplex {
  onRequest: ((ch: EngineChannel) => void) | null = null;
  override _write(_chunk: Uint8Array, _enc: string, cb: () => void): void {
    cb();
    this.onRequest?.(this);
  }
  override _read(): void {}
}

Deno.test("stray or smuggled bytes from an engine never reach the next request on a pooled channel", async () => {
  let seed = 777;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const enc = new TextEncoder();
  let served = 0;
  let opened = 0;
  const client = new Http1Client(() => {
    opened++;
    const ch = new EngineChannel();
    ch.onRequest = (c) => {
      const id = `ok${served++}`;
      const kind = rnd(3);
      let res = kind === 0
        ? `HTTP/1.1 200 OK\r\ncontent-length: ${id.length}\r\n\r\n${id}`
        : kind === 1
        ? `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${
          id.length.toString(16)
        }\r\n${id}\r\n0\r\n\r\n`
        : `HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: ${id.length}\r\n\r\n${id}`;
      if (rnd(3) === 0) res += "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nEVIL";
      if (rnd(5) === 0) res += "\r\n";
      const cuts: number[] = [];
      for (let k = rnd(4); k > 0; k--) cuts.push(rnd(res.length));
      cuts.sort((a, b) => a - b);
      const pieces: string[] = [];
      let at = 0;
      for (const cut of cuts) {
        pieces.push(res.slice(at, cut));
        at = cut;
      }
      pieces.push(res.slice(at));
      const sameTick = rnd(2) === 0;
      void (async () => {
        for (const p of pieces) {
          if (p === "") continue;
          c.push(enc.encode(p));
          if (!sameTick) await new Promise((r) => setTimeout(r, 0));
        }
      })();
    };
    return Promise.resolve(ch);
  }, { host: "e" });
  try {
    for (let i = 0; i < 400; i++) {
      const before = served;
      let text: string;
      try {
        const res = await client.request({
          method: "GET",
          target: "/",
          headers: [],
          body: null,
          affinity: "c1",
        });
        text = res.body === null
          ? ""
          : res.body instanceof Uint8Array
          ? new TextDecoder().decode(res.body)
          : new TextDecoder().decode(new Uint8Array(await new Response(res.body).arrayBuffer()));
      } catch {
        continue; // refusing a confused channel is fine
      }
      assert.equal(text, `ok${before}`, `request ${i}`);
      await new Promise((r) => setTimeout(r, rnd(2)));
    }
    // Clean answers let channels be reused, so the hostile ones met pooled channels.
    assert.ok(opened < 300, `${opened} channels`);
  } finally {
    client.close();
  }
});
