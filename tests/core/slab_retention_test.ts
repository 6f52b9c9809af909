/**
 * What the slab's views keep alive (core/slab.ts). A view pins its whole
 * 16 KiB slab, so bytes from it must not outlive their write: found by a
 * hostile review of the slab, which saw an open SSE stream keep its
 * response head (and so a slab) for the stream's whole life, and a request
 * waiting for the engine keep its encoded payload. Each probe makes every
 * stream's bytes come from a slab of its own, then counts the slabs still
 * alive after a full collection.
 */
import assert from "node:assert/strict";
import { COLLECT, heldConnectionsProbe, SLAB_PROBE, withGc } from "../_helpers/gc_probe.ts";

const N = 30;

Deno.test("slab: open SSE streams do not keep the slabs their heads came from", async () => {
  const r = await withGc(`
import { serveHttp1 } from "LIB/http1/server.ts";
${SLAB_PROBE}
${COLLECT}
const controllers = [];
const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, () =>
  new Response(new ReadableStream({ start(c) { controllers.push(c); } }), {
    headers: { "content-type": "text/event-stream" },
  }));
const refs = [];
const conns = [];
const buf = new Uint8Array(4096);
const event = new TextEncoder().encode("data: {}\\n\\n");
for (let i = 0; i < ${N}; i++) {
  nextSlab();
  refs.push(new WeakRef(currentSlab()));
  const c = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  conns.push(c);
  await c.write(new TextEncoder().encode("GET /events HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"));
  await c.read(buf); // the head
  controllers[i].enqueue(event);
  await c.read(buf); // an event: the first write is long done
}
nextSlab();
await collect();
console.log(JSON.stringify({ alive: alive(refs), streams: controllers.length }));
for (const c of controllers) c.close();
for (const c of conns) c.close();
await server.shutdown();
`);
  assert.equal(r.streams, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their head's slab`);
});

Deno.test("slab: open SSE streams do not keep the slab their request's head and body were read into", async () => {
  const r = await withGc(`
import { serveHttp1 } from "LIB/http1/server.ts";
import { rawRequestOf } from "LIB/http1/raw.ts";
${SLAB_PROBE}
${COLLECT}
const controllers = [];
let taken = 0;
const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (req) => {
  // As the relay's body reader does: the buffered body, whole, then dropped.
  if (rawRequestOf(req)?.takeBody()?.length === 27) taken++;
  return new Response(new ReadableStream({ start(c) { controllers.push(c); } }), {
    headers: { "content-type": "text/event-stream" },
  });
});
const refs = [];
const conns = [];
const buf = new Uint8Array(4096);
const event = new TextEncoder().encode("data: {}\\n\\n");
const body = '{"model":"m","stream":true}';
for (let i = 0; i < ${N}; i++) {
  nextSlab();
  refs.push(new WeakRef(currentSlab()));
  const c = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  conns.push(c);
  // Head and body in one write: one read, copied into the current slab.
  await c.write(new TextEncoder().encode(
    "POST /v1/chat/completions HTTP/1.1\\r\\nhost: x\\r\\ncontent-length: 27\\r\\n\\r\\n" + body,
  ));
  await c.read(buf); // the head
  controllers[i].enqueue(event);
  await c.read(buf);
}
nextSlab();
await collect();
console.log(JSON.stringify({ alive: alive(refs), streams: controllers.length, taken }));
for (const c of controllers) c.close();
for (const c of conns) c.close();
await server.shutdown();
`);
  assert.equal(r.streams, N);
  assert.equal(r.taken, N, "each body came whole from the buffer");
  assert.ok(r.alive <= 2, `${r.alive} of ${N} open streams still hold their request's slab`);
});

Deno.test("slab: idle keep-alive connections do not keep the slab their last request was read into", async () => {
  const r = await withGc(heldConnectionsProbe(
    N,
    `await c.write(new TextEncoder().encode("GET /v1/models HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n"));
  await c.read(buf); // the whole answer; the connection stays open, idle`,
  ));
  assert.equal(r.open, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} idle connections still hold their last read's slab`);
});

Deno.test("slab: a request waiting for the engine does not keep its encoded payload", async () => {
  const r = await withGc(`
import { Duplex } from "node:stream";
import { Http1Client } from "LIB/http1/client.ts";
${SLAB_PROBE}
${COLLECT}
// Channels that take every write and never answer: each request waits.
const channels = [];
const client = new Http1Client(() => {
  const ch = new Duplex({ write(_chunk, _enc, cb) { cb(); }, read() {} });
  channels.push(ch);
  return Promise.resolve(ch);
}, { host: "127.0.0.1:8000", maxIdle: 64 });
const refs = [];
const pending = [];
for (let i = 0; i < ${N}; i++) {
  nextSlab();
  refs.push(new WeakRef(currentSlab()));
  pending.push(client.request({
    method: "POST",
    target: "/v1/chat/completions",
    headers: [["content-type", "application/json"]],
    body: new TextEncoder().encode('{"model":"m","messages":[]}'),
  }).catch(() => {}));
  await new Promise((r) => setTimeout(r, 0)); // written
}
nextSlab();
await collect();
console.log(JSON.stringify({ alive: alive(refs), written: channels.length }));
for (const ch of channels) ch.destroy();
await Promise.all(pending);
`);
  assert.equal(r.written, N);
  assert.ok(r.alive <= 2, `${r.alive} of ${N} waiting requests still hold their payload's slab`);
});
