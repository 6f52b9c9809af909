/**
 * Hostile review of 5f024c4 from the relay's side: a whole-body answer
 * settles (release, wake, log line) synchronously right after the server
 * wrote it. Pipelined requests, admission handing slots out from inside the
 * server's write path, clients leaving mid-write, log sinks that reenter,
 * retries and pins, and which answers use the path at all.
 *
 * Nothing here depends on `onCompleted` existing, so the file also runs on
 * the parent commit (c73cec3) for comparison.
 */
import assert from "node:assert/strict";
import { Http1Error, type Http1Request, type Http1Response } from "../../lib/http1/types.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { Admission } from "../../lib/proxy/admission.ts";
import type { RouteTarget } from "../../lib/proxy/pool.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { eventually, FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { countResponses, RawClient } from "../_helpers/raw_http.ts";

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function whole(text: string | Uint8Array, status = 200): Http1Response {
  const body = typeof text === "string" ? enc.encode(text) : text;
  return {
    status,
    statusText: "",
    headers: [["content-type", "application/json"], ["content-length", String(body.byteLength)]],
    body: body as Uint8Array<ArrayBuffer>,
  };
}

function pathOf(req: Http1Request): string {
  return req.target;
}

Deno.test("review: pipelined whole-body answers: one line each, in order, each before the next request reaches the engine", async () => {
  const events: string[] = [];
  const t = new FakeTarget(1);
  t.sender = (req) => {
    events.push(`send ${pathOf(req)}`);
    return Promise.resolve(whole(`{"p":"${pathOf(req)}"}`));
  };
  const h = relayOver([t], {
    onRequestLog: (l) => events.push(`line ${l.path} ${l.status} cc=${l.clientCancelled}`),
  });
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  const c = await RawClient.open(srv.addr.port);
  try {
    await c.send(
      ["/a", "/b", "/c"].map((p) => `GET ${p} HTTP/1.1\r\nHost: h\r\n\r\n`).join(""),
    );
    await c.until((s) => countResponses(s) === 3);
    await eventually(() => events.length === 6);
    assert.deepEqual(events, [
      "send /a",
      "line /a 200 cc=false",
      "send /b",
      "line /b 200 cc=false",
      "send /c",
      "line /c 200 cc=false",
    ]);
    assert.equal(t.doubleReleases, 0);
    assert.equal(t.outcomes.length, 3);
    assert.ok(t.outcomes.every((o) => !o.clientCancelled && o.status === 200));
  } finally {
    c.close();
    await srv.closeAll();
  }
});

Deno.test("review: admission woken from inside the write path never lets a pipelined newcomer exceed capacity", async () => {
  // One slot: saturated at 1 in flight (counting what wake hands out).
  const t = new FakeTarget(1);
  let live = 0;
  let maxLive = 0;
  let gate!: () => void;
  const held = new Promise<void>((r) => (gate = r));
  const order: string[] = [];
  t.sender = async (req) => {
    live++;
    maxLive = Math.max(maxLive, t.inFlight, live);
    order.push(`send ${pathOf(req)}`);
    try {
      if (pathOf(req) === "/a") await held;
      else await sleep(5);
      return whole(`{"p":"${pathOf(req)}"}`);
    } finally {
      live--;
    }
  };
  const admission = new Admission({
    saturated: (x: RouteTarget, extra: number) => x.inFlight + extra >= 1,
    pollMs: 10_000, // only wake() may route
  });
  const lines: RequestLogLine[] = [];
  const h = relayOver([t], { admission, onRequestLog: (l) => lines.push(l) });
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  const c1 = await RawClient.open(srv.addr.port);
  const c2 = await RawClient.open(srv.addr.port);
  try {
    // /a takes the slot; /c waits pipelined behind it on the same connection.
    await c1.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n");
    await eventually(() => order.length === 1);
    // /b is held by admission.
    await c2.send("GET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    await eventually(() => admission.stats().depth === 1);
    gate();
    await c1.until((s) => countResponses(s) === 2);
    await c2.until((s) => countResponses(s) === 1);
    assert.equal(maxLive, 1, `in flight peaked at ${maxLive}: ${order.join(", ")}`);
    // FIFO: the held /b goes before the newcomer /c.
    assert.deepEqual(order, ["send /a", "send /b", "send /c"]);
    await eventually(() => lines.length === 3);
    assert.deepEqual(lines.map((l) => l.path), ["/a", "/b", "/c"]);
    assert.equal(t.doubleReleases, 0);
  } finally {
    c1.close();
    c2.close();
    await srv.closeAll();
  }
});

/**
 * A relay over our server answering a 32 MiB whole body to a client that
 * reads nothing, once the engine has answered: the write is stuck.
 */
async function bigWholeBodyStuck() {
  const t = new FakeTarget(1);
  let sent = 0;
  t.sender = () => {
    sent++;
    return Promise.resolve(whole(new Uint8Array(32 * 1024 * 1024).fill(0x20)));
  };
  const lines: RequestLogLine[] = [];
  const h = relayOver([t], { onRequestLog: (l) => lines.push(l) });
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  const c = await RawClient.open(srv.addr.port);
  await c.send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n");
  await eventually(() => sent === 1);
  return { t, lines, srv, c };
}

Deno.test("review: a client that leaves while a big whole body is being written: released once, logged as cancelled", async () => {
  const { t, lines, srv, c } = await bigWholeBodyStuck();
  try {
    await sleep(100);
    // Not written yet (the client reads nothing): not settled yet.
    assert.equal(t.outcomes.length, 0);
    assert.equal(lines.length, 0);
    c.close();
    await t.released(1, 3000);
    await eventually(() => lines.length === 1, 3000);
    assert.equal(t.outcomes[0].clientCancelled, true);
    assert.equal(lines[0].clientCancelled, true);
    assert.equal(lines[0].status, 200);
    assert.equal(t.doubleReleases, 0);
  } finally {
    c.close();
    await srv.closeAll();
  }
});

Deno.test("review: closeAll (end of a drain) while a whole body is stuck in the write still settles it", async () => {
  const { t, lines, srv, c } = await bigWholeBodyStuck();
  try {
    await sleep(50);
    await srv.closeAll();
    await t.released(1, 3000);
    await eventually(() => lines.length === 1, 3000);
    assert.equal(lines[0].clientCancelled, true);
    assert.equal(t.outcomes[0].clientCancelled, true);
  } finally {
    c.close();
    await srv.closeAll();
  }
});

Deno.test("review: log sinks that throw or close the server from inside the settle break nothing", async () => {
  const t = new FakeTarget(1);
  t.sender = () => Promise.resolve(whole("{}"));
  let n = 0;
  const unhandled: unknown[] = [];
  const onUnhandled = (e: PromiseRejectionEvent) => {
    unhandled.push(e.reason);
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  // deno-lint-ignore prefer-const
  let srv: ReturnType<typeof serveHttp1>;
  const h = relayOver([t], {
    onRequestLog: () => {
      n++;
      if (n === 1) throw new Error("log sink down");
      if (n === 2) void srv.closeAll();
    },
  });
  srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  const c = await RawClient.open(srv.addr.port);
  try {
    await c.send(
      "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    await c.untilClosed(3000);
    // The first answer survived its throwing sink, the second closed everything.
    assert.ok(countResponses(c.received) >= 2, c.received);
    await srv.finished;
    await sleep(20);
    assert.deepEqual(unhandled, []);
    assert.equal(t.doubleReleases, 0);
    assert.equal(t.outcomes.length, t.acquires);
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    c.close();
    await srv.closeAll();
  }
});

Deno.test("review: retries still skip the backends that failed, pinned or not", async () => {
  for (const pin of [0, 1, 2, 3]) {
    const tried: number[] = [];
    const targets = [1, 2, 3].map((id) => {
      const t = new FakeTarget(id);
      t.sender = () => {
        tried.push(id);
        return Promise.reject(new Http1Error("no channel", { sent: false }));
      };
      return t;
    });
    const lines: RequestLogLine[] = [];
    const h = relayOver(targets, { onRequestLog: (l) => lines.push(l), maxRetries: 2 });
    const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
    const cl = await RawClient.open(srv.addr.port);
    try {
      const pinHeader = pin ? `x-vastproxy-instance: ${pin}\r\n` : "";
      // Twice on one connection: the second request must not inherit the first's `tried`.
      for (let i = 0; i < 2; i++) {
        tried.length = 0;
        cl.received = "";
        await cl.send(`GET /x HTTP/1.1\r\nHost: h\r\n${pinHeader}\r\n`);
        await cl.until((s) => countResponses(s) === 1 && s.includes("}"));
        assert.ok(cl.received.startsWith("HTTP/1.1 502"), `${pin}: ${cl.received}`);
        // Three attempts, three distinct backends, the pinned one first.
        assert.equal(tried.length, 3, `pin=${pin}: ${tried}`);
        assert.equal(new Set(tried).size, 3, `pin=${pin}: ${tried}`);
        if (pin) assert.equal(tried[0], pin);
      }
      await eventually(() => lines.length === 2);
      assert.deepEqual(lines.map((l) => l.attempts), [3, 3]);
      for (const t of targets) assert.equal(t.doubleReleases, 0);
    } finally {
      cl.close();
      await srv.closeAll();
    }
  }
});

Deno.test("review: only a whole-body answer waits for delivery (HEAD, 204, 304, streams and errors do not ask)", async () => {
  const cases: { method: string; answer: () => Http1Response; asks: boolean }[] = [
    { method: "GET", answer: () => whole("{}"), asks: true },
    { method: "HEAD", answer: () => whole("{}"), asks: false },
    { method: "GET", answer: () => ({ ...whole(""), status: 204, body: null }), asks: false },
    { method: "GET", answer: () => ({ ...whole(""), status: 304, body: null }), asks: false },
    {
      method: "GET",
      answer: () => ({
        status: 200,
        statusText: "",
        headers: [["content-type", "text/event-stream"]],
        body: new ReadableStream<Uint8Array>({
          start(ctrl) {
            ctrl.enqueue(enc.encode("data: x\n\n"));
            ctrl.close();
          },
        }),
      }),
      asks: false,
    },
  ];
  for (const k of cases) {
    const t = new FakeTarget(1);
    t.sender = () => Promise.resolve(k.answer());
    const h = relayOver([t]);
    let asked = 0;
    let listener: ((ok: boolean) => void) | null = null;
    const info = {
      remoteAddr: { transport: "tcp" as const, hostname: "127.0.0.1", port: 1 },
      get completed(): Promise<void> {
        throw new Error("completed read although onCompleted exists");
      },
      onCompleted(fn: (ok: boolean) => void) {
        asked++;
        listener = fn;
      },
    };
    const res = await h(new Request("http://p/x", { method: k.method }), info);
    await res.body?.cancel();
    const label = `${k.method} ${res.status}`;
    assert.equal(asked, k.asks ? 1 : 0, label);
    if (k.asks) {
      assert.equal(t.outcomes.length, 0, `${label}: settled before delivery`);
      (listener as unknown as (ok: boolean) => void)(false);
      assert.equal(t.outcomes.length, 1, label);
      assert.equal(t.outcomes[0].clientCancelled, true, label);
    } else {
      await t.released(1);
    }
  }
});

Deno.test("review: an upgrade request the engine refuses with a whole body settles after delivery, once", async () => {
  const t = new FakeTarget(1);
  let asked = 0;
  // An engine that answers the WebSocket handshake with a plain 426 and its body.
  (t as unknown as { upgrade: () => Promise<Http1Response> }).upgrade = () => {
    asked++;
    return Promise.resolve(whole('{"error":"no websocket here"}', 426));
  };
  const lines: RequestLogLine[] = [];
  const h = relayOver([t], { onRequestLog: (l) => lines.push(l) });
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  const c = await RawClient.open(srv.addr.port);
  try {
    await c.send(
      "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n" +
        "GET /after HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    await c.until((s) => s.includes("no websocket here"));
    assert.ok(c.received.startsWith("HTTP/1.1 426"), c.received);
    await eventually(() => lines.length >= 1);
    assert.equal(asked, 1);
    assert.equal(lines[0].status, 426);
    assert.equal(lines[0].clientCancelled, false);
    assert.equal(t.doubleReleases, 0);
    assert.equal(t.outcomes[0].status, 426);
  } finally {
    c.close();
    await srv.closeAll();
  }
});
