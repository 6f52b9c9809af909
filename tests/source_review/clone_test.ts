/**
 * A handler (middleware) that clones the relay's response, e.g. to peek at
 * it, before returning the original: Response.clone() tees the body and
 * gives the original a fresh, unlocked branch. `responseSourceOf` once
 * handed the server the source anyway, while the tee read the same source
 * (the clone never settled); it must see the branch and leave the source
 * alone. The client must still get the whole answer, once, in order.
 */
import assert from "node:assert/strict";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { responseSourceOf } from "../../lib/http1/raw.ts";
import { FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { tcpHttp1Client } from "../_helpers/tcp_client.ts";
import { dechunk, RawClient, sleep, split, startEngine } from "../_helpers/source_rig.ts";

const H =
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

for (const strip of [true, false]) {
  Deno.test(`review: a cloned relay response still reaches the client whole (${strip ? "stream path" : "source path"})`, async () => {
    const engine = startEngine(async (side) => {
      await side.write(H);
      for (let i = 0; i < 6; i++) {
        await sleep(10);
        await side.write(`2\r\n${i}.\r\n`);
      }
      await side.write("0\r\n\r\n");
    });
    const target = new FakeTarget(3, { baseUrl: `http://127.0.0.1:${engine.port}` });
    const client = tcpHttp1Client(engine.port);
    target.sender = async (req) => {
      const res = await client.request(req);
      if (!strip) return res;
      const { source: _s, ...rest } = res;
      return rest;
    };
    const h = relayOver([target], { onRequestLog: () => {} });
    let sourceAfterClone: boolean | null = null;
    let cloneText: Promise<string> | null = null;
    const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req, info) => {
      const res = await h(req, info);
      const copy = res.clone();
      cloneText = copy.text().catch((e) => `error: ${e}`);
      sourceAfterClone = responseSourceOf(res) !== undefined;
      return res;
    });
    const c = await RawClient.open(srv.addr.port);
    try {
      await c.send("GET /v1/a HTTP/1.1\r\nHost: h\r\n\r\n");
      await c.until((s) => s.endsWith("0\r\n\r\n"), 3000).catch(() => {});
      const got = dechunk(split(c.received).body);
      const copied = await Promise.race([cloneText!, sleep(1000).then(() => "(clone hung)")]);
      console.log(JSON.stringify({ sourceAfterClone, got, copied }));
      assert.equal(got.body, "0.1.2.3.4.5.", "client's body");
      assert.equal(copied, "0.1.2.3.4.5.", "clone's body");
    } finally {
      c.close();
      await srv.closeAll();
      client.close();
      await engine.close();
    }
  });
}
