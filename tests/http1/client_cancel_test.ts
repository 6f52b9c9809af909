/**
 * A client that hangs up at every moment (before the engine answers, right
 * as the head arrives, mid-body, after the end) through a real Deno.serve:
 * every backend's in-flight slot returns to 0, each request gets exactly
 * one request-log line, and no release happens twice.
 */
import assert from "node:assert/strict";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { latin1ToBytes } from "../../lib/http1/latin1.ts";
import { FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { startRawEngine } from "../_helpers/raw_engine.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("clients hanging up at every moment leave no in-flight slot and one log line each", async () => {
  let unstall!: () => void;
  const stalled = new Promise<null>((r) => (unstall = () => r(null)));
  const engine = startRawEngine((r) => {
    const q = new URL(r.target, "http://x").searchParams;
    const delayMs = Number(q.get("d"));
    switch (q.get("m")) {
      case "stall": // never answers (until teardown)
        return stalled;
      case "head": // head, then a body that never comes
        return { parts: ["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"], delayMs };
      case "chunks": // a slow stream
        return {
          parts: [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            ...Array(30).fill("1\r\na\r\n"),
            "0\r\n\r\n",
          ],
          delayMs,
          partDelayMs: 2,
        };
      default:
        return { parts: ["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"], delayMs };
    }
  });
  const target = new FakeTarget(1, { baseUrl: engine.url });
  const logs: RequestLogLine[] = [];
  const h = relayOver([target], { onRequestLog: (l) => logs.push(l) });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (r, info) => guardResponse(await h(r, info)),
  );
  let sent = 0;
  try {
    await Promise.all(["stall", "head", "ok", "chunks"].map(async (mode) => {
      for (let i = 0; i < 15; i++) {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
        await conn.write(latin1ToBytes(
          `POST /x?m=${mode}&d=${i % 10} HTTP/1.1\r\nhost: p\r\ncontent-length: 1\r\n\r\nq`,
        ));
        sent++;
        await sleep((i * 7) % 20); // hang up somewhere between before-head and after-end
        conn.close();
      }
    }));
    const deadline = Date.now() + 3000;
    while ((target.inFlight > 0 || logs.length < sent) && Date.now() < deadline) await sleep(20);
    assert.equal(target.inFlight, 0, "in-flight slot kept");
    assert.equal(logs.length, sent, "one log line per request");
    assert.equal(target.acquires, target.outcomes.length);
    assert.equal(target.doubleReleases, 0);
    await sleep(100);
    assert.equal(logs.length, sent, "no late second log line");
  } finally {
    unstall();
    target.close();
    await server.shutdown();
    await engine.close();
  }
});
