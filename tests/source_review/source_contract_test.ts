/**
 * BodySource contract of EngineBody and of the relay's relayedSource:
 * double cancel, cancel after end / after failure, reads after the end,
 * and that a late cancel never kills a channel that went back to the pool.
 */
import assert from "node:assert/strict";
import type { BodySource } from "../../lib/http1/body_source.ts";
import { responseSourceOf } from "../../lib/http1/raw.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { eventually, FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { tcpHttp1Client } from "../_helpers/tcp_client.ts";
import { RawClient, sleep, startEngine } from "../_helpers/source_rig.ts";

const H = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
const dec = new TextDecoder();

async function drain(src: BodySource): Promise<string> {
  let s = "";
  for (;;) {
    let c = src.readNow();
    if (c === undefined) c = await src.read();
    if (c === null) return s;
    s += dec.decode(c);
  }
}

Deno.test("review contract: EngineBody cancel after end keeps the pooled channel; reads stay null", async () => {
  const engine = startEngine(async (side) => {
    await side.write(H);
    await sleep(5);
    await side.write("5\r\nhello\r\n0\r\n\r\n");
  });
  const client = tcpHttp1Client(engine.port);
  try {
    const r1 = await client.request({ method: "GET", target: "/", headers: [], body: null });
    assert.ok(r1.source);
    assert.equal(await drain(r1.source), "hello");
    r1.source.cancel();
    r1.source.cancel();
    assert.equal(r1.source.readNow(), null);
    assert.equal(await r1.source.read(), null);
    assert.equal(client.stats().idle, 1);
    const r2 = await client.request({ method: "GET", target: "/", headers: [], body: null });
    assert.equal(await drain(r2.source!), "hello");
    assert.equal(client.stats().opened, 1, "channel reused after a late cancel");
  } finally {
    client.close();
    await engine.close();
  }
});

Deno.test("review contract: EngineBody after a failure: reads reject every time, cancel is a no-op", async () => {
  const engine = startEngine(async (side) => {
    await side.write(H + "5\r\nhello\r\n");
    await sleep(10);
    side.close();
  });
  const client = tcpHttp1Client(engine.port);
  try {
    const r = await client.request({ method: "GET", target: "/", headers: [], body: null });
    const src = r.source!;
    let c = src.readNow() ?? await src.read();
    assert.equal(dec.decode(c!), "hello");
    await assert.rejects(() => src.read());
    await assert.rejects(() => src.read());
    assert.equal(src.readNow(), undefined);
    src.cancel();
    src.cancel();
    await assert.rejects(() => src.read());
    c = null;
  } finally {
    client.close();
    await engine.close();
  }
});

Deno.test("review contract: EngineBody cancel while a read is pending resolves it null and closes the channel", async () => {
  const engine = startEngine(async (side) => {
    await side.write(H + "5\r\nhello\r\n");
    await side.closedP;
  });
  const client = tcpHttp1Client(engine.port);
  try {
    const r = await client.request({ method: "GET", target: "/", headers: [], body: null });
    const src = r.source!;
    assert.equal(dec.decode((src.readNow() ?? await src.read())!), "hello");
    const pending = src.read();
    await sleep(10);
    src.cancel();
    src.cancel();
    assert.equal(await pending, null);
    await engine.sides[0].closedP;
    assert.equal(client.stats().busy, 0);
    assert.equal(client.stats().idle, 0);
  } finally {
    client.close();
    await engine.close();
  }
});

Deno.test("review contract: relayedSource cancel after the end (twice) settles nothing more and keeps the channel", async () => {
  const engine = startEngine(async (side) => {
    await side.write(H);
    await sleep(5);
    await side.write("5\r\nhello\r\n");
    await sleep(5);
    await side.write("0\r\n\r\n");
  });
  const target = new FakeTarget(3, { baseUrl: `http://127.0.0.1:${engine.port}` });
  const h = relayOver([target], { onRequestLog: () => {} });
  const sources: BodySource[] = [];
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req, info) => {
    const res = await h(req, info);
    const s = responseSourceOf(res);
    if (s) sources.push(s);
    return res;
  });
  const c = await RawClient.open(srv.addr.port);
  try {
    await c.send("GET /v1/a HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.endsWith("0\r\n\r\n"), 3000);
    await target.released(1);
    assert.equal(sources.length, 1);
    sources[0].cancel();
    sources[0].cancel();
    assert.equal(sources[0].readNow(), null);
    assert.equal(await sources[0].read(), null);
    await c.send("GET /v1/a HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.split("0\r\n\r\n").length === 3, 3000);
    await target.released(2);
    await eventually(() => target.outcomes.length === 2);
    assert.equal(target.doubleReleases, 0);
    assert.deepEqual(target.outcomes.map((o) => [o.transportError, o.clientCancelled]), [[
      false,
      false,
    ], [false, false]]);
    assert.equal(engine.sides.length, 1, "engine channel reused");
  } finally {
    c.close();
    await srv.closeAll();
    target.close();
    await engine.close();
  }
});
