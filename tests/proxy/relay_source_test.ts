/**
 * The relay's streamed answers over our server, read from the engine's body
 * source (no streams in between): the client gets the same bytes as over
 * the stream path, the log line counts the same bytes, and an engine that
 * fails mid-body leaves the client a truncated answer and the backend a
 * transport error, as before.
 */
import assert from "node:assert/strict";
import { serveHttp1 } from "../../lib/http1/server.ts";
import type { Http1Response } from "../../lib/http1/types.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { eventually, FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { tcpHttp1Client } from "../_helpers/tcp_client.ts";
import { RawClient } from "../_helpers/raw_http.ts";
import { countedSource, withoutSource } from "../_helpers/source_rig.ts";

const enc = new TextEncoder();

/** An engine on loopback that answers every request with `parts`, 5 ms apart; `cut` closes after them. */
function scriptedEngine(parts: string[], cut = false) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const serving = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      void (async () => {
        const buf = new Uint8Array(8192);
        let seen = "";
        try {
          while (!seen.includes("\r\n\r\n")) {
            const n = await conn.read(buf);
            if (n === null) return;
            seen += new TextDecoder().decode(buf.subarray(0, n));
          }
          for (const p of parts) {
            await conn.write(enc.encode(p));
            await new Promise((r) => setTimeout(r, 5));
          }
          if (cut) conn.close();
        } catch { /* the proxy closed it */ }
      })();
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await serving.catch(() => {});
    },
  };
}

const SSE = [
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nx-engine: a\r\n\r\n",
  'f\r\ndata: {"a":1}\n\n\r\n',
  'f\r\ndata: {"a":2}\n\n\r\n',
  "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n",
];

/** One request through relay + serveHttp1 to `engine`; `stripSource` forces the stream path. */
async function through(engine: { port: number }, stripSource: boolean) {
  const client = tcpHttp1Client(engine.port);
  const target = new FakeTarget(7, { baseUrl: `http://127.0.0.1:${engine.port}` });
  let sourceReads = 0;
  target.sender = async (req) => {
    const res: Http1Response = await client.request(req);
    return stripSource ? withoutSource(res) : countedSource(res, () => sourceReads++);
  };
  const lines: RequestLogLine[] = [];
  const h = relayOver([target], { onRequestLog: (l) => lines.push(l) });
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  const c = await RawClient.open(srv.addr.port);
  try {
    await c.send("GET /v1/stream HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.endsWith("0\r\n\r\n"), 5_000).catch(() => {});
    if (!c.received.endsWith("0\r\n\r\n")) await c.untilClosed();
    await target.released();
    await eventually(() => lines.length === 1, 2_000);
    return {
      wire: c.received.replace(/\r\ndate: [^\r]*/, ""),
      closed: c.closed,
      line: lines[0],
      outcome: target.outcomes[0],
      sourceReads,
    };
  } finally {
    c.close();
    await srv.closeAll();
    client.close();
  }
}

Deno.test("relay source: an SSE answer reaches the client as over the stream path, byte for byte", async () => {
  const engine = scriptedEngine(SSE);
  try {
    const viaSource = await through(engine, false);
    const viaStream = await through(engine, true);
    assert.equal(viaSource.wire, viaStream.wire);
    assert.ok(viaSource.sourceReads > 0, "the relay read the source");
    assert.equal(viaStream.sourceReads, 0);
    assert.ok(viaSource.wire.includes("x-engine: a\r\n"), viaSource.wire);
    assert.ok(viaSource.wire.endsWith("e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"), viaSource.wire);
    assert.equal(viaSource.line.bytes, 15 + 15 + 14);
    assert.deepEqual(viaSource.line, { ...viaStream.line, durationMs: viaSource.line.durationMs });
    assert.equal(viaSource.outcome.transportError, false);
    assert.equal(viaSource.outcome.clientCancelled, false);
  } finally {
    await engine.close();
  }
});

Deno.test("relay source: an engine cut off mid-body truncates the client's answer and counts a transport error", async () => {
  const engine = scriptedEngine(SSE.slice(0, 2), true);
  try {
    const viaSource = await through(engine, false);
    const viaStream = await through(engine, true);
    for (const r of [viaSource, viaStream]) {
      assert.ok(r.closed, "the client's connection ends");
      assert.ok(r.wire.endsWith('f\r\ndata: {"a":1}\n\n\r\n'), JSON.stringify(r.wire));
      assert.equal(r.outcome.transportError, true);
      assert.equal(r.outcome.clientCancelled, false);
      assert.equal(r.line.status, 200);
      assert.equal(r.line.bytes, 15);
    }
    assert.equal(viaSource.wire, viaStream.wire);
    assert.ok(viaSource.sourceReads > 0, "the relay read the source");
  } finally {
    await engine.close();
  }
});
