import assert from "node:assert/strict";
import { type HeaderPairs, Http1Error, type Http1Response } from "../../lib/http1/types.ts";
import { serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import type { LlmSample } from "../../lib/proxy/llm_stats.ts";
import { RawClient } from "../_helpers/raw_http.ts";
import OpenAI from "openai";
import { abortAll, AbortAllError } from "../../lib/app/abort_all.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { createHandler, type RelayDeps, type RequestLogLine } from "../../lib/proxy/relay.ts";
import { type FakeEngine, startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { closedPortUrl, eventually, FakePool, FakeTarget } from "../_helpers/fake_pool.ts";

const P = "http://proxy.test";
const TOKEN_A = "a".repeat(64);

/** Starts engines, builds targets on them, and closes everything afterwards. */
async function withFleet(
  specs: { model?: string; dead?: boolean; tokenDelayMs?: number }[],
  fn: (ctx: { pool: FakePool; engines: (FakeEngine | null)[]; t: FakeTarget[] }) => Promise<void>,
): Promise<void> {
  const engines: (FakeEngine | null)[] = [];
  try {
    for (const s of specs) {
      engines.push(
        s.dead ? null : await startFakeEngine({
          model: s.model ?? "fake-model",
          token: TOKEN_A,
          tokenDelayMs: s.tokenDelayMs ?? 0,
        }),
      );
    }
    const t = specs.map((s, i) =>
      new FakeTarget(i + 1, {
        models: [s.model ?? "fake-model"],
        baseUrl: engines[i]?.url ?? closedPortUrl(),
        auth: `Bearer ${TOKEN_A}`,
      })
    );
    await fn({ pool: new FakePool(t), engines, t });
    for (const target of t) {
      assert.equal(target.doubleReleases, 0, `target ${target.id} released twice`);
    }
  } finally {
    for (const e of engines) await e?.close();
  }
}

function handler(pool: FakePool, over: Partial<RelayDeps> = {}) {
  const lines: RequestLogLine[] = [];
  const h = createHandler({
    pool,
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1024,
    onRequestLog: (l) => lines.push(l),
    ...over,
  });
  return { h, lines };
}

async function errorBody(res: Response): Promise<{ message: string; type: string; code: string }> {
  assert.equal(res.headers.get("content-type"), "application/json");
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.equal(typeof body.error.message, "string");
  return body.error;
}

Deno.test("relay forwards method, path, query and body with the instance token", async () => {
  await withFleet([{}], async ({ pool, engines, t }) => {
    const { h, lines } = handler(pool);
    const res = await h(
      new Request(`${P}/echo?x=1&y=%20`, {
        method: "POST",
        headers: { authorization: "Bearer client", "x-vastproxy-instance": "1", "x-keep": "k" },
        body: "payload",
      }),
    );
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("x-vastproxy-instance"), "1");
    const echo = await res.json();
    assert.equal(echo.method, "POST");
    assert.equal(echo.query, "?x=1&y=%20");
    assert.equal(echo.body, "payload");
    assert.equal(echo.headers.authorization, `Bearer ${TOKEN_A}`);
    assert.equal(echo.headers["x-keep"], "k");
    assert.equal(echo.headers["x-vastproxy-instance"], undefined);
    assert.deepEqual(engines[0]!.stats.authHeaders, [`Bearer ${TOKEN_A}`]);
    await t[0].released();
    assert.deepEqual(
      { ...t[0].outcomes[0], latencyMs: 0 },
      { status: 200, latencyMs: 0, transportError: false, clientCancelled: false },
    );
    assert.equal(lines.length, 1);
    assert.equal(lines[0].instance, 1);
    assert.equal(lines[0].path, "/echo");
    assert.ok(lines[0].bytes > 0);
  });
});

Deno.test("relay streams SSE chunk by chunk without buffering", async () => {
  await withFleet([{}], async ({ pool, t }) => {
    const { h } = handler(pool);
    const res = await h(new Request(`${P}/sse?n=4&interval=150`));
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let events = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      for (const e of value.split("\n\n").filter((s) => s.startsWith("data: {"))) {
        // Each event reaches the client long before the engine sends the next.
        const lag = Date.now() - JSON.parse(e.slice(6)).t;
        assert.ok(lag < 100, `event arrived ${lag} ms after it was sent`);
        events++;
      }
    }
    assert.equal(events, 4);
    await t[0].released();
  });
});

Deno.test("relay retries a transport failure on another backend with the same body", async () => {
  await withFleet([{ dead: true }, {}], async ({ pool, engines, t }) => {
    const { h, lines } = handler(pool);
    const res = await h(new Request(`${P}/echo`, { method: "POST", body: "same body" }));
    assert.equal(res.headers.get("x-vastproxy-instance"), "2");
    assert.equal((await res.json()).body, "same body");
    assert.equal(engines[1]!.stats.requests, 1);
    assert.equal(t[0].outcomes[0].transportError, true);
    assert.equal(t[0].outcomes[0].status, null);
    await t[1].released();
    assert.equal(t[1].outcomes[0].transportError, false);
    assert.equal(lines.at(-1)!.attempts, 2);
  });
});

Deno.test("relay answers 502 after two retries and never tries more", async () => {
  await withFleet(
    [{ dead: true }, { dead: true }, { dead: true }, { dead: true }],
    async ({ pool, t }) => {
      const { h } = handler(pool);
      const res = await h(new Request(`${P}/v1/chat/completions`, { method: "POST", body: "{}" }));
      assert.equal(res.status, 502);
      const err = await errorBody(res);
      assert.equal(err.code, "upstream_failed");
      assert.equal(err.type, "server_error");
      assert.doesNotMatch(err.message, /127\.0\.0\.1/);
      assert.deepEqual(t.map((x) => x.acquires), [1, 1, 1, 0]);
    },
  );
});

Deno.test("relay never retries after response headers", async () => {
  await withFleet([{}, {}], async ({ pool, engines, t }) => {
    // Backend 1 sends headers and a first chunk, then its connection breaks.
    t[0].sender = () => {
      let sent = false;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (!sent) {
            sent = true;
            c.enqueue(new TextEncoder().encode("data: 1\n\n"));
          } else c.error(new Http1Error("engine closed the connection mid-body", { sent: true }));
        },
      });
      return Promise.resolve({
        status: 200,
        statusText: "OK",
        headers: [["content-type", "text/event-stream"]],
        body,
      });
    };
    const { h } = handler(pool);
    const res = await h(new Request(`${P}/sse`));
    assert.equal(res.status, 200);
    await assert.rejects(() => res.text());
    assert.equal(engines[1]!.stats.requests, 0);
    await t[0].released();
    assert.deepEqual({ ...t[0].outcomes[0], latencyMs: 0 }, {
      status: 200,
      latencyMs: 0,
      transportError: true,
      clientCancelled: false,
    });
  });
});

Deno.test("relay passes an engine's 5xx through without retrying", async () => {
  await withFleet([{}, {}], async ({ pool, engines }) => {
    engines[0]!.setStatus(500);
    const { h } = handler(pool);
    const res = await h(new Request(`${P}/v1/completions`, { method: "POST", body: "{}" }));
    assert.equal(res.status, 500);
    assert.equal((await res.json()).error.message, "fake engine forced status 500");
    assert.equal(engines[1]!.stats.requests, 0);
  });
});

Deno.test("relay answers 503 no_healthy_backend when nothing is routable", async () => {
  const pool = new FakePool([new FakeTarget(1, { routable: false })]);
  const { h } = handler(pool);
  const res = await h(new Request(`${P}/v1/chat/completions`, { method: "POST", body: "{}" }));
  assert.equal(res.status, 503);
  assert.deepEqual(await errorBody(res), {
    message: "No healthy backend is available: check `vastproxy status`",
    type: "server_error",
    code: "no_healthy_backend",
  });
  const models = await h(new Request(`${P}/v1/models`));
  assert.equal(models.status, 503);
  await models.body?.cancel();
});

Deno.test("relay routes by model and answers 404 model_not_found", async () => {
  await withFleet([{ model: "llama" }, { model: "qwen" }], async ({ pool, engines }) => {
    const { h } = handler(pool);
    const ask = (model: string) =>
      h(
        new Request(`${P}/v1/chat/completions`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ model, messages: [] }),
        }),
      );
    for (let i = 0; i < 3; i++) {
      const res = await ask("qwen");
      assert.equal(res.headers.get("x-vastproxy-instance"), "2");
      await res.body?.cancel();
    }
    const missing = await ask("gpt-4");
    assert.equal(missing.status, 404);
    assert.equal((await errorBody(missing)).code, "model_not_found");
    assert.equal(engines[0]!.stats.requests, 0);
  });
});

Deno.test("relay passes an unknown model through when the fleet serves one model", async () => {
  await withFleet([{ model: "llama" }], async ({ pool }) => {
    const { h } = handler(pool);
    const res = await h(
      new Request(`${P}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "gpt-4", prompt: "x" }),
      }),
    );
    // The request reached the engine (vLLM flavour answers its own 404 for the name).
    assert.equal(res.headers.get("x-vastproxy-instance"), "1");
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.type, "NotFoundError");
  });
});

Deno.test("relay honours X-VastProxy-Instance and falls back when the pin is not routable", async () => {
  await withFleet([{}, {}, {}], async ({ pool, t }) => {
    const { h } = handler(pool);
    const pinned = async (pin: string) => {
      const res = await h(new Request(`${P}/echo`, { headers: { "x-vastproxy-instance": pin } }));
      await res.body?.cancel();
      return res.headers.get("x-vastproxy-instance");
    };
    assert.deepEqual([await pinned("3"), await pinned("3")], ["3", "3"]);
    t[2].routable = false;
    assert.notEqual(await pinned("3"), "3");
    assert.ok(["1", "2"].includes((await pinned("garbage"))!));
  });
});

Deno.test("relay refuses bodies over maxBodyBytes with 413, by length and when chunked", async () => {
  await withFleet([{}], async ({ pool, engines }) => {
    const { h } = handler(pool, { maxBodyBytes: 10 });
    const declared = await h(new Request(`${P}/echo`, { method: "POST", body: "x".repeat(11) }));
    assert.equal(declared.status, 413);
    assert.equal((await errorBody(declared)).code, "request_too_large");
    const chunks = ["12345", "67890", "1"];
    const chunked = await h(
      new Request(`${P}/echo`, {
        method: "POST",
        body: new ReadableStream({
          pull(c) {
            const next = chunks.shift();
            if (next === undefined) c.close();
            else c.enqueue(new TextEncoder().encode(next));
          },
        }),
      }),
    );
    assert.equal(chunked.status, 413);
    assert.equal((await errorBody(chunked)).code, "request_too_large");
    const exact = await h(new Request(`${P}/echo`, { method: "POST", body: "x".repeat(10) }));
    assert.equal((await exact.json()).bodyLength, 10);
    assert.equal(engines[0]!.stats.requests, 1);
  });
});

Deno.test("relay requires the proxy token on every route, /vastproxy/* included", async () => {
  await withFleet([{}], async ({ pool, engines }) => {
    let adminCalls = 0;
    const { h } = handler(pool, {
      authToken: "s3cret",
      admin: () => {
        adminCalls++;
        return Response.json({ ok: true });
      },
    });
    for (const auth of [undefined, "Bearer wrong", "Basic s3cret", "Bearer s3cre"]) {
      for (const path of ["/v1/models", "/echo", "/vastproxy/status"]) {
        const headers: HeadersInit = auth ? { authorization: auth } : {};
        const res = await h(new Request(`${P}${path}`, { headers }));
        assert.equal(res.status, 401, `${path} with ${auth}`);
        assert.equal((await errorBody(res)).code, "invalid_api_key");
      }
    }
    assert.equal(engines[0]!.stats.requests, 0);
    assert.equal(adminCalls, 0);
    const ok = await h(new Request(`${P}/echo`, { headers: { authorization: "Bearer s3cret" } }));
    // The proxy token never reaches the instance.
    assert.equal((await ok.json()).headers.authorization, `Bearer ${TOKEN_A}`);
    const admin = await h(
      new Request(`${P}/vastproxy/status`, { headers: { authorization: "bearer s3cret" } }),
    );
    assert.equal(admin.status, 200);
    await admin.body?.cancel();
  });
});

Deno.test("relay serves GET /v1/models as the deduplicated union", async () => {
  const pool = new FakePool([
    new FakeTarget(2, { models: ["qwen", "llama"] }),
    new FakeTarget(1, { models: ["llama"] }),
    new FakeTarget(3, { models: ["mistral"], routable: false }),
  ]);
  const { h } = handler(pool);
  const body = await (await h(new Request(`${P}/v1/models`))).json();
  assert.equal(body.object, "list");
  assert.deepEqual(
    body.data.map((m: { id: string; object: string; owned_by: string; instances: number[] }) => [
      m.id,
      m.object,
      m.owned_by,
      m.instances,
    ]),
    [["llama", "model", "vastproxy", [1, 2]], ["qwen", "model", "vastproxy", [2]]],
  );
});

Deno.test("relay resolves dot segments before routing /vastproxy/", async () => {
  const pool = new FakePool([new FakeTarget(1, { models: ["m"] })]);
  let adminCalls = 0;
  const { h } = handler(pool, {
    admin: () => {
      adminCalls++;
      return new Response("admin");
    },
  });
  const res = await h(new Request(`${P}/vastproxy/../v1/models`));
  assert.equal((await res.json()).data[0].id, "m");
  const res2 = await h(new Request(`${P}/v1/%2e%2e/vastproxy/status`));
  assert.equal(await res2.text(), "admin");
  assert.equal(adminCalls, 1);
});

Deno.test("relay cancels the upstream when the client cancels the body mid-stream", async () => {
  await withFleet([{}], async ({ pool, engines, t }) => {
    const { h, lines } = handler(pool);
    const res = await h(new Request(`${P}/sse?n=1000&interval=20`));
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    assert.ok(await eventually(() => engines[0]!.stats.closedMidStream === 1, 1000));
    await t[0].released();
    assert.equal(t[0].outcomes[0].clientCancelled, true);
    assert.equal(t[0].outcomes[0].transportError, false);
    assert.equal(lines[0].status, 200);
    assert.equal(lines[0].clientCancelled, true);
    // Settled in one place: one line, however many paths saw the cancel.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(lines.length, 1);
  });
});

Deno.test("relay aborts a pending upstream request when the client's signal aborts", async () => {
  await withFleet([{}, {}], async ({ pool, engines, t }) => {
    const { h, lines } = handler(pool);
    const ac = new AbortController();
    const pending = h(new Request(`${P}/delay?ms=5000`, { signal: ac.signal }));
    await eventually(() => engines[0]!.stats.requests === 1);
    ac.abort();
    const res = await pending;
    await res.body?.cancel();
    assert.equal(t[0].outcomes[0].clientCancelled, true);
    assert.equal(t[0].outcomes[0].transportError, false);
    assert.equal(t[1].acquires, 0, "a cancelled request is not retried");
    assert.deepEqual(lines.map((l) => [l.status, l.clientCancelled]), [[499, true]]);
  });
});

/** Serves the handler on a real socket for end-to-end tests. */
async function withServer(
  h: ReturnType<typeof createHandler>,
  fn: (base: string) => Promise<void>,
): Promise<void> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, h);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

Deno.test("relay over Deno.serve: a client disconnect closes the engine's stream within 1 s", async () => {
  await withFleet([{}], async ({ pool, engines, t }) => {
    const { h } = handler(pool);
    await withServer(h, async (base) => {
      const ac = new AbortController();
      const res = await fetch(`${base}/sse?n=1000&interval=20`, { signal: ac.signal });
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.read().catch(() => {});
      assert.ok(await eventually(() => engines[0]!.stats.closedMidStream === 1, 1000));
      await t[0].released();
      assert.equal(t[0].outcomes[0].clientCancelled, true);
    });
  });
});

Deno.test("relay over Deno.serve: a completed response is not counted as a cancellation", async () => {
  await withFleet([{}], async ({ pool, t }) => {
    const { h } = handler(pool);
    await withServer(h, async (base) => {
      const res = await fetch(`${base}/sse?n=3&interval=1`);
      await res.text();
      await t[0].released();
      // Give Deno.serve time to fire its post-response abort of request.signal.
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(t[0].outcomes.length, 1);
      assert.equal(t[0].outcomes[0].clientCancelled, false);
    });
  });
});

Deno.test("relay works with the openai client: plain and streaming chat completions", async () => {
  await withFleet([{ model: "llama" }, { model: "llama" }], async ({ pool, engines }) => {
    const { h } = handler(pool, { authToken: "proxy-token", maxBodyBytes: 1 << 20 });
    await withServer(h, async (base) => {
      const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "proxy-token", maxRetries: 0 });
      const models = await client.models.list();
      assert.deepEqual(models.data.map((m) => m.id), ["llama"]);
      const plain = await client.chat.completions.create({
        model: "llama",
        messages: [{ role: "user", content: "hello" }],
      });
      assert.equal(plain.choices[0].message.content, " The quick brown fox jumps over the lazy");
      const stream = await client.chat.completions.create({
        model: "llama",
        messages: [{ role: "user", content: "hello" }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let usage = 0;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content ?? "";
        usage = chunk.usage?.completion_tokens ?? usage;
      }
      assert.equal(text, " The quick brown fox jumps over the lazy");
      assert.equal(usage, 8);
      // Round-robin spread the two completions over both engines.
      assert.deepEqual(engines.map((e) => e!.stats.requests), [1, 1]);
      for (const e of engines) assert.deepEqual(e!.stats.authHeaders, [`Bearer ${TOKEN_A}`]);
    });
  });
});

Deno.test("relay routes a sticky header to the same backend by rendezvous hashing", async () => {
  await withFleet([{}, {}, {}], async ({ pool }) => {
    const { h } = handler(pool, { stickyHeader: "X-Session-ID" });
    const landed = async (session: string) => {
      const res = await h(new Request(`${P}/echo`, { headers: { "x-session-id": session } }));
      assert.equal(
        (await res.json()).headers["x-session-id"],
        session,
        "sticky header is forwarded",
      );
      return res.headers.get("x-vastproxy-instance");
    };
    for (const s of ["alice", "bob", "carol"]) {
      const first = await landed(s);
      for (let i = 0; i < 3; i++) assert.equal(await landed(s), first);
    }
  });
});

Deno.test("abortAll() posts abort_all with the instance Bearer to SGLang", async () => {
  const engine = await startFakeEngine({ engine: "sglang", token: TOKEN_A });
  try {
    const target = new FakeTarget(1, {
      engine: "sglang",
      baseUrl: engine.url,
      auth: `Bearer ${TOKEN_A}`,
    });
    assert.deepEqual(await abortAll(target), { status: 200 });
    assert.equal(engine.stats.aborts, 1);
    assert.equal(JSON.parse(engine.stats.lastBody!).abort_all, true);
    assert.deepEqual(engine.stats.authHeaders, [`Bearer ${TOKEN_A}`]);
    await assert.rejects(
      () => abortAll(new FakeTarget(2, { engine: "vllm", baseUrl: engine.url })),
      (e: unknown) => e instanceof AbortAllError && /only SGLang/.test(e.message),
    );
    await assert.rejects(() => abortAll(new FakeTarget(3, { engine: "sglang" })), /tunnel is down/);
    await assert.rejects(
      () => abortAll(new FakeTarget(4, { engine: "sglang", baseUrl: closedPortUrl() })),
      AbortAllError,
    );
  } finally {
    await engine.close();
  }
});

/** A non-streaming chat completion as an engine sends it, whole or split in two chunks. */
function completionAnswer(asBytes: boolean): Http1Response {
  const json = new TextEncoder().encode(
    '{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":' +
      '{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":7}}',
  );
  const headers: HeaderPairs = [
    ["content-type", "application/json"],
    ["content-length", String(json.byteLength)],
    ["x-engine", "e\xe9"],
  ];
  if (asBytes) return { status: 200, statusText: "OK", headers, body: json };
  const parts = [json.subarray(0, 40), json.subarray(40)];
  return {
    status: 200,
    statusText: "OK",
    headers,
    body: new ReadableStream<Uint8Array>({
      pull(c) {
        const next = parts.shift();
        if (next) c.enqueue(next);
        else c.close();
      },
    }, { highWaterMark: 0 }),
  };
}

/** One completion through the relay on a target answering `answer`; what the client and the books saw. */
async function relayCompletion(asBytes: boolean, server: boolean) {
  const target = new FakeTarget(1);
  target.sender = () => Promise.resolve(completionAnswer(asBytes));
  const samples: LlmSample[] = [];
  Object.assign(target, { recordLlm: (s: LlmSample) => samples.push(s) });
  const { h, lines } = handler(new FakePool([target]));
  const request = "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";
  let received: string;
  if (server) {
    const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
    try {
      const c = await RawClient.open(srv.addr.port);
      try {
        await c.send(request);
        await c.until((s) => s.endsWith('"completion_tokens":7}}'));
        received = c.received.replace(/\r\ndate: [^\r]*/, "\r\ndate: X");
      } finally {
        c.close();
      }
    } finally {
      await srv.closeAll();
    }
  } else {
    const res = await h(
      new Request(`${P}/v1/chat/completions`, { method: "POST", body: "{}" }),
    );
    received = `${res.status} ${JSON.stringify([...res.headers])} ${await res.text()}`;
  }
  await target.released();
  return {
    received,
    lines: lines.map((l) => ({ ...l, durationMs: 0 })),
    samples,
    outcomes: target.outcomes.map((o) => ({ ...o, latencyMs: 0 })),
  };
}

Deno.test("relay: a body that came whole is relayed as bytes with the same answer, log line and LLM sample as a streamed one", async () => {
  for (const server of [false, true]) {
    const whole = await relayCompletion(true, server);
    const streamed = await relayCompletion(false, server);
    assert.equal(whole.received, streamed.received, `server ${server}`);
    assert.deepEqual(whole.lines, streamed.lines);
    assert.deepEqual(whole.samples, streamed.samples);
    assert.deepEqual(whole.outcomes, streamed.outcomes);
    assert.deepEqual(whole.lines, [{
      method: "POST",
      path: "/v1/chat/completions",
      instance: 1,
      status: 200,
      bytes: 158,
      durationMs: 0,
      attempts: 1,
      clientCancelled: false,
    }]);
    // The fields in this order too (log formatters print them as they come).
    assert.deepEqual(Object.keys(whole.lines[0]), [
      "method",
      "path",
      "instance",
      "status",
      "bytes",
      "durationMs",
      "attempts",
      "clientCancelled",
    ]);
    assert.equal(whole.samples.length, 1);
    assert.equal(whole.samples[0].outputTokens, 7, "usage read from the bytes");
    if (server) {
      assert.match(whole.received, /^HTTP\/1\.1 200 OK\r\n/);
      assert.ok(whole.received.includes("\r\ncontent-length: 158\r\n"), whole.received);
      assert.ok(whole.received.includes("\r\nx-engine: e\xe9\r\n"), "header bytes exact");
      assert.ok(!whole.received.includes("transfer-encoding"));
    }
  }
});

Deno.test("relay: a bytes body leaves our server with its head, without a body stream", async () => {
  const target = new FakeTarget(1);
  target.sender = () => Promise.resolve(completionAnswer(true));
  const { h, lines } = handler(new FakePool([target]));
  let streamBuilt = false;
  // Reading `body` is what makes Response build a stream: the server must not.
  const spy: ServerHandler = async (req, info) => {
    const res = await h(req, info);
    const get = Object.getOwnPropertyDescriptor(Response.prototype, "body")!.get!;
    Object.defineProperty(res, "body", {
      get() {
        streamBuilt = true;
        return get.call(this);
      },
    });
    return res;
  };
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, spy);
  try {
    const c = await RawClient.open(srv.addr.port);
    try {
      for (let i = 0; i < 2; i++) {
        c.received = "";
        await c.send(
          "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}",
        );
        await c.until((s) => s.endsWith('"completion_tokens":7}}'));
      }
    } finally {
      c.close();
    }
  } finally {
    await srv.closeAll();
  }
  assert.equal(streamBuilt, false, "the server read res.body");
  assert.equal(lines.length, 2, "one line per request on one kept-alive connection");
  assert.deepEqual(lines.map((l) => l.bytes), [158, 158]);
});

Deno.test("relay: a small answer is logged once the server says whether the client got it", async () => {
  for (const delivered of [true, false]) {
    const target = new FakeTarget(1);
    target.sender = () => Promise.resolve(completionAnswer(true));
    const { h, lines } = handler(new FakePool([target]));
    let settle!: () => void;
    const completed = new Promise<void>((res, rej) => {
      settle = () => delivered ? res() : rej(new Deno.errors.Interrupted("client disconnected"));
    });
    const info = {
      remoteAddr: { transport: "tcp" as const, hostname: "127.0.0.1", port: 1 },
      completed,
    };
    const res = await h(
      new Request(`${P}/v1/chat/completions`, { method: "POST", body: "{}" }),
      info,
    );
    assert.equal(res.status, 200);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(lines.length, 0, "no line before the server knows");
    settle();
    await target.released();
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].status, 200);
    assert.equal(lines[0].clientCancelled, !delivered, `delivered=${delivered}`);
    assert.equal(target.outcomes[0].clientCancelled, !delivered);
    assert.equal(target.outcomes[0].transportError, false);
    await res.body?.cancel();
  }
});

Deno.test("relay: a client that leaves mid-upload is logged as a cancel (499), not a bad request", async () => {
  const target = new FakeTarget(1);
  let sent = 0;
  target.sender = () => {
    sent++;
    return Promise.resolve(completionAnswer(true));
  };
  const { h, lines } = handler(new FakePool([target]));
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  try {
    // The head and part of a 100-byte body arrive apart, so the body is
    // read from the socket, not taken whole from the head's buffer.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: srv.addr.port });
    await conn.write(new TextEncoder().encode(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n",
    ));
    await new Promise((r) => setTimeout(r, 30));
    await conn.write(new TextEncoder().encode('{"model":'));
    await new Promise((r) => setTimeout(r, 30));
    conn.close();
    const deadline = Date.now() + 3_000;
    while (lines.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(lines.length, 1);
    assert.equal(lines[0].status, 499);
    assert.equal(lines[0].clientCancelled, true);
    assert.equal(lines[0].instance, null);
    assert.equal(sent, 0, "nothing reached an engine");
  } finally {
    await srv.closeAll();
  }
});

/** A short streamed completion that the engine framed with Content-Length, so it came whole with its head. */
function wholeSseAnswer(): Http1Response {
  const sse = new TextEncoder().encode(
    'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n' +
      'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n' +
      "data: [DONE]\n\n",
  );
  const headers: HeaderPairs = [
    ["content-type", "text/event-stream"],
    ["content-length", String(sse.byteLength)],
  ];
  return { status: 200, statusText: "OK", headers, body: sse };
}

// Its usage observer times events as they arrived: delivery may come much later.
Deno.test("relay: an SSE answer that came whole is timed when it arrived, not when the client took it", async () => {
  let t = 1_000;
  const clock = { now: () => t, sleep: () => new Promise<void>(() => {}) };
  const target = new FakeTarget(1);
  target.sender = () => {
    t += 100; // the engine answers 100 ms after dispatch
    return Promise.resolve(wholeSseAnswer());
  };
  const samples: LlmSample[] = [];
  Object.assign(target, { recordLlm: (s: LlmSample) => samples.push(s) });
  const { h, lines } = handler(new FakePool([target]), { clock });
  let deliver!: () => void;
  const completed = new Promise<void>((res) => (deliver = res));
  const info = {
    remoteAddr: { transport: "tcp" as const, hostname: "127.0.0.1", port: 1 },
    completed,
  };
  const res = await h(
    new Request(`${P}/v1/chat/completions`, { method: "POST", body: '{"stream":true}' }),
    info,
  );
  assert.equal(res.status, 200);
  // The client is slow to take the answer: the write completes 5 s later.
  t += 5_000;
  deliver();
  await target.released();
  await new Promise((r) => setTimeout(r, 0));
  await res.body?.cancel();
  assert.equal(samples.length, 1);
  assert.equal(samples[0].outputTokens, 1);
  assert.equal(
    samples[0].ttftMs,
    100,
    `TTFT is the engine's 100 ms, got ${samples[0].ttftMs}`,
  );
  // The request's duration, by contrast, rightly includes delivery.
  assert.equal(lines[0].durationMs, 5_100);
});
