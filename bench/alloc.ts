/**
 * `deno run bench/alloc.ts [--write]`: what one small byte buffer costs in
 * Deno, made each way the request path can make one, and what the encoders
 * of lib/http1/latin1.ts cost on top. Steady-state cost per call, so the
 * garbage collection each way causes is included. `--write` (needs
 * `--allow-net`) also writes 600-byte buffers of both kinds to a loopback
 * TCP socket, to show a slab view costs a write nothing extra. Numbers for
 * docs/BENCHMARKS.md; no targets.
 */
import { Buffer } from "node:buffer";
import { allocBytes } from "../lib/core/slab.ts";
import { latin1ToBytes, latin1WithTail } from "../lib/http1/latin1.ts";

const N = 300_000;

function time(name: string, f: () => Uint8Array): void {
  for (let i = 0; i < N / 10; i++) f(); // warm-up: optimised code, a settled heap
  const start = performance.now();
  for (let i = 0; i < N; i++) f();
  const us = (performance.now() - start) / N * 1000;
  console.log(`${name.padEnd(40)} ${us.toFixed(3)} µs`);
}

for (const n of [16, 600, 2048]) {
  time(`new Uint8Array(${n})`, () => new Uint8Array(n));
  time(`Buffer.allocUnsafe(${n})`, () => Buffer.allocUnsafe(n));
  time(`allocBytes(${n}) (slab view)`, () => allocBytes(n));
}

// A typical answer of the bench's request: its head, and a 300-byte body.
const head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 300\r\n" +
  "date: Wed, 02 Dec 2026 07:00:00 GMT\r\nserver: uvicorn\r\nconnection: keep-alive\r\n\r\n";
const body = new Uint8Array(300).fill(0x41);
const encoder = new TextEncoder();
time("head + body, own buffer (before slab.ts)", () => {
  const out = new Uint8Array(head.length + body.length);
  out.set(body, encoder.encodeInto(head, out).written);
  return out;
});
time("head + body, latin1WithTail", () => latin1WithTail(head, body));
time("head, TextEncoder.encode (before slab.ts)", () => encoder.encode(head));
time("head, latin1ToBytes", () => latin1ToBytes(head));

if (Deno.args.includes("--write")) await writes();

/** Allocate-and-write of 600 bytes to a loopback socket, fresh buffer against slab view. */
async function writes(): Promise<void> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const drained = (async () => {
    const conn = await listener.accept();
    const sink = new Uint8Array(64 * 1024);
    while ((await conn.read(sink)) !== null) { /* discard */ }
    conn.close();
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  conn.setNoDelay(true);
  const count = 20_000;
  const round = async (make: () => Uint8Array) => {
    const start = performance.now();
    for (let i = 0; i < count; i++) await conn.write(make());
    return (performance.now() - start) / count * 1000;
  };
  const fresh: number[] = [];
  const slab: number[] = [];
  for (let r = 0; r < 6; r++) {
    fresh.push(await round(() => new Uint8Array(600)));
    slab.push(await round(() => allocBytes(600)));
  }
  const show = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(" ");
  console.log(`write 600 B, fresh buffer, µs per write by round: ${show(fresh)}`);
  console.log(`write 600 B, slab view, µs per write by round:    ${show(slab)}`);
  conn.close();
  await drained;
  listener.close();
}
