/**
 * WebSocket pass-through (issue #13): the Realtime API (`/v1/realtime`, as
 * vLLM serves it) through the proxy's own listener and the production
 * HTTP/1.1 client to fake engines: the handshake carries the instance token,
 * frames flow both ways byte for byte, a pin routes it, it counts as a
 * request in flight while open, and a client that leaves closes the engine's
 * side within a second. Also HEAD answers keeping the engine's framing.
 */
import assert from "node:assert/strict";
import { startLocalProxy, until } from "../faults/_local_proxy.ts";
import { startRawEngine } from "../_helpers/raw_engine.ts";
import { createHandler } from "../../lib/proxy/relay.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";
import { startE2eFleet } from "../_helpers/e2e_fleet.ts";
import { sshdAvailable } from "../_helpers/sshd.ts";

/** The relay handler over one target whose engine is at `url`. */
function relayTo(url: string) {
  const target = new FakeTarget(1, { baseUrl: url });
  const handler = createHandler({
    pool: new FakePool([target]),
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1024,
    onRequestLog: () => {},
  });
  return { target, handler };
}

/** The next message on `ws`. */
function next(ws: WebSocket): Promise<MessageEvent> {
  return new Promise((resolve, reject) => {
    ws.addEventListener("message", resolve, { once: true });
    ws.addEventListener("close", () => reject(new Error("closed")), { once: true });
  });
}

Deno.test("WebSocket /v1/realtime passes through: token, frames both ways, in-flight, close within 1 s", async () => {
  const lines: { status: number; instance: number | null; path: string }[] = [];
  const p = await startLocalProxy({ instances: 1, onRequestLog: (l) => lines.push(l) });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const [engine] = p.engines;
    const wsUrl = `${p.proxy.url.replace("http://", "ws://")}/v1/realtime?model=m`;
    const ws = new WebSocket(wsUrl);
    ws.binaryType = "arraybuffer";
    const hello = await next(ws);
    assert.deepEqual(JSON.parse(hello.data), { type: "session.created", model: "m" });
    // The engine saw the instance's token on the handshake, not the client's nothing.
    assert.equal(engine.stats.authHeaders.at(-1), `Bearer ${p.tokens[0]}`);
    ws.send("héllo ✓");
    assert.deepEqual(JSON.parse((await next(ws)).data), {
      type: "echo",
      model: "m",
      data: "héllo ✓",
    });
    const bin = new Uint8Array(70_000).map((_, i) => i * 7);
    ws.send(bin);
    assert.deepEqual(new Uint8Array((await next(ws)).data), bin);
    // Counted like any request while it is open.
    const backend = () => p.proxy.status().backends[0];
    assert.equal(backend().inFlight, 1);
    assert.equal(engine.stats.websocketsOpen, 1);
    const closedAt = Date.now();
    ws.close();
    await until("engine side closed", () => engine.stats.websocketsOpen === 0, 1000);
    assert.ok(Date.now() - closedAt <= 1000);
    await until("in-flight released", () => backend().inFlight === 0);
    assert.equal(backend().requests, 1);
    await until("one log line", () => lines.some((l) => l.path === "/v1/realtime"));
    const wsLines = lines.filter((l) => l.path === "/v1/realtime");
    assert.deepEqual(wsLines.map((l) => [l.status, l.instance]), [[101, p.ids[0]]]);
  } finally {
    await p.close();
  }
});

Deno.test("WebSocket handshake honours X-VastProxy-Instance and returns it on the 101", async () => {
  const p = await startLocalProxy({ instances: 3 });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 3);
    const pinned = p.ids[2];
    const port = Number(new URL(p.proxy.url).port);
    for (let i = 0; i < 3; i++) {
      const head = await handshake(port, `X-VastProxy-Instance: ${pinned}\r\n`);
      assert.match(head, /^HTTP\/1\.1 101 /);
      assert.match(head, /\r\nupgrade: websocket\r\n/i);
      assert.match(head, /\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n/i);
      assert.match(head, new RegExp(`\\r\\nx-vastproxy-instance: ${pinned}\\r\\n`));
    }
    await until("closes seen", () => p.engines[2].stats.websocketsOpen === 0);
    assert.deepEqual(p.engines.map((e) => e.stats.websocketsOpened), [0, 0, 3]);
  } finally {
    await p.close();
  }
});

Deno.test("an engine that refuses the upgrade answers as a plain response; nothing is left open", async () => {
  const engine = startRawEngine(() =>
    "HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
  );
  const { target, handler: h } = relayTo(engine.url);
  try {
    const res = await h(
      new Request("http://localhost/v1/realtime", {
        headers: { connection: "upgrade", upgrade: "websocket" },
      }),
    );
    assert.equal(res.status, 426);
    assert.equal(await res.text(), "nope");
    await target.released();
    assert.equal(target.outcomes[0].status, 426);
    // The engine was asked to switch, on this hop.
    assert.match(engine.requests[0].head, /\r\nupgrade: websocket\r\n/i);
    assert.match(engine.requests[0].head, /\r\nconnection: upgrade\r\n/i);
  } finally {
    target.close();
    await engine.close();
  }
});

Deno.test("HEAD answers keep the engine's framing headers through the proxy's listener", async () => {
  const engine = startRawEngine((r) =>
    r.target === "/chunked"
      ? "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n"
      : "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\nx-a: 1\r\n\r\n"
  );
  const { target, handler } = relayTo(engine.url);
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, handler);
  try {
    for (
      const [path, framing] of [["/chunked", "transfer-encoding: chunked"], [
        "/length",
        "content-length: 1234",
      ]]
    ) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      await conn.write(
        new TextEncoder().encode(`HEAD ${path} HTTP/1.1\r\nhost: localhost\r\n\r\n`),
      );
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf);
      conn.close();
      const head = new TextDecoder().decode(buf.subarray(0, n!)).toLowerCase();
      assert.ok(head.includes(`\r\n${framing}\r\n`), head);
      const other = framing.startsWith("content") ? "transfer-encoding" : "content-length";
      assert.ok(!head.includes(other), `no invented ${other}: ${head}`);
    }
  } finally {
    await server.shutdown();
    target.close();
    await engine.close();
  }
});

Deno.test({
  name: "WebSocket through a real sshd: the same tunnel, frames both ways",
  ignore: !sshdAvailable(),
  async fn() {
    const fleet = await startE2eFleet({ models: ["m", "m"] });
    try {
      await fleet.waitHealthy(2);
      const ws = new WebSocket(`${fleet.proxy.url.replace("http://", "ws://")}/v1/realtime`);
      assert.equal(JSON.parse((await next(ws)).data).type, "session.created");
      ws.send("over ssh");
      assert.equal(JSON.parse((await next(ws)).data).data, "over ssh");
      const open = fleet.engines.findIndex((e) => e.stats.websocketsOpen === 1);
      assert.notEqual(open, -1, "one engine holds the session");
      assert.equal(fleet.engines[open].stats.authHeaders.at(-1), `Bearer ${fleet.tokens[open]}`);
      ws.close();
      await until("engine side closed", () => fleet.engines[open].stats.websocketsOpen === 0, 1000);
    } finally {
      await fleet.close();
    }
  },
});

/** A raw WebSocket handshake to `port`; resolves with the response head. */
async function handshake(port: number, extra: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode(
        "GET /v1/realtime HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n" +
          "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n" +
          `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`,
      ),
    );
    const buf = new Uint8Array(4096);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      head += new TextDecoder().decode(buf.subarray(0, n));
    }
    return head;
  } finally {
    conn.close();
  }
}

Deno.test("WebSocket from a browser page: an allowed origin switches, a foreign one is refused", async () => {
  const p = await startLocalProxy({
    instances: 1,
    config: { corsOrigins: ["http://localhost:3000"] },
  });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const port = Number(new URL(p.proxy.url).port);
    const ok = await handshake(port, "Origin: http://localhost:3000\r\n");
    assert.match(ok, /^HTTP\/1\.1 101 /);
    // Cross-site WebSocket hijacking: a page elsewhere never reaches the engine.
    const before = p.engines[0].stats.websocketsOpened;
    const evil = await handshake(port, "Origin: http://evil.example\r\n");
    assert.match(evil, /^HTTP\/1\.1 403 /);
    await until("closes seen", () => p.engines[0].stats.websocketsOpen === 0);
    assert.equal(p.engines[0].stats.websocketsOpened, before);
  } finally {
    await p.close();
  }
});
