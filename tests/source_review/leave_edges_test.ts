/**
 * A client leaving after the engine's head arrived but before our head is
 * written, and right at the end of the body.
 */
import assert from "node:assert/strict";
import { serveHttp1 } from "../../lib/http1/server.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { eventually, FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { RawClient, sleep, startEngine, startRig } from "../_helpers/source_rig.ts";

const H =
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

Deno.test("review leave edge: client gone before our head is written cancels the source once", async () => {
  const engine = startEngine(async (side) => {
    await side.write(H + "5\r\nhello\r\n");
    await side.closedP;
  });
  const target = new FakeTarget(3, { baseUrl: `http://127.0.0.1:${engine.port}` });
  const lines: RequestLogLine[] = [];
  const h = relayOver([target], { onRequestLog: (l) => lines.push(l) });
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req, info) => {
    const res = await h(req, info);
    await sleep(150); // the client leaves meanwhile
    return res;
  });
  const c = await RawClient.open(srv.addr.port);
  try {
    await c.send("GET /v1/a HTTP/1.1\r\nHost: h\r\n\r\n");
    await sleep(60);
    c.close();
    await Promise.race([
      engine.sides[0].closedP,
      sleep(2000).then(() => {
        throw new Error("engine not closed");
      }),
    ]);
    await target.released(1);
    await eventually(() => lines.length === 1);
    await sleep(50);
    assert.equal(target.outcomes.length, 1);
    assert.equal(target.doubleReleases, 0);
    assert.equal(target.outcomes[0].clientCancelled, true);
    assert.equal(target.outcomes[0].transportError, false);
  } finally {
    c.close();
    await srv.closeAll();
    target.close();
    await engine.close();
  }
});

Deno.test("review leave edge: client leaves the moment it has the terminator: not a cancel", async () => {
  for (const strip of [false, true]) {
    const engine = startEngine(async (side) => {
      await side.write(H);
      await sleep(5);
      await side.write("5\r\nhello\r\n");
      await sleep(5);
      await side.write("0\r\n\r\n");
    });
    const rig = startRig(engine.port, { stripSource: strip });
    try {
      for (let i = 0; i < 5; i++) {
        const c = await RawClient.open(rig.port);
        await c.send("GET /v1/a HTTP/1.1\r\nHost: h\r\n\r\n");
        await c.until((s) => s.endsWith("0\r\n\r\n"), 2000);
        c.close();
        await rig.target.released(i + 1);
      }
      await eventually(() => rig.lines.length === 5);
      assert.ok(rig.target.outcomes.every((o) => !o.clientCancelled && !o.transportError));
      assert.ok(rig.lines.every((l) => !l.clientCancelled && l.bytes === 5));
      // (Channels are pooled per client connection (affinity), so each client opens its own.)
    } finally {
      await rig.close();
      await engine.close();
    }
  }
});
