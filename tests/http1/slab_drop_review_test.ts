/**
 * Hostile review of b0d53f2 (small request reads copied into the shared
 * slab; the connection drops its buffer once all of it was consumed): the
 * paths where the buffer is *not* fully consumed, or consumed without a
 * drop, while a response streams for minutes. Each probe, like
 * tests/core/slab_retention_test.ts, makes every request's read come from
 * a slab of its own, holds an SSE stream open and counts the slabs still
 * alive after a full collection.
 */
import assert from "node:assert/strict";
import { COLLECT, heldConnectionsProbe, SLAB_PROBE, withGc } from "../_helpers/gc_probe.ts";

const N = 30;

/**
 * A probe: a server whose handler reads the body as the relay does
 * (BodyReader: the side channel first, else the stream), copies nothing
 * it keeps, and answers with an SSE stream left open; `send(c, i)` sends
 * request i on its own connection, calling `mark()` before the read whose
 * slab is watched.
 */
function probe(send: string): string {
  return `
import { serveHttp1 } from "LIB/http1/server.ts";
import { BodyReader } from "LIB/proxy/body.ts";
${SLAB_PROBE}
${COLLECT}
const bodies = new BodyReader({ maxBodyBytes: 1 << 20 });
const controllers = [];
let read = 0;
const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
  {
    using r = await bodies.read(req);
    if (r.ok && r.body !== null && r.body.byteLength === 27) read++;
  }
  return new Response(new ReadableStream({ start(c) { controllers.push(c); } }), {
    headers: { "content-type": "text/event-stream" },
  });
});
const te = new TextEncoder();
const body = '{"model":"m","stream":true}';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const refs = [];
/** Moves on to a fresh slab and watches it: the next read goes there. */
function mark() {
  nextSlab();
  refs.push(new WeakRef(currentSlab()));
}
async function send(c, i) { ${send} }
const conns = [];
const buf = new Uint8Array(4096);
const event = te.encode("data: {}\\n\\n");
for (let i = 0; i < ${N}; i++) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  conns.push(c);
  await send(c, i);
  await c.read(buf); // the head
  controllers[i].enqueue(event);
  await c.read(buf); // an event
  nextSlab();
}
nextSlab();
await collect();
console.log(JSON.stringify({ alive: alive(refs), refs: refs.length, streams: controllers.length, read }));
for (const c of controllers) c.close();
for (const c of conns) c.close();
await server.shutdown();
`;
}

const HEAD = "POST /v1/chat/completions HTTP/1.1\\r\\nhost: x\\r\\n";

Deno.test("slab review: a chunked request body read through the stream leaves no slab pinned while the answer streams", async () => {
  const r = await withGc(probe(`
    mark();
    await c.write(te.encode("${HEAD}transfer-encoding: chunked\\r\\n\\r\\n1b\\r\\n" + body + "\\r\\n0\\r\\n\\r\\n"));
  `));
  assert.equal(r.streams, N);
  assert.equal(r.read, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their chunked body's slab`);
});

Deno.test("slab review: a body that came after its head (read through the stream) leaves no slab pinned while the answer streams", async () => {
  const r = await withGc(probe(`
    await c.write(te.encode("${HEAD}content-length: 27\\r\\nx-delay: 1\\r\\n\\r\\n"));
    await sleep(30); // the handler asked for the body before it came: the stream reads it
    mark();
    await c.write(te.encode(body));
  `));
  assert.equal(r.streams, N);
  assert.equal(r.read, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their late body's slab`);
});

Deno.test("slab review: a CRLF after a taken body (as some clients send) leaves no slab pinned while the answer streams", async () => {
  const r = await withGc(probe(`
    mark();
    await c.write(te.encode("${HEAD}content-length: 27\\r\\n\\r\\n" + body + "\\r\\n"));
  `));
  assert.equal(r.streams, N);
  assert.equal(r.read, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their request's slab`);
});

Deno.test("slab review: a byte sent while the answer streams leaves no slab pinned", async () => {
  const r = await withGc(probe(`
    await c.write(te.encode("${HEAD}content-length: 27\\r\\n\\r\\n" + body));
    await sleep(20);
    mark();
    await c.write(te.encode("G")); // the start of a pipelined request; the watch reads it
    await sleep(20);
  `));
  assert.equal(r.streams, N);
  assert.equal(r.read, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold the slab of one stray byte`);
});

Deno.test("slab review (control): a body taken whole with its head leaves no slab pinned while the answer streams", async () => {
  const r = await withGc(probe(`
    mark();
    await c.write(te.encode("${HEAD}content-length: 27\\r\\n\\r\\n" + body));
  `));
  assert.equal(r.streams, N);
  assert.equal(r.read, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their request's slab`);
});

Deno.test("slab review: a pipelined request behind a streaming one leaves no slab pinned while the answer streams", async () => {
  const r = await withGc(probe(`
    mark();
    await c.write(te.encode(
      "${HEAD}content-length: 27\\r\\n\\r\\n" + body + "GET /v1/models HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n",
    ));
  `));
  assert.equal(r.streams, N);
  assert.equal(r.read, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their request's slab`);
});

Deno.test("slab review: a GET's unread body leaves no slab pinned while the answer streams", async () => {
  const r = await withGc(probe(`
    mark();
    await c.write(te.encode("GET /v1/events HTTP/1.1\\r\\nhost: x\\r\\ncontent-length: 27\\r\\n\\r\\n" + body));
  `));
  assert.equal(r.streams, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their request's slab`);
});

Deno.test("slab review: a head that stalls after its first read leaves no slab pinned while it waits", async () => {
  const r = await withGc(heldConnectionsProbe(
    N,
    // A slow client (or a slowloris): the head's first line, then nothing yet.
    `await c.write(new TextEncoder().encode("POST /v1/chat/completions HTTP/1.1\\r\\n"));
  await new Promise((r) => setTimeout(r, 20));`,
    ", headerTimeoutMs: 20_000",
  ));
  assert.equal(r.open, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} half-sent heads still hold a slab each`);
});

Deno.test("slab review: a body that stalls mid-way leaves no slab pinned while the server waits for the rest", async () => {
  const r = await withGc(`
import { serveHttp1 } from "LIB/http1/server.ts";
${SLAB_PROBE}
${COLLECT}
let got = 0;
const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
  // Copies what it reads (as BodyReader does), keeps no view: each chunk
  // is seen in a frame of its own that has ended before the next read.
  const reader = req.body.getReader();
  let n = 0;
  for (;;) {
    const k = await lengthOf(reader);
    if (k < 0) break;
    n += k;
    got++;
  }
  return new Response(String(n));
});
async function lengthOf(reader) {
  const r = await reader.read();
  return r.done ? -1 : r.value.byteLength;
}
const refs = [];
const conns = [];
for (let i = 0; i < ${N}; i++) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  conns.push(c);
  await c.write(new TextEncoder().encode(
    "POST /v1/chat/completions HTTP/1.1\\r\\nhost: x\\r\\ncontent-length: 1000\\r\\n\\r\\n",
  ));
  await new Promise((r) => setTimeout(r, 20));
  nextSlab();
  refs.push(new WeakRef(currentSlab()));
  await c.write(new TextEncoder().encode("x".repeat(100))); // a tenth of it, then a stall
  await new Promise((r) => setTimeout(r, 20));
}
nextSlab();
await collect();
console.log(JSON.stringify({ alive: alive(refs), got }));
for (const c of conns) c.close();
await server.shutdown();
`);
  assert.equal(r.got, N);
  assert.ok(
    r.alive <= 2,
    `${r.alive} of ${N} stalled uploads still hold the slab of their last piece`,
  );
});
