/**
 * Bad input against the real listener (`startProxy` → `Deno.serve`): each case
 * gets a clear 4xx or a clean pass-through, the proxy never crashes, leaks no
 * in-flight count, and keeps serving everyone else.
 */
import assert from "node:assert/strict";
import { sha256Hex } from "../_helpers/sshd.ts";
import { type LocalProxy, rawExchange, startLocalProxy, until } from "./_local_proxy.ts";

const MAX_BODY = 64 * 1024;

/** Runs `fn` against a local proxy with two real engines, then checks nothing leaked. */
async function withProxy(fn: (p: LocalProxy, port: number) => Promise<void>): Promise<void> {
  const p = await startLocalProxy({ instances: 2, maxBodyBytes: MAX_BODY });
  try {
    await until("2 healthy", () => p.proxy.status().counts.healthy === 2);
    const port = Number(new URL(p.proxy.url).port);
    await fn(p, port);
    // The proxy still serves, and no request is stuck in flight.
    const res = await fetch(`${p.proxy.url}/v1/models`);
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await until("in-flight back to 0", () => p.proxy.status().counts.inFlight === 0);
    assert.ok(
      !p.logger.records.some((r) => r.msg === "request handler failed"),
      "a handler threw",
    );
  } finally {
    await p.close();
  }
}

async function echo(
  p: LocalProxy,
  init: RequestInit & { headers?: Record<string, string> },
  path = "/echo",
) {
  const res = await fetch(`${p.proxy.url}${path}`, { method: "POST", ...init });
  assert.equal(res.status, 200);
  return await res.json() as {
    method: string;
    path: string;
    query: string;
    body: string;
    bodyLength: number;
    bodySha256: string;
    headers: Record<string, string>;
  };
}

Deno.test("bad input: malformed JSON with Content-Type application/json passes through unchanged", async () => {
  await withProxy(async (p) => {
    for (const body of ['{"model": "m", "messages": [', "not json at all", "{}}", "\u0000\u0001"]) {
      const seen = await echo(p, { headers: { "content-type": "application/json" }, body });
      assert.equal(seen.body, body);
      assert.equal(seen.headers["content-type"], "application/json");
    }
    // A chat completion with a broken body reaches the engine too (its error, not ours).
    const res = await fetch(`${p.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"model":',
    });
    assert.ok(res.headers.get("x-vastproxy-instance"), "answered by an instance");
    await res.body?.cancel();
  });
});

Deno.test("bad input: a body over --max-body gets 413 (declared or chunked) and never reaches an engine", async () => {
  await withProxy(async (p) => {
    const before = p.engines.map((e) => e.stats.requests);
    const big = new Uint8Array(MAX_BODY + 1);
    const declared = await fetch(`${p.proxy.url}/v1/chat/completions`, {
      method: "POST",
      body: big,
    });
    assert.equal(declared.status, 413);
    assert.equal((await declared.json()).error.code, "request_too_large");

    // Chunked: no Content-Length, so the proxy has to count.
    const chunked = await fetch(`${p.proxy.url}/v1/chat/completions`, {
      method: "POST",
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < 8; i++) c.enqueue(new Uint8Array(MAX_BODY / 4));
          c.close();
        },
      }),
    });
    assert.equal(chunked.status, 413);
    assert.equal((await chunked.json()).error.type, "invalid_request_error");

    // A body exactly at the limit passes.
    const exact = await echo(p, { body: new Uint8Array(MAX_BODY) });
    assert.equal(exact.bodyLength, MAX_BODY);
    assert.deepEqual(
      p.engines.map((e, i) => e.stats.requests - before[i]).reduce((a, b) => a + b),
      1,
      "only the body at the limit reached an engine",
    );
  });
});

Deno.test("bad input: absurd header sizes get a 4xx; 100 headers pass through whole", async () => {
  await withProxy(async (p, port) => {
    const before = p.engines.map((e) => e.stats.requests);
    // One 1 MiB header value over raw TCP: Deno.serve (hyper) caps the header
    // section and answers with a client error before the relay runs.
    const huge = "x".repeat(1024 * 1024);
    const text = await rawExchange(
      port,
      `GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${huge}\r\nConnection: close\r\n\r\n`,
      { timeoutMs: 3_000 },
    );
    assert.match(text, /^HTTP\/1\.1 (400|431) /, `answer: ${JSON.stringify(text.slice(0, 80))}`);

    // 1000 headers: refused the same way, as an answer (not a dropped connection).
    const headers = (n: number) =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h-${i}`, "v".repeat(50)]));
    const many = await fetch(`${p.proxy.url}/echo`, {
      method: "POST",
      headers: headers(1000),
      body: "ok",
    });
    await many.body?.cancel();
    assert.ok([400, 431].includes(many.status), `1000 headers: ${many.status}`);
    // Neither refused request reached an engine.
    assert.deepEqual(p.engines.map((e, i) => e.stats.requests - before[i]), [0, 0]);

    // 100 headers (within the limit) all reach the engine, values intact.
    const seenMany = await echo(p, { headers: headers(100), body: "ok" });
    for (let i = 0; i < 100; i++) assert.equal(seenMany.headers[`x-h-${i}`], "v".repeat(50));

    // A 16 KiB Authorization header (no token configured: passes; the engine
    // must still see the instance's own token, not the client's).
    const seen = await echo(p, {
      headers: { authorization: `Bearer ${"k".repeat(16 * 1024)}` },
      body: "x",
    });
    assert.ok(p.tokens.some((t) => seen.headers.authorization === `Bearer ${t}`));
  });
});

Deno.test("bad input: a slow-loris client does not stop the proxy serving others", async () => {
  await withProxy(async (p, port) => {
    const loris = await Deno.connect({ hostname: "127.0.0.1", port });
    const enc = new TextEncoder();
    const head = "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n";
    let sent = 0;
    const drip = (async () => {
      try {
        for (const ch of head) {
          await loris.write(enc.encode(ch));
          sent++;
          await new Promise((r) => setTimeout(r, 15));
        }
      } catch { /* closed below */ }
    })();
    try {
      // While it drips, 20 normal requests are served promptly.
      for (let i = 0; i < 20; i++) {
        const started = Date.now();
        const res = await fetch(`${p.proxy.url}/health`);
        await res.body?.cancel();
        assert.equal(res.status, 200);
        assert.ok(Date.now() - started < 1_000, "a request waited behind the slow client");
      }
      assert.ok(sent > 0 && sent < head.length, `still dripping (${sent} bytes)`);
    } finally {
      loris.close();
      await drip;
    }
  });
});

Deno.test("bad input: a client that disconnects mid-request-body costs nothing upstream", async () => {
  await withProxy(async (p, port) => {
    const before = p.engines.map((e) => e.stats.requests);
    for (let i = 0; i < 5; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(
        new TextEncoder().encode(
          "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
            "Content-Length: 10000\r\n\r\n" + '{"model":"m","messages":[',
        ),
      );
      await new Promise((r) => setTimeout(r, 20));
      conn.close();
    }
    await until("in-flight 0", () => p.proxy.status().counts.inFlight === 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(p.engines.map((e, i) => e.stats.requests - before[i]), [0, 0]);
    assert.equal(p.proxy.status().counts.errors, 0, "a client's disconnect is no backend error");
  });
});

Deno.test("bad input: unknown X-VastProxy-Instance values fall back to the policy", async () => {
  await withProxy(async (p) => {
    const values = [
      "abc",
      "-1",
      "0",
      "1e3",
      "99999999999999999999999999",
      String(Number.MAX_SAFE_INTEGER),
      "4200001abc",
      " ",
      "4200001, 4200002",
      "\u00e9",
    ];
    for (const v of values) {
      const res = await fetch(`${p.proxy.url}/health`, { headers: { "x-vastproxy-instance": v } });
      await res.body?.cancel();
      assert.equal(res.status, 200, `pin ${JSON.stringify(v)}`);
      assert.ok(p.ids.includes(Number(res.headers.get("x-vastproxy-instance"))));
    }
    // The pin never goes upstream.
    const seen = await echo(p, { headers: { "x-vastproxy-instance": String(p.ids[1]) } });
    assert.equal(seen.headers["x-vastproxy-instance"], undefined);
  });
});

Deno.test("bad input: dot-segment paths resolve once, the same for routing and upstream", async () => {
  await withProxy(async (_p, port) => {
    const get = (path: string) =>
      rawExchange(port, `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    // Leaves /vastproxy/ → the proxy's own /v1/models list.
    for (const path of ["/vastproxy/../v1/models", "/vastproxy/%2e%2e/v1/models"]) {
      const text = await get(path);
      assert.match(text, /^HTTP\/1\.1 200/, path);
      assert.match(text, /"object":"list"/, path);
    }
    // Into /vastproxy/ from outside → admin, which knows /vastproxy/status.
    const admin = await get("/v1/../vastproxy/status");
    assert.match(admin, /^HTTP\/1\.1 200/);
    assert.match(admin, /"policy":"least-inflight"/);
    // Encoded slashes are not separators: an unknown admin path, 404.
    assert.match(await get("/vastproxy/..%2fv1%2fmodels"), /^HTTP\/1\.1 404/);
    // Climbing above the root stays at the root; upstream sees the resolved path.
    const up = await get("/../../echo?x=1");
    assert.match(up, /^HTTP\/1\.1 200/);
    assert.match(up, /"path":"\/echo"/);
  });
});

Deno.test("bad input: an HTTP/1.0 client gets complete answers, streamed ones too", async () => {
  await withProxy(async (p, port) => {
    const models = await rawExchange(port, "GET /v1/models HTTP/1.0\r\n\r\n");
    assert.match(models, /^HTTP\/1\.[01] 200/);
    assert.match(models, /"object":"list"/);
    const body = '{"hello":"1.0"}';
    const posted = await rawExchange(
      port,
      `POST /echo HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    assert.match(posted, /^HTTP\/1\.[01] 200/);
    assert.ok(posted.includes(JSON.stringify(body)), posted);
    // A streamed body without chunked encoding: delimited by the close.
    const sse = await rawExchange(port, "GET /sse?n=5&interval=5 HTTP/1.0\r\n\r\n");
    assert.match(sse, /^HTTP\/1\.[01] 200/);
    assert.ok(sse.includes("data: [DONE]"), sse);
    assert.ok(!/transfer-encoding: chunked/i.test(sse), "no chunked encoding to a 1.0 client");
    await until("in-flight 0", () => p.proxy.status().counts.inFlight === 0);
  });
});

Deno.test("bad input: Expect: 100-continue gets a 100 and the body goes through", async () => {
  await withProxy(async (_p, port) => {
    const body = '{"model":"m","messages":[]}';
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const enc = new TextEncoder();
      await conn.write(enc.encode(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
          `Content-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
      ));
      const buf = new Uint8Array(64 * 1024);
      const first = await readWithin(conn, buf, 2_000);
      assert.match(first, /^HTTP\/1\.1 100 Continue/);
      await conn.write(enc.encode(body));
      let text = first.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, "");
      const deadline = Date.now() + 3_000;
      while (!text.includes("bodySha256") && Date.now() < deadline) {
        const more = await readWithin(conn, buf, 3_000);
        if (more === "") break;
        text += more;
      }
      assert.match(text, /^HTTP\/1\.1 200/, text);
      assert.ok(text.includes(JSON.stringify(body)));
    } finally {
      conn.close();
    }
  });
});

Deno.test("bad input: binary bodies round-trip byte for byte (SHA-256 at the engine)", async () => {
  await withProxy(async (p) => {
    for (const size of [1, 255, 4096, 60_000]) {
      const bytes = new Uint8Array(size);
      crypto.getRandomValues(bytes);
      // Invalid UTF-8 on purpose, and every byte value.
      bytes[0] = 0xff;
      if (size > 256) { for (let i = 0; i < 256; i++) bytes[i + 1] = i; }
      const seen = await echo(p, {
        headers: { "content-type": "application/octet-stream" },
        body: bytes,
      });
      assert.equal(seen.bodyLength, size);
      assert.equal(seen.bodySha256, await sha256Hex(bytes));
    }
    // And downstream: a large binary body from the engine arrives complete.
    const res = await fetch(`${p.proxy.url}/bytes?n=300000`);
    assert.equal(res.status, 200);
    assert.equal((await res.arrayBuffer()).byteLength, 300_000);
  });
});

async function readWithin(conn: Deno.Conn, buf: Uint8Array, ms: number): Promise<string> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((r) => (timer = setTimeout(() => r(null), ms)));
  try {
    const n = await Promise.race([conn.read(buf).catch(() => null), timeout]);
    return n === null ? "" : new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    clearTimeout(timer);
  }
}
