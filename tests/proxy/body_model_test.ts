import assert from "node:assert/strict";
import OpenAI from "openai";
import { modelOf } from "../../lib/proxy/body_model.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { createHandler } from "../../lib/proxy/relay.ts";
import { type FakeEngine, startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";

const enc = (s: string) => new TextEncoder().encode(s);

/** A body and content type exactly as fetch encodes `form`. */
async function encodeForm(form: FormData | URLSearchParams) {
  const req = new Request("http://x/", { method: "POST", body: form });
  return {
    contentType: req.headers.get("content-type"),
    body: new Uint8Array(await req.arrayBuffer()),
  };
}

/** Pseudo-random bytes that contain CR, LF and dashes, as audio does. */
function audioBytes(n: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    bytes[i] = x >>> 24;
  }
  return bytes;
}

Deno.test("modelOf() reads model from JSON objects only", () => {
  assert.equal(modelOf("application/json", enc(' \n{"model":"qwen","x":1}')), "qwen");
  assert.equal(modelOf("application/json; charset=utf-8", enc('{"model":"qwen"}')), "qwen");
  assert.equal(modelOf("application/vnd.api+json", enc('{"model":"qwen"}')), "qwen");
  assert.equal(modelOf(null, enc('{"model":"qwen"}')), "qwen");
  assert.equal(modelOf("text/plain", enc('{"model":"qwen"}')), undefined);
  assert.equal(modelOf("application/json", enc("[1,2]")), undefined);
  assert.equal(modelOf("application/json", enc("{not json")), undefined);
  assert.equal(modelOf("application/json", enc('{"model":42}')), undefined);
  assert.equal(modelOf("application/json", enc('{"model":""}')), undefined);
  assert.equal(modelOf("application/json", null), undefined);
  assert.equal(modelOf("application/json", new Uint8Array()), undefined);
});

Deno.test("modelOf() reads model from a multipart upload whose file comes first", async () => {
  const form = new FormData();
  form.append("file", new Blob([audioBytes(3 << 20)], { type: "audio/wav" }), "a.wav");
  form.append("model", "whisper-large-v3");
  form.append("language", "en");
  const { contentType, body } = await encodeForm(form);
  assert.match(contentType!, /^multipart\/form-data; boundary=/);
  assert.equal(modelOf(contentType, body), "whisper-large-v3");
});

Deno.test("modelOf() reads model from a multipart form whose model comes first, and a text field before it", async () => {
  const first = new FormData();
  first.append("model", "dall-e-2");
  first.append("image", new Blob([audioBytes(1000)]), "in.png");
  const a = await encodeForm(first);
  assert.equal(modelOf(a.contentType, a.body), "dall-e-2");

  const textFirst = new FormData();
  textFirst.append("prompt", "p".repeat(100_000)); // a long text field is skipped, not collected
  textFirst.append("model", "gpt-image-1");
  const b = await encodeForm(textFirst);
  assert.equal(modelOf(b.contentType, b.body), "gpt-image-1");
});

Deno.test("modelOf() on hand-written multipart: quoted boundary, charset, first of repeated model", () => {
  const body = enc(
    "--XyZ\r\n" +
      'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n' +
      "--XyZ\r\n" +
      'Content-Disposition: form-data; name="model"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n' +
      "qwén\r\n" +
      "--XyZ\r\n" +
      'Content-Disposition: form-data; name="model"\r\n\r\nsecond\r\n' +
      "--XyZ--",
  );
  assert.equal(modelOf("multipart/form-data; boundary=XyZ", body), "qwén");
  assert.equal(modelOf('Multipart/Form-Data; boundary="XyZ"', body), "qwén");
});

Deno.test("modelOf() gives up on broken multipart without failing", () => {
  const part = (value: string, end = "\r\n--B--") =>
    enc(`--B\r\nContent-Disposition: form-data; name="model"\r\n\r\n${value}${end}`);
  assert.equal(modelOf("multipart/form-data; boundary=B", part("m")), "m");
  // No boundary parameter, wrong boundary, model cut off, empty or absurd model.
  assert.equal(modelOf("multipart/form-data", part("m")), undefined);
  assert.equal(modelOf("multipart/form-data; boundary=C", part("m")), undefined);
  assert.equal(modelOf("multipart/form-data; boundary=B", part("m", "")), undefined);
  assert.equal(modelOf("multipart/form-data; boundary=B", part("")), undefined);
  assert.equal(modelOf("multipart/form-data; boundary=B", part("x".repeat(5000))), undefined);
  assert.equal(modelOf("multipart/form-data; boundary=B", enc("garbage\r\n\r\n")), undefined);
  // Not multipart at all: a JSON body sent with a multipart type.
  assert.equal(modelOf("multipart/form-data; boundary=x", enc('{"model":"q"}')), undefined);
});

Deno.test("modelOf() reads model from a urlencoded form", async () => {
  const { contentType, body } = await encodeForm(
    new URLSearchParams({ prompt: "a b&c", model: "qwen 7b" }),
  );
  assert.match(contentType!, /^application\/x-www-form-urlencoded/);
  assert.equal(modelOf(contentType, body), "qwen 7b");
  assert.equal(modelOf("application/x-www-form-urlencoded", enc("prompt=x")), undefined);
  assert.equal(modelOf("application/x-www-form-urlencoded", enc("model=")), undefined);
});

/** A pool that, like the real fleet, knows the models of backends that are down. */
class FleetLikePool extends FakePool {
  knownModels(): ReadonlySet<string> {
    return new Set(this.targets.flatMap((t) => t.models));
  }
}

/** A whisper engine (id 1) and a chat engine (id 2) behind a round-robin relay on Deno.serve. */
async function withMixedFleet(
  fn: (ctx: { base: string; pool: FakePool; engines: FakeEngine[] }) => Promise<void>,
): Promise<void> {
  const engines = [
    await startFakeEngine({ model: "whisper-large-v3" }),
    await startFakeEngine({ model: "qwen" }),
  ];
  const pool = new FleetLikePool([
    new FakeTarget(1, { models: ["whisper-large-v3"], baseUrl: engines[0].url }),
    new FakeTarget(2, { models: ["qwen"], baseUrl: engines[1].url }),
  ]);
  const h = createHandler({
    pool,
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 8 << 20,
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, h);
  try {
    await fn({ base: `http://127.0.0.1:${server.addr.port}`, pool, engines });
  } finally {
    await server.shutdown();
    for (const e of engines) await e.close();
  }
}

Deno.test("relay routes every openai audio.transcriptions upload to the instance serving its model", async () => {
  await withMixedFleet(async ({ base, engines }) => {
    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0 });
    const audio = audioBytes(256 * 1024);
    for (let i = 0; i < 6; i++) {
      const r = await client.audio.transcriptions.create({
        file: new File([audio], "clip.wav", { type: "audio/wav" }),
        model: "whisper-large-v3",
      });
      assert.equal(r.text, `whisper-large-v3 heard ${audio.length} bytes of clip.wav`);
    }
    const translated = await client.audio.translations.create({
      file: new File([audio], "clip.wav"),
      model: "whisper-large-v3",
    });
    assert.match(translated.text, /^whisper-large-v3 heard/);
    assert.equal(engines[1].stats.requests, 0, "nothing reached the chat engine");
    // JSON traffic still balances to the chat model.
    const chat = await client.chat.completions.create({
      model: "qwen",
      messages: [{ role: "user", content: "hi" }],
    });
    assert.equal(chat.model, "qwen");
  });
});

Deno.test("relay answers a multipart upload for an unknown model 404, and 503 while its server is down", async () => {
  await withMixedFleet(async ({ base, pool, engines }) => {
    const upload = (model: string) => {
      const form = new FormData();
      form.append("file", new Blob([audioBytes(1000)]), "a.wav");
      form.append("model", model);
      return fetch(`${base}/v1/audio/transcriptions`, { method: "POST", body: form });
    };
    const unknown = await upload("whisper-tiny");
    assert.equal(unknown.status, 404);
    assert.equal((await unknown.json()).error.code, "model_not_found");
    pool.targets[0].routable = false;
    const down = await upload("whisper-large-v3");
    assert.equal(down.status, 503);
    assert.equal((await down.json()).error.code, "no_healthy_backend");
    assert.equal(engines[0].stats.requests + engines[1].stats.requests, 0);
  });
});

Deno.test("relay routes a urlencoded form by its model", async () => {
  await withMixedFleet(async ({ base }) => {
    for (const [model, instance] of [["qwen", "2"], ["whisper-large-v3", "1"], ["qwen", "2"]]) {
      const res = await fetch(`${base}/echo`, {
        method: "POST",
        body: new URLSearchParams({ model, input: "x" }),
      });
      await res.body?.cancel();
      assert.equal(res.headers.get("x-vastproxy-instance"), instance, model);
    }
  });
});
