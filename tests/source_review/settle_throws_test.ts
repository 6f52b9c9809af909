/**
 * A throwing callback at settle time (here the request-log sink) while the
 * body ends: the source path must neither crash the process with an
 * unhandled rejection nor leave the client hanging; compared with the stream path.
 */
import assert from "node:assert/strict";
import { RawClient, sleep, startEngine, startRig } from "../_helpers/source_rig.ts";

const H = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";

async function run(strip: boolean, endWithHead: boolean) {
  const unhandled: unknown[] = [];
  const onUnhandled = (e: PromiseRejectionEvent) => {
    unhandled.push(e.reason);
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  const engine = startEngine(async (side) => {
    if (endWithHead) {
      await side.write(H + "5\r\nhello\r\n0\r\n\r\n");
      return;
    }
    await side.write(H);
    await sleep(10);
    await side.write("5\r\nhello\r\n");
    await sleep(10);
    await side.write("0\r\n\r\n");
  });
  const rig = startRig(engine.port, { stripSource: strip, throwInLog: true });
  const c = await RawClient.open(rig.port);
  try {
    await c.send("GET /v1/s HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.endsWith("0\r\n\r\n") || /content-length: 5\r\n\r\nhello$/.test(s), 1500)
      .catch(() => {});
    await sleep(100);
    return {
      wire: c.received.replace(/\r\ndate: [^\r]*/g, ""),
      closed: c.closed,
      unhandled: unhandled.map(String),
      outcomes: rig.target.outcomes.length,
    };
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    c.close();
    await rig.close();
    await engine.close();
  }
}

for (const endWithHead of [false, true]) {
  Deno.test(`review: log sink throws at the end (${endWithHead ? "end with head" : "end after waits"})`, async () => {
    const src = await run(false, endWithHead);
    const str = await run(true, endWithHead);
    console.log(JSON.stringify({ src, str }, null, 1));
    assert.deepEqual(src.unhandled, [], "no unhandled rejection on the source path");
    assert.ok(src.wire.includes("hello"), "client got the body");
  });
}
