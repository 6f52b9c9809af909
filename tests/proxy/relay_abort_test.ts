/**
 * The relay cancels its exchange with an engine through the `RequestAbort`
 * it hands the client as `req.abort` (no `AbortSignal` per request). A
 * client that leaves before the response head, or during the body, must
 * abort it, and so close the engine's connection so it stops generating.
 */
import assert from "node:assert/strict";
import { RequestAbort } from "../../lib/http1/request_abort.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import type { Http1Request } from "../../lib/http1/types.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { createHandler, type RequestLogLine } from "../../lib/proxy/relay.ts";
import { eventually, FakePool, FakeTarget } from "../_helpers/fake_pool.ts";

const P = "http://proxy.test";
const enc = new TextEncoder();
const dec = new TextDecoder();

function handler(target: FakeTarget) {
  const lines: RequestLogLine[] = [];
  const h = createHandler({
    pool: new FakePool([target]),
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1024,
    onRequestLog: (l) => lines.push(l),
  });
  return { h, lines };
}

/**
 * A scripted engine exchange that ends only through `req.abort`, as the
 * production client's does: it never answers (`mode: "head"`), or answers
 * with one SSE event and then a body that never ends (`mode: "body"`).
 */
function abortOnlyEngine(target: FakeTarget, mode: "head" | "body"): Http1Request[] {
  const seen: Http1Request[] = [];
  target.sender = (req) => {
    seen.push(req);
    const abort = req.abort;
    if (!abort) return Promise.reject(new Error("no req.abort: nothing could cancel this"));
    if (mode === "head") {
      return new Promise((_, reject) => abort.onAbort(() => reject(abort.reason)));
    }
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode("data: 1\n\n"));
        abort.onAbort(() => c.error(abort.reason));
      },
    });
    return Promise.resolve({
      status: 200,
      statusText: "OK",
      headers: [["content-type", "text/event-stream"]],
      body,
    });
  };
  return seen;
}

/** The relay's abort of `req`, checked to be the cheap kind and aborted as a client leaving does. */
function assertClientAborted(req: Http1Request): void {
  assert.equal(req.signal, undefined, "no AbortSignal made per request");
  assert.ok(req.abort instanceof RequestAbort);
  assert.equal(req.abort.aborted, true, "the exchange was aborted");
  const reason = req.abort.reason as Error;
  assert.ok(reason instanceof DOMException);
  assert.equal(reason.name, "AbortError");
  assert.equal(reason.message, "client disconnected");
}

Deno.test("relay: a client leaving before the response head aborts the exchange's req.abort", async () => {
  const target = new FakeTarget(1);
  const seen = abortOnlyEngine(target, "head");
  const { h, lines } = handler(target);
  const ac = new AbortController();
  const pending = h(new Request(`${P}/stream`, { signal: ac.signal }));
  await eventually(() => seen.length === 1);
  assert.equal(seen[0].abort?.aborted, false, "not aborted while the client waits");
  ac.abort();
  const res = await pending;
  assert.equal(res.status, 499);
  assertClientAborted(seen[0]);
  await target.released();
  assert.equal(target.outcomes[0].clientCancelled, true);
  assert.equal(target.outcomes[0].transportError, false);
  assert.equal(target.acquires, 1, "a cancelled request is not retried");
  assert.deepEqual(lines.map((l) => [l.status, l.clientCancelled]), [[499, true]]);
});

Deno.test("relay: a client leaving or cancelling mid-body aborts the exchange's req.abort", async () => {
  for (const how of ["leave", "cancel"]) {
    const target = new FakeTarget(1);
    const seen = abortOnlyEngine(target, "body");
    const { h, lines } = handler(target);
    const ac = new AbortController();
    const res = await h(new Request(`${P}/stream`, { signal: ac.signal }));
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    assert.equal(dec.decode((await reader.read()).value), "data: 1\n\n");
    assert.equal(seen[0].abort?.aborted, false, how);
    if (how === "leave") {
      // The client's connection went away (the server aborts the request):
      // the abort alone must end the exchange, and the client's stream with it.
      ac.abort();
      assert.equal((await reader.read()).done, true, how);
    } else {
      await reader.cancel();
    }
    assertClientAborted(seen[0]);
    await target.released();
    assert.equal(target.outcomes[0].clientCancelled, true, how);
    assert.equal(target.outcomes[0].transportError, false, how);
    assert.deepEqual(lines.map((l) => [l.status, l.clientCancelled]), [[200, true]], how);
  }
});

/**
 * An engine on a TCP socket that answers every request head with `reply`
 * (or not at all) and counts connections the proxy closed.
 */
function tcpEngine(reply: string | null) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const state = {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    requests: 0,
    closedByProxy: 0,
    async close() {
      listener.close();
      for (const c of conns) c.close();
      await Promise.all(tasks);
      await accepting;
    },
  };
  const serve = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) {
          state.closedByProxy++;
          break;
        }
        if (dec.decode(buf.subarray(0, n)).includes("\r\n\r\n")) {
          state.requests++;
          if (reply !== null) await conn.write(enc.encode(reply));
        }
      }
    } catch {
      // closed by close() at teardown
    }
    if (conns.delete(conn)) conn.close();
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        conns.add(conn);
        tasks.push(serve(conn));
      }
    } catch {
      // listener closed
    }
  })();
  return state;
}

Deno.test("relay over serveHttp1: a client hanging up closes the engine's connection, before or after the head", async () => {
  const head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n" +
    "transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n";
  for (const when of ["before head", "mid-body"]) {
    const engine = tcpEngine(when === "mid-body" ? head : null);
    const target = new FakeTarget(1, { baseUrl: engine.url });
    const { h } = handler(target);
    const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: srv.addr.port });
      await conn.write(enc.encode("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"));
      await eventually(() => engine.requests === 1, 2000);
      if (when === "mid-body") {
        // Wait until the first event reached the client.
        const buf = new Uint8Array(4096);
        let got = "";
        while (!got.includes("data: 1")) {
          const n = await conn.read(buf);
          assert.notEqual(n, null, "the proxy closed before the first event");
          got += dec.decode(buf.subarray(0, n!));
        }
      }
      assert.equal(engine.closedByProxy, 0, when);
      conn.close();
      await eventually(() => engine.closedByProxy === 1, 1000);
      await target.released();
      assert.equal(target.outcomes[0].clientCancelled, true, when);
      assert.equal(target.outcomes[0].transportError, false, when);
    } finally {
      // The engine first: a relay still waiting on it (the failure this test
      // looks for) then ends, and the server can close.
      await engine.close();
      target.close();
      await srv.closeAll();
    }
  }
});
