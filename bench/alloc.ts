/**
 * `deno run bench/alloc.ts`: what one small byte buffer costs in Deno, made
 * each way the request path can make one, and what the encoders of
 * lib/http1/latin1.ts cost on top. Steady-state cost per call, so the
 * garbage collection each way causes is included. Numbers for
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
