/**
 * A hostile engine against the one HTTP/1.1 transport (issue #10, review
 * round): answers that stall the event loop (a head or body dribbled one
 * byte per packet, thousands of header fields, endless trailers), framing
 * that must close the channel (Transfer-Encoding with Content-Length or in
 * HTTP/1.0, chunked twice, a 2xx to CONNECT), legal framing that was
 * refused (leading zeros in a chunk size), and bytes sent to an idle
 * channel. Each case checks what the client sees, that the engine saw the
 * request once, and that the backend's in-flight slot came back.
 */
import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { Http1Client } from "../../lib/http1/client.ts";
import { ChunkedDecoder, MAX_HEADER_FIELDS } from "../../lib/http1/parse.ts";
import { Http1Error, readAll } from "../../lib/http1/types.ts";
import type { Handler, RequestLogLine } from "../../lib/proxy/relay.ts";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { ok, type RawEngine, type RawReply, startRawEngine } from "../_helpers/raw_engine.ts";
import type { RawRequest } from "../_helpers/raw_engine.ts";
import { tcpHttp1Client } from "../_helpers/tcp_client.ts";

const enc = new TextEncoder();

/** A channel that answers every write with `reply`, pushed one byte per 'data' event. */
function dribble(reply: Uint8Array): () => Promise<Duplex> {
  return () =>
    Promise.resolve(
      new Duplex({
        read() {},
        write(_c, _e, cb) {
          cb();
          for (let i = 0; i < reply.length; i++) this.push(reply.subarray(i, i + 1));
        },
      }),
    );
}

async function timed<T>(p: Promise<T>): Promise<{ value: T; ms: number }> {
  const t0 = performance.now();
  const value = await p;
  return { value, ms: performance.now() - t0 };
}

Deno.test("a 60 KiB head dribbled one byte per packet is read in linear time", async () => {
  const line = `x-a: ${"v".repeat(90)}\r\n`;
  const head = `HTTP/1.1 200 OK\r\n${line.repeat(200)}${`x-b: ${
    "w".repeat(40_000)
  }\r\n`}content-length: 2\r\n\r\nok`;
  const c = new Http1Client(dribble(enc.encode(head)), { host: "e" });
  try {
    const { value: res, ms } = await timed(
      c.request({ method: "GET", target: "/", headers: [], body: null }),
    );
    assert.equal(res.status, 200);
    assert.equal(new TextDecoder().decode(await readAll(res, 10)), "ok");
    // Quadratic copying and Array.shift took ~2 s here, blocking every client.
    assert.ok(ms < 1000, `head took ${Math.round(ms)} ms`);
  } finally {
    c.close();
  }
});

Deno.test("a 256 KiB body queued as one-byte packets drains in linear time", async () => {
  const n = 256 * 1024;
  const reply = new Uint8Array(
    enc.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${n}\r\n\r\n`).length + n,
  );
  const headBytes = enc.encode(`HTTP/1.1 200 OK\r\ncontent-length: ${n}\r\n\r\n`);
  reply.set(headBytes);
  reply.fill(0x61, headBytes.length);
  const c = new Http1Client(dribble(reply), { host: "e" });
  try {
    const res = await c.request({ method: "GET", target: "/", headers: [], body: null });
    const { value: body, ms } = await timed(readAll(res, n));
    assert.equal(body.byteLength, n);
    // Array.shift over ~262,000 queued chunks took over a minute.
    assert.ok(ms < 3000, `body took ${Math.round(ms)} ms`);
  } finally {
    c.close();
  }
});

Deno.test("chunk sizes with leading zeros are legal; 16 significant hex digits are not", () => {
  const d = new ChunkedDecoder();
  let out = "";
  d.push(enc.encode("00000000000000002\r\nok\r\n000\r\n\r\n"), (b) => {
    out += new TextDecoder().decode(b);
  });
  assert.equal(out, "ok");
  assert.ok(d.done);
  assert.throws(
    () => new ChunkedDecoder().push(enc.encode("ffffffffffffffff\r\n"), () => {}),
    Http1Error,
  );
});

Deno.test("a 2xx to CONNECT is refused by the client (the channel would be a tunnel)", async () => {
  const engine = startRawEngine(() => "HTTP/1.1 200 Connection established\r\n\r\n");
  const c = tcpHttp1Client(engine.port);
  try {
    await assert.rejects(
      c.request({ method: "CONNECT", target: "/", headers: [], body: null }),
      (e) => e instanceof Http1Error && e.sent,
    );
    assert.equal(c.stats().idle, 0);
  } finally {
    c.close();
    await engine.close();
  }
});

Deno.test("an idle channel that receives a byte is closed at once, not at reuse", async () => {
  const engine = startRawEngine(() => ({ parts: [ok("a"), "X"], partDelayMs: 0, delayMs: 0 }));
  // The stray "X" arrives a moment after the response: while the channel is idle.
  const c = tcpHttp1Client(engine.port, { idleTtlMs: 60_000 });
  try {
    const res = await c.request({ method: "GET", target: "/", headers: [], body: null });
    await readAll(res, 10);
    // Well under the 1 s sweep: the byte itself closes the channel.
    const deadline = Date.now() + 300;
    while (c.stats().idle > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(c.stats().idle, 0);
  } finally {
    c.close();
    await engine.close();
  }
});

Deno.test("an answer that came before the request body went out never returns the channel", async () => {
  // The engine answers (e.g. an early 413) while the body still waits for
  // window space: the rest of that body would be read as the next request.
  let opened = 0;
  const open = () => {
    opened++;
    return Promise.resolve(
      new Duplex({
        highWaterMark: 16,
        read() {},
        write(_c, _e, _cb) {
          // The write never completes; the answer arrives anyway.
          this.push(enc.encode("HTTP/1.1 413 Too Large\r\ncontent-length: 2\r\n\r\nno"));
        },
      }),
    );
  };
  const c = new Http1Client(open, { host: "e", idleTtlMs: 60_000 });
  try {
    const body = new Uint8Array(64 * 1024);
    const res = await c.request({ method: "POST", target: "/", headers: [], body });
    assert.equal(res.status, 413);
    await readAll(res, 10);
    assert.equal(c.stats().idle, 0);
    await c.request({ method: "POST", target: "/", headers: [], body }).then((r) => readAll(r, 10));
    assert.equal(opened, 2);
  } finally {
    c.close();
  }
});

// --- through the relay ---------------------------------------------------------

interface Ctx {
  h: Handler;
  a: RawEngine;
  b: RawEngine;
  t: FakeTarget[];
  logs: RequestLogLine[];
}

async function withRelay(
  script: (req: RawRequest) => RawReply | Promise<RawReply>,
  fn: (ctx: Ctx) => Promise<void>,
): Promise<void> {
  const a = startRawEngine(script);
  const b = startRawEngine(() => ok("other"));
  const t = [
    new FakeTarget(1, { baseUrl: a.url }),
    new FakeTarget(2, { baseUrl: b.url, inFlight: 5 }),
  ];
  const logs: RequestLogLine[] = [];
  const h = relayOver(t, { onRequestLog: (l) => logs.push(l) });
  try {
    await fn({ h, a, b, t, logs });
    for (const x of t) {
      assert.equal(x.doubleReleases, 0);
      assert.equal(x.inFlight - x.baseLoad, 0, `target ${x.id} kept an in-flight slot`);
    }
  } finally {
    for (const x of t) x.close();
    await a.close();
    await b.close();
  }
}

const req = (path: string, init: RequestInit = {}) => new Request(`http://proxy.test${path}`, init);

Deno.test(`more than ${MAX_HEADER_FIELDS} header fields: a quick 502, not retried`, async () => {
  // 6,000 distinct names fit in 64 KiB; iterating them in Deno's Headers took ~5 s.
  const fields = Array.from({ length: 6000 }, (_, i) => `x${i}: 1\r\n`).join("");
  await withRelay(
    () => `HTTP/1.1 200 OK\r\n${fields}content-length: 2\r\n\r\nok`,
    async ({ h, a, b, logs }) => {
      const { value: res, ms } = await timed(h(req("/x", { method: "POST", body: "q" })));
      assert.equal(res.status, 502);
      await res.body?.cancel();
      assert.ok(ms < 1000, `took ${Math.round(ms)} ms`);
      assert.equal(a.count("/x"), 1);
      assert.equal(b.requests.length, 0);
      assert.equal(logs.length, 1);
    },
  );
});

Deno.test(`${MAX_HEADER_FIELDS} header fields are still fine`, async () => {
  const fields = Array.from({ length: MAX_HEADER_FIELDS - 1 }, (_, i) => `x${i}: 1\r\n`).join("");
  await withRelay(
    () => `HTTP/1.1 200 OK\r\n${fields}content-length: 2\r\n\r\nok`,
    async ({ h }) => {
      const res = await h(req("/x"));
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "ok");
    },
  );
});

Deno.test("Transfer-Encoding with Content-Length: decoded, then the channel is closed", async () => {
  // The stray response after the body would be the next answer if the
  // channel were reused; another parser may have framed this by length.
  await withRelay(
    (r) =>
      r.target === "/x"
        ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n" +
          "2\r\nok\r\n0\r\n\r\n"
        : ok("next"),
    async ({ h, a }) => {
      assert.equal(await (await h(req("/x"))).text(), "ok");
      assert.equal(await (await h(req("/y"))).text(), "next");
      assert.equal(a.connections, 2);
    },
  );
});

Deno.test("Transfer-Encoding in an HTTP/1.0 keep-alive answer: the channel is closed", async () => {
  await withRelay(
    (r) =>
      r.target === "/x"
        ? "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n" +
          "2\r\nok\r\n0\r\n\r\n"
        : ok("next"),
    async ({ h, a }) => {
      assert.equal(await (await h(req("/x"))).text(), "ok");
      assert.equal(await (await h(req("/y"))).text(), "next");
      assert.equal(a.connections, 2);
    },
  );
});

Deno.test("chunked applied twice: 502, not retried", async () => {
  await withRelay(
    () => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    async ({ h, a, b }) => {
      const res = await h(req("/x", { method: "POST", body: "q" }));
      assert.equal(res.status, 502);
      await res.body?.cancel();
      assert.equal(a.count("/x"), 1);
      assert.equal(b.requests.length, 0);
    },
  );
});

Deno.test("endless trailers end the response with an error instead of holding it open", async () => {
  await withRelay(
    () => ({
      parts: [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n",
        ...Array.from({ length: 200 }, () => "x-t: 1\r\n".repeat(100)),
      ],
    }),
    async ({ h, logs }) => {
      const res = await h(req("/x"));
      assert.equal(res.status, 200);
      await assert.rejects(res.text());
      assert.equal(logs.length, 1);
    },
  );
});

/** Sends raw `text` to a real Deno.serve running `h` and reads until it closes. */
async function rawThroughServe(h: Handler, text: string): Promise<string> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (r, info) => guardResponse(await h(r, info)),
  );
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(enc.encode(text));
    let out = "";
    const buf = new Uint8Array(4096);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      out += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    return out;
  } finally {
    await server.shutdown();
  }
}

Deno.test("CONNECT is refused by the proxy and never reaches an engine", async () => {
  // An engine answering 2xx would turn its channel into a tunnel.
  await withRelay(() => "HTTP/1.1 200 OK\r\n\r\n", async ({ h, a, b, logs }) => {
    const out = await rawThroughServe(
      h,
      "CONNECT engine:80 HTTP/1.1\r\nhost: engine:80\r\nconnection: close\r\n\r\n",
    );
    assert.match(out, /^HTTP\/1\.1 405/);
    assert.equal(a.requests.length + b.requests.length, 0);
    assert.equal(logs.length, 1);
  });
});
