/**
 * Child process for tests/http1/no_panic_test.ts: runs the relay behind a
 * real `Deno.serve` (with guardResponse, as proxy_app does) in front of a
 * raw engine that answers every request with a response carrying one byte
 * value (0x00–0xff) in one position of the head or chunked framing. A
 * Deno.serve panic exits this process, which the parent detects; otherwise
 * it prints a JSON summary of what each client received.
 */
import { guardResponse } from "../../lib/proxy/guard.ts";
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";
import { FakeTarget, relayOver } from "./fake_pool.ts";
import { startRawEngine } from "./raw_engine.ts";

/** Where the byte goes; `b` is one byte as a byte string. */
const POSITIONS: Record<string, (b: string) => string> = {
  reason: (b) => `HTTP/1.1 200 a${b}b\r\ncontent-length: 2\r\n\r\nok`,
  value: (b) => `HTTP/1.1 200 OK\r\nx-v: a${b}b\r\ncontent-length: 2\r\n\r\nok`,
  valueOnly: (b) => `HTTP/1.1 200 OK\r\nx-v: ${b}\r\ncontent-length: 2\r\n\r\nok`,
  name: (b) => `HTTP/1.1 200 OK\r\nx${b}n: v\r\ncontent-length: 2\r\n\r\nok`,
  contentType: (b) => `HTTP/1.1 200 OK\r\ncontent-type: t${b}\r\ncontent-length: 2\r\n\r\nok`,
  connection: (b) => `HTTP/1.1 200 OK\r\nconnection: x${b}\r\ncontent-length: 2\r\n\r\nok`,
  chunkExt: (b) =>
    `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;e=${b}\r\nok\r\n0\r\n\r\n`,
  trailer: (b) =>
    `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nt: ${b}\r\n\r\n`,
  status204: (b) => `HTTP/1.1 204 a${b}\r\nx-v: ${b}\r\n\r\n`,
};

const cases: { target: string; reply: string }[] = [];
for (const [pos, make] of Object.entries(POSITIONS)) {
  for (let b = 0; b < 256; b++) {
    cases.push({ target: `/${pos}/${b}`, reply: make(String.fromCharCode(b)) });
  }
}
const byTarget = new Map(cases.map((c) => [c.target, c.reply]));
// Closing after each answer ends the ones a byte turned close-delimited
// (a LF right before the CRLF ends the head early).
const engine = startRawEngine((r) => {
  const reply = byTarget.get(r.target);
  return reply === undefined ? null : { parts: [reply], close: true };
});
const target = new FakeTarget(1, { baseUrl: engine.url });
const h = relayOver([target]);
const server = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen: () => {} },
  async (r, info) => guardResponse(await h(r, info)),
);

async function exchange(path: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  try {
    await conn.write(latin1ToBytes(`GET ${path} HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n`));
    let out = "";
    const buf = new Uint8Array(8192);
    for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
      out += bytesToLatin1(buf.subarray(0, n));
    }
    return out;
  } finally {
    conn.close();
  }
}

const statuses: Record<string, number> = {};
const bad: string[] = [];
let next = 0;
await Promise.all(Array.from({ length: 8 }, async () => {
  while (next < cases.length) {
    const c = cases[next++];
    const out = await exchange(c.target);
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(out)?.[1] ?? "none";
    statuses[status] = (statuses[status] ?? 0) + 1;
    if (status === "none") bad.push(`${c.target}: ${JSON.stringify(out.slice(0, 80))}`);
  }
}));
const twice = cases.filter((c) => engine.count(c.target) > 1).map((c) => c.target);
console.log(
  JSON.stringify({ cases: cases.length, statuses, bad, twice, inFlight: target.inFlight }),
);
target.close();
await server.shutdown();
await engine.close();
