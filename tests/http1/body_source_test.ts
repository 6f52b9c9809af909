/**
 * Bodies as sources (lib/http1/body_source.ts): the channel client's
 * `source` gives what its stream gives, byte for byte and with the same
 * pooling, over every framing; our server writes a source's answer with
 * the same framing as a stream's, batches what is ready with the head, and
 * cancels the source when the client leaves or the body fails.
 */
import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { Http1Client } from "../../lib/http1/client.ts";
import type { BodySource } from "../../lib/http1/body_source.ts";
import { Http1Error, type Http1Response } from "../../lib/http1/types.ts";
import { responseSourceOf, responseWithSource } from "../../lib/http1/raw.ts";
import { serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import { RawClient } from "../_helpers/raw_http.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A channel whose far end is the test: each request gets `parts`, a macrotask apart. */
class ScriptedChannel extends Duplex {
  destroyedByClient = false;
  constructor(readonly parts: string[], readonly endAfter: boolean) {
    super();
  }
  override _write(_chunk: Uint8Array, _enc: string, cb: () => void): void {
    cb();
    void this.#reply();
  }
  override _read(): void {}
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.destroyedByClient = true;
    cb(err);
  }
  async #reply(): Promise<void> {
    for (const p of this.parts) {
      this.push(enc.encode(p));
      await new Promise((r) => setTimeout(r, 0));
    }
    if (this.endAfter) this.push(null);
  }
}

function clientFor(parts: string[], endAfter = false) {
  const opened: ScriptedChannel[] = [];
  const http = new Http1Client(() => {
    const ch = new ScriptedChannel(parts, endAfter);
    opened.push(ch);
    return Promise.resolve(ch);
  }, { host: "127.0.0.1:8000" });
  return { http, opened };
}

import type { Http1Request } from "../../lib/http1/types.ts";

const get = (): Http1Request => ({ method: "GET", target: "/x", headers: [], body: null });

/** Reads a source to its end, mixing readNow() and read() as our server does. */
async function drainSource(src: BodySource): Promise<{ text: string; chunks: number }> {
  let text = "";
  let chunks = 0;
  for (;;) {
    let c = src.readNow();
    if (c === undefined) c = await src.read();
    if (c === null) return { text, chunks };
    text += dec.decode(c);
    chunks++;
  }
}

async function drainStream(res: Http1Response): Promise<string> {
  assert.ok(res.body instanceof ReadableStream);
  return await new Response(res.body).text();
}

const CASES: {
  name: string;
  parts: string[];
  endAfter?: boolean;
  body: string;
  reused: boolean;
}[] = [
  {
    name: "content-length, body after the head",
    parts: ["HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", "hello", " world"],
    body: "hello world",
    reused: true,
  },
  {
    name: "chunked, split inside sizes and CRLFs",
    parts: [
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
      "5\r",
      "\nhel",
      "lo\r\n6\r\n wor",
      "ld\r\n0\r",
      "\n\r\n",
    ],
    body: "hello world",
    reused: true,
  },
  {
    name: "SSE events, one chunk each",
    parts: [
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
      "9\r\ndata: 1\n\n\r\n",
      "9\r\ndata: 2\n\n\r\n",
      "0\r\n\r\n",
    ],
    body: "data: 1\n\ndata: 2\n\n",
    reused: true,
  },
  {
    name: "close-delimited",
    parts: ["HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", "abc", "def"],
    endAfter: true,
    body: "abcdef",
    reused: false,
  },
  {
    name: "bytes past the body",
    parts: ["HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "abcXYZ"],
    body: "abc",
    reused: false,
  },
];

for (const c of CASES) {
  Deno.test(`body source: ${c.name}: the same bytes and pooling as the stream`, async () => {
    const viaStream = clientFor(c.parts, c.endAfter);
    const a = await viaStream.http.request(get());
    assert.ok(a.source, "a streamed answer has a source");
    const streamed = await drainStream(a);
    const viaSource = clientFor(c.parts, c.endAfter);
    const b = await viaSource.http.request(get());
    assert.ok(b.source);
    const sourced = await drainSource(b.source);
    assert.equal(streamed, c.body);
    assert.equal(sourced.text, c.body);
    // Past the end, reads keep saying so.
    assert.equal(b.source.readNow(), null);
    assert.equal(await b.source.read(), null);
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(viaSource.http.stats().idle, c.reused ? 1 : 0);
    assert.equal(viaStream.http.stats().idle, viaSource.http.stats().idle);
    assert.equal(viaSource.http.stats().busy, 0);
  });
}

Deno.test("body source: what already arrived is read without waiting, the known end included", async () => {
  const parts = [
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "1\r\na\r\n",
    "1\r\nb\r\n",
    "0\r\n\r\n",
  ];
  const { http } = clientFor(parts);
  const res = await http.request(get());
  const src = res.source!;
  // Let every part arrive.
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 0));
  assert.equal(dec.decode(src.readNow()!), "a");
  assert.equal(dec.decode(src.readNow()!), "b");
  assert.equal(src.readNow(), null, "the terminator was here: the end is known now");
  assert.equal(http.stats().idle, 1);
});

Deno.test("body source: nothing here yet is undefined, not the end", async () => {
  const { http } = clientFor([
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
    "o",
    "k",
  ]);
  const res = await http.request(get());
  assert.equal(res.source!.readNow(), undefined);
  assert.equal((await drainSource(res.source!)).text, "ok");
});

Deno.test("body source: a body cut short rejects every read after, and the channel is not pooled", async () => {
  const { http, opened } = clientFor(
    ["HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "abc"],
    true,
  );
  const res = await http.request(get());
  const src = res.source!;
  let got = "";
  let failure: unknown = null;
  try {
    for (;;) {
      const c = await src.read();
      if (c === null) break;
      got += dec.decode(c);
    }
  } catch (err) {
    failure = err;
  }
  assert.equal(got, "abc");
  assert.ok(failure instanceof Http1Error, String(failure));
  assert.match((failure as Error).message, /mid-body/);
  await assert.rejects(src.read(), Http1Error);
  assert.equal(src.readNow(), undefined);
  assert.equal(http.stats().idle, 0);
  assert.equal(opened.length, 1);
});

Deno.test("body source: cancel mid-body closes the channel; later reads end", async () => {
  const { http, opened } = clientFor([
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    "1\r\na\r\n",
  ]);
  const res = await http.request(get());
  const src = res.source!;
  assert.equal(dec.decode((await src.read())!), "a");
  src.cancel();
  src.cancel(); // once is enough; twice is harmless
  assert.ok(opened[0].destroyedByClient);
  assert.equal(src.readNow(), null);
  assert.equal(await src.read(), null);
  assert.equal(http.stats().idle, 0);
  assert.equal(http.stats().busy, 0);
});

// --- our server writing a source ------------------------------------------------

/** A source the test feeds: `push` a chunk, `end()`, `fail()`; records cancels. */
class FedSource implements BodySource {
  ready: (Uint8Array | null)[] = [];
  cancels = 0;
  #waiting: { resolve: (c: Uint8Array | null) => void; reject: (e: unknown) => void } | null = null;
  #failure: unknown = null;

  push(text: string | null): void {
    const c = text === null ? null : enc.encode(text);
    const w = this.#waiting;
    if (w) {
      this.#waiting = null;
      w.resolve(c);
    } else this.ready.push(c);
  }

  fail(err: unknown): void {
    this.#failure = err;
    const w = this.#waiting;
    this.#waiting = null;
    w?.reject(err);
  }

  read(): Promise<Uint8Array | null> {
    if (this.ready.length > 0) return Promise.resolve(this.ready.shift()!);
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => (this.#waiting = { resolve, reject }));
  }

  readNow(): Uint8Array | null | undefined {
    return this.ready.length > 0 ? this.ready.shift() : undefined;
  }

  cancel(): void {
    this.cancels++;
    const w = this.#waiting;
    this.#waiting = null;
    w?.resolve(null);
  }
}

async function withServer(handler: ServerHandler, fn: (port: number) => Promise<void>) {
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, handler);
  try {
    await fn(server.addr.port);
  } finally {
    await server.closeAll();
  }
}

const REQUEST = "GET /s HTTP/1.1\r\nHost: x\r\n\r\n";

Deno.test("server: a source that ended before the head goes out in one piece with a length", async () => {
  const src = new FedSource();
  src.push("hello ");
  src.push("world");
  src.push(null);
  await withServer(() => responseWithSource(src, { status: 200 }, [["x-a", "1"]]), async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(REQUEST);
      const got = await c.until((s) => s.endsWith("hello world"));
      assert.match(got, /^HTTP\/1\.1 200 OK\r\nx-a: 1\r\n/);
      assert.ok(got.includes("content-length: 11\r\n"), got);
      assert.ok(!got.includes("transfer-encoding"), got);
      // The connection stays usable.
      c.received = "";
      src.push("again");
      src.push(null);
      await c.send(REQUEST);
      await c.until((s) => s.endsWith("again"));
    } finally {
      c.close();
    }
  });
  assert.equal(src.cancels, 0);
});

Deno.test("server: a streaming source is chunked, each chunk written as it comes, ready ones together", async () => {
  const src = new FedSource();
  src.push("data: 0\n\n"); // here before the head: leaves with it
  await withServer(
    () => responseWithSource(src, { status: 200 }, [["content-type", "text/event-stream"]]),
    async (port) => {
      const c = await RawClient.open(port);
      try {
        await c.send(REQUEST);
        await c.until((s) => s.endsWith("9\r\ndata: 0\n\n\r\n"));
        assert.ok(c.received.includes("transfer-encoding: chunked\r\n"), c.received);
        src.push("data: 1\n\n");
        await c.until((s) => s.endsWith("9\r\ndata: 1\n\n\r\n"));
        // Two chunks ready at one time leave in one write, and the end with them.
        src.ready.push(enc.encode("data: 2\n\n"), enc.encode("data: 3\n\n"), null);
        src.push("x");
        await c.until((s) => s.endsWith("0\r\n\r\n"));
        assert.ok(
          c.received.endsWith("1\r\nx\r\n9\r\ndata: 2\n\n\r\n9\r\ndata: 3\n\n\r\n0\r\n\r\n"),
          JSON.stringify(c.received),
        );
      } finally {
        c.close();
      }
    },
  );
  assert.equal(src.cancels, 0);
});

Deno.test("server: a source that fails mid-body ends the connection without a terminator", async () => {
  const src = new FedSource();
  await withServer(() => responseWithSource(src, { status: 200 }, []), async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(REQUEST);
      src.push("part");
      await c.until((s) => s.endsWith("4\r\npart\r\n"));
      src.fail(new Http1Error("engine closed the connection mid-body", { sent: true }));
      const got = await c.untilClosed();
      assert.ok(!got.includes("0\r\n\r\n"), JSON.stringify(got));
    } finally {
      c.close();
    }
  });
  assert.equal(src.cancels, 1);
});

Deno.test("server: a client that leaves mid-body cancels the source, once", async () => {
  const src = new FedSource();
  await withServer(() => responseWithSource(src, { status: 200 }, []), async (port) => {
    const c = await RawClient.open(port);
    await c.send(REQUEST);
    src.push("first");
    await c.until((s) => s.endsWith("5\r\nfirst\r\n"));
    c.close();
    const deadline = Date.now() + 5_000;
    while (src.cancels === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
  });
  assert.equal(src.cancels, 1);
});

Deno.test("server: an answer whose stream someone else started is written from the stream", async () => {
  const src = new FedSource();
  src.push("abc");
  src.push("def");
  src.push(null);
  let before: BodySource | undefined;
  let after: BodySource | undefined;
  await withServer(async () => {
    const res = responseWithSource(src, { status: 200 }, []);
    before = responseSourceOf(res);
    // Another reader takes a chunk: from then on only the stream may be read.
    const reader = res.body!.getReader();
    const first = await reader.read();
    assert.equal(dec.decode(first.value!), "abc");
    reader.releaseLock();
    after = responseSourceOf(res);
    return res;
  }, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(REQUEST);
      // What is left of the stream, whatever its framing.
      await c.until((s) => s.endsWith("\r\n\r\ndef") || s.endsWith("3\r\ndef\r\n0\r\n\r\n"));
    } finally {
      c.close();
    }
  });
  assert.equal(before, src);
  assert.equal(after, undefined);
});
