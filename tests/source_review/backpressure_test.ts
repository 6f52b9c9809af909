/**
 * A big content-length (and chunked) body to a client that does not read:
 * the engine must be paused (the proxy does not buffer the body), the same
 * as on the stream path; then the client reads it all, byte-exact.
 */
import assert from "node:assert/strict";
import { RawClient, sleep, startEngine, startRig } from "../_helpers/source_rig.ts";
import { eventually } from "../_helpers/fake_pool.ts";

const MiB = 1024 * 1024;
const TOTAL = 48 * MiB;

async function run(strip: boolean, chunked: boolean) {
  const block = new Uint8Array(256 * 1024).fill(0x61);
  let engineWritten = 0;
  const engine = startEngine(async (side) => {
    await side.write(
      chunked
        ? "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        : `HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: ${TOTAL}\r\n\r\n`,
    );
    const frame = new TextEncoder().encode(`${block.length.toString(16)}\r\n`);
    for (let sent = 0; sent < TOTAL; sent += block.length) {
      if (chunked && !(await side.write(frame))) return;
      if (!(await side.write(block))) return;
      if (chunked && !(await side.write("\r\n"))) return;
      engineWritten = sent + block.length;
    }
    if (chunked) await side.write("0\r\n\r\n");
  });
  const rig = startRig(engine.port, { stripSource: strip });
  const c = await RawClient.open(rig.port);
  try {
    await c.send("GET /v1/big HTTP/1.1\r\nHost: h\r\n\r\n");
    await sleep(1500); // client reads nothing
    const stalledAt = engineWritten;
    const rss = Deno.memoryUsage().rss;
    // Now drain everything into one buffer, then decode.
    const all = new Uint8Array(TOTAL * 2);
    let len = 0;
    const deadline = Date.now() + 30_000;
    const endsChunked = () =>
      len >= 5 && all[len - 5] === 0x30 && all[len - 4] === 13 && all[len - 3] === 10 &&
      all[len - 2] === 13 &&
      all[len - 1] === 10;
    let headLen = -1;
    while (Date.now() < deadline) {
      const n = await c.conn.read(all.subarray(len, Math.min(all.length, len + (1 << 20))));
      if (n === null) break;
      len += n;
      if (headLen < 0) {
        const t = new TextDecoder("latin1").decode(all.subarray(0, Math.min(len, 4096)));
        const i = t.indexOf("\r\n\r\n");
        if (i >= 0) headLen = i + 4;
      }
      if (headLen >= 0 && (chunked ? endsChunked() : len - headLen >= TOTAL)) break;
    }
    const acc = new TextDecoder("latin1").decode(all.subarray(0, headLen));
    let got = 0;
    if (!acc.includes("chunked")) got = len - headLen;
    else {
      let at = headLen;
      for (;;) {
        let nl = at;
        while (!(all[nl] === 13 && all[nl + 1] === 10)) nl++;
        const size = parseInt(new TextDecoder("latin1").decode(all.subarray(at, nl)), 16);
        if (!(size > 0)) break;
        for (let i = nl + 2; i < nl + 2 + size; i++) {
          if (all[i] !== 0x61) throw new Error("bad byte");
        }
        got += size;
        at = nl + 2 + size + 2;
      }
    }
    const want = TOTAL;
    await rig.target.released(1, 5000);
    await eventually(() => rig.lines.length === 1, 2000);
    return {
      stalledAt,
      rss,
      got,
      want,
      outcome: rig.target.outcomes[0],
      head: acc.slice(0, headLen),
    };
  } finally {
    c.close();
    await rig.close();
    await engine.close();
  }
}

for (const chunked of [false, true]) {
  Deno.test(`review backpressure: ${chunked ? "chunked" : "content-length"} 48 MiB to a stalled client`, async () => {
    const src = await run(false, chunked);
    const str = await run(true, chunked);
    console.log(
      `engine wrote while stalled: source ${(src.stalledAt / MiB).toFixed(1)} MiB, stream ${
        (str.stalledAt / MiB).toFixed(1)
      } MiB; rss ${(src.rss / MiB).toFixed(0)} / ${(str.rss / MiB).toFixed(0)} MiB`,
    );
    assert.ok(src.stalledAt < 24 * MiB, `engine not paused: ${src.stalledAt}`);
    assert.ok(src.stalledAt <= str.stalledAt + 4 * MiB, `source buffers more than stream`);
    assert.equal(src.got, src.want, "all bytes (source)");
    assert.equal(src.outcome.transportError, false);
    assert.equal(src.outcome.clientCancelled, false);
  });
}
