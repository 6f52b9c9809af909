import { parseEngineMetrics } from "../../lib/proxy/engine_metrics.ts";
import assert from "node:assert/strict";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { eventually } from "../_helpers/fake_pool.ts";

/** Splits an SSE body into its `data:` payloads. */
function sseData(text: string): string[] {
  return text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
}

Deno.test("fake engine serves /v1/models and /health, with setHealthy()", async () => {
  const engine = await startFakeEngine({ model: "qwen-7b", engine: "sglang" });
  try {
    const models = await (await fetch(`${engine.url}/v1/models`)).json();
    assert.deepEqual(models, {
      object: "list",
      data: [{
        id: "qwen-7b",
        object: "model",
        created: 1_700_000_000,
        owned_by: "sglang",
        root: "qwen-7b",
        max_model_len: 32768,
      }],
    });
    assert.equal((await fetch(`${engine.url}/health`)).status, 200);
    engine.setHealthy(false);
    const res = await fetch(`${engine.url}/health`);
    await res.body?.cancel();
    assert.equal(res.status, 503);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine requires its Bearer token when configured", async () => {
  const engine = await startFakeEngine({ token: "t0k3n" });
  try {
    const denied = await fetch(`${engine.url}/v1/models`);
    await denied.body?.cancel();
    assert.equal(denied.status, 401);
    const ok = await fetch(`${engine.url}/v1/models`, {
      headers: { authorization: "Bearer t0k3n" },
    });
    await ok.body?.cancel();
    assert.equal(ok.status, 200);
    assert.deepEqual(engine.stats.authHeaders, [null, "Bearer t0k3n"]);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine answers a plain chat completion in OpenAI shape", async () => {
  const engine = await startFakeEngine({ model: "m", tokens: 4 });
  try {
    const res = await fetch(`${engine.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
    });
    const body = await res.json();
    assert.equal(body.object, "chat.completion");
    assert.equal(body.model, "m");
    assert.equal(body.choices[0].message.role, "assistant");
    assert.equal(body.choices[0].message.content, " The quick brown fox");
    assert.equal(body.choices[0].finish_reason, "stop");
    assert.equal(body.usage.completion_tokens, 4);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine (vllm) answers 404 for another model", async () => {
  const engine = await startFakeEngine({ model: "m", engine: "vllm" });
  try {
    const res = await fetch(`${engine.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "other", prompt: "x" }),
    });
    const body = await res.json();
    assert.equal(res.status, 404);
    assert.match(body.error.message, /does not exist/);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine streams chat chunks in OpenAI SSE format with usage and [DONE]", async () => {
  const engine = await startFakeEngine({ model: "m", tokens: 3 });
  try {
    const res = await fetch(`${engine.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({
        model: "m",
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: "user", content: "hi" }],
      }),
    });
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    const data = sseData(await res.text());
    assert.equal(data.at(-1), "[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    for (const c of chunks) assert.equal(c.object, "chat.completion.chunk");
    assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
    assert.equal(text, " The quick brown");
    assert.equal(chunks.at(-2).choices[0].finish_reason, "stop");
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.equal(chunks.at(-1).usage.total_tokens, chunks.at(-1).usage.prompt_tokens + 3);
    assert.equal(engine.stats.completedStreams, 1);
    assert.equal(engine.stats.openConnections, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine streams text completions", async () => {
  const engine = await startFakeEngine({ tokens: 2 });
  try {
    const res = await fetch(`${engine.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "x", stream: true, max_tokens: 1 }),
    });
    const data = sseData(await res.text());
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.equal(chunks[0].object, "text_completion");
    assert.equal(chunks[0].choices[0].text, " The");
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine /echo, /bytes and /sse routes", async () => {
  const engine = await startFakeEngine();
  try {
    const echo = await (await fetch(`${engine.url}/echo?a=1`, {
      method: "PUT",
      headers: { "x-test": "yes" },
      body: "héllo",
    })).json();
    assert.equal(echo.method, "PUT");
    assert.equal(echo.query, "?a=1");
    assert.equal(echo.headers["x-test"], "yes");
    assert.equal(echo.body, "héllo");
    assert.equal(echo.bodyLength, 6);
    const bytes = await (await fetch(`${engine.url}/bytes?n=200000`)).arrayBuffer();
    assert.equal(bytes.byteLength, 200_000);
    const sse = sseData(await (await fetch(`${engine.url}/sse?n=3&interval=5`)).text());
    assert.equal(sse.length, 4);
    assert.deepEqual(sse.slice(0, 3).map((d) => JSON.parse(d).i), [0, 1, 2]);
    assert.ok(typeof JSON.parse(sse[0]).t === "number");
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine records a client closing a stream mid-way within 1 s", async () => {
  const engine = await startFakeEngine();
  try {
    const res = await fetch(`${engine.url}/sse?n=100&interval=50`);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    assert.ok(await eventually(() => engine.stats.closedMidStream === 1, 1000));
    assert.equal(engine.stats.openConnections, 0);
    assert.equal(engine.stats.completedStreams, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine (sglang) abort_all ends running streams", async () => {
  const engine = await startFakeEngine({ engine: "sglang", tokens: 1000, tokenDelayMs: 20 });
  try {
    const res = await fetch(`${engine.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ stream: true, messages: [] }),
    });
    const reader = res.body!.getReader();
    await reader.read();
    const abort = await fetch(`${engine.url}/abort_request`, {
      method: "POST",
      body: JSON.stringify({ abort_all: true }),
    });
    await abort.body?.cancel();
    assert.equal(abort.status, 200);
    let rest = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    assert.match(rest, /"finish_reason":"abort"[^]*data: \[DONE\]\n\n$/);
    assert.equal(engine.stats.aborts, 1);
    assert.equal(engine.stats.openConnections, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine setStatus() forces an OpenAI-shaped error", async () => {
  const engine = await startFakeEngine();
  try {
    engine.setStatus(500);
    const res = await fetch(`${engine.url}/v1/chat/completions`, { method: "POST", body: "{}" });
    assert.equal(res.status, 500);
    assert.equal((await res.json()).error.code, 500);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine close() stops listening and restart() reuses the port", async () => {
  const engine = await startFakeEngine();
  try {
    const port = engine.port;
    await engine.close();
    await assert.rejects(() => fetch(`${engine.url}/health`));
    await engine.restart();
    assert.equal(engine.port, port);
    const res = await fetch(`${engine.url}/health`);
    await res.body?.cancel();
    assert.equal(res.status, 200);
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine (vllm) lists its model as vLLM does: max_model_len, root, parent, permission", async () => {
  const engine = await startFakeEngine({ model: "qwen", engine: "vllm", maxModelLen: 8192 });
  try {
    const [card] = (await (await fetch(`${engine.url}/v1/models`)).json()).data;
    assert.deepEqual(
      Object.keys(card),
      ["id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"],
    );
    assert.equal(card.owned_by, "vllm");
    assert.equal(card.max_model_len, 8192);
    assert.equal(card.root, "qwen");
    assert.equal(card.parent, null);
    assert.equal(card.permission[0].object, "model_permission");
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine transcribes a multipart upload, and (vllm) answers 404 for another model", async () => {
  const engine = await startFakeEngine({ model: "whisper", engine: "vllm" });
  try {
    const upload = (model: string) => {
      const form = new FormData();
      form.append("file", new Blob([new Uint8Array(300)]), "a.wav");
      form.append("model", model);
      return fetch(`${engine.url}/v1/audio/transcriptions`, { method: "POST", body: form });
    };
    const ok = await upload("whisper");
    assert.deepEqual(await ok.json(), { text: "whisper heard 300 bytes of a.wav" });
    const wrong = await upload("qwen");
    assert.equal(wrong.status, 404);
    assert.equal((await wrong.json()).error.type, "NotFoundError");
    const notMultipart = await fetch(`${engine.url}/v1/audio/translations`, {
      method: "POST",
      body: "{}",
    });
    assert.equal(notMultipart.status, 400);
    await notMultipart.body?.cancel();
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine: /metrics in each engine's format reports its running streams", async () => {
  for (const kind of ["vllm", "sglang", "llama.cpp"] as const) {
    const engine = await startFakeEngine({ engine: kind, tokens: 3, tokenDelayMs: 5 });
    try {
      const load = async () =>
        parseEngineMetrics(kind, await (await fetch(`${engine.url}/metrics`)).text());
      assert.equal((await load()).running, 0, kind);
      const res = await fetch(`${engine.url}/v1/chat/completions`, {
        method: "POST",
        body: JSON.stringify({ model: "fake-model", messages: [], stream: true }),
      });
      const during = await load();
      assert.equal(during.running, 1, kind);
      assert.equal(during.waiting, 0, kind);
      assert.equal(during.kvCacheUsage, 1 / 16, kind);
      await res.text();
      assert.equal((await load()).running, 0, kind);
    } finally {
      await engine.close();
    }
  }
});

Deno.test("fake engine: without metrics, /metrics answers like the real engines", async () => {
  for (const [kind, status] of [["sglang", 404], ["llama.cpp", 501]] as const) {
    const engine = await startFakeEngine({ engine: kind, metrics: false });
    try {
      const res = await fetch(`${engine.url}/metrics`);
      await res.body?.cancel();
      assert.equal(res.status, status);
    } finally {
      await engine.close();
    }
  }
});

Deno.test("fake engine keepLast: keeps the most recent request records, in order", async () => {
  const engine = await startFakeEngine({ keepLast: 3 });
  try {
    for (let i = 0; i < 10; i++) {
      const res = await fetch(`${engine.url}/health?i=${i}`, {
        headers: { authorization: `Bearer ${i}` },
      });
      await res.body?.cancel();
    }
    assert.equal(engine.stats.requests, 10);
    const { paths, authHeaders } = engine.stats;
    // Between keepLast and twice it, the newest last and nothing mixed up.
    assert.ok(paths.length >= 3 && paths.length < 6, `kept ${paths.length}`);
    assert.equal(authHeaders.length, paths.length);
    const first = 10 - paths.length;
    assert.deepEqual(paths, paths.map((_, k) => `GET /health?i=${first + k}`));
    assert.deepEqual(authHeaders, paths.map((_, k) => `Bearer ${first + k}`));
  } finally {
    await engine.close();
  }
});

Deno.test("fake engine keepLast: a count that keeps nothing, or everything by accident, is refused", () => {
  for (const keepLast of [0, -1, NaN]) {
    assert.throws(() => startFakeEngine({ keepLast }), RangeError, String(keepLast));
  }
});
