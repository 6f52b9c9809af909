/**
 * Engine-supplied model lists and client bodies naming a model, against the
 * real wiring (`startProxy`) with scripted tunnels: an engine that lists
 * 50,000 models (issue #12 item 6) and upload forms the proxy cannot read.
 * The engines here are the injected upstream `fetch`, which answers each
 * instance by the port its tunnel reports (see `virtualBaseUrl`).
 */
import assert from "node:assert/strict";
import { fromWebResponse, type RequestHandler } from "../_helpers/fake_tunnel.ts";
import { type LocalProxy, startLocalProxy, until, virtualBaseUrl } from "./_local_proxy.ts";

/** An upstream where instance i serves `models(i)` and answers other paths with its index. */
function scriptedEngines(models: (i: number) => unknown[]) {
  const calls = { models: 0 };
  const handler: RequestHandler = (req, tunnel) => {
    const url = new URL(req.target, tunnel.baseUrl());
    const i = [0, 1, 2, 3].find((k) => new URL(virtualBaseUrl(k)).port === url.port) ?? -1;
    if (url.pathname === "/v1/models") {
      calls.models++;
      return fromWebResponse(Response.json({ object: "list", data: models(i) }));
    }
    return fromWebResponse(Response.json({ instanceIndex: i }));
  };
  return { calls, handler };
}

Deno.test("faults: an engine listing 50,000 models is capped at 1000, logged once, and never stalls the proxy", async () => {
  const data = Array.from({ length: 50_000 }, (_, k) => ({
    id: `lora-${k % 40_000}`,
    object: "model",
    owned_by: "vllm",
    root: "base",
    parent: "base",
    max_model_len: 4096,
  }));
  const engines = scriptedEngines(() => data);
  let p: LocalProxy | undefined;
  // Timer lag on the event loop while health checks run: the quadratic
  // de-duplication this replaces blocked it about 5 s per check.
  let maxLag = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    maxLag = Math.max(maxLag, now - last - 10);
    last = now;
  }, 10);
  try {
    p = await startLocalProxy({
      instances: 1,
      engines: false,
      handler: engines.handler,
      healthIntervalMs: 50,
    });
    await until("healthy", () => p!.proxy.status().counts.healthy === 1);
    const checksBefore = engines.calls.models;
    await until("3 more health checks", () => engines.calls.models >= checksBefore + 3);
    const [backend] = p.proxy.status().backends;
    assert.equal(backend.models.length, 1000);
    assert.equal(backend.models[0], "lora-0");
    const caps = p.logger.records.filter((r) => r.msg === "model list capped");
    assert.equal(caps.length, 1, "logged once, not per check");
    const list = await (await fetch(`${p.proxy.url}/v1/models`)).json();
    assert.equal(list.data.length, 1000);
    assert.equal(list.data[0].max_model_len, 4096);
    assert.ok(maxLag < 1000, `event loop stalled ${maxLag.toFixed(0)} ms`);
  } finally {
    clearInterval(ticker);
    await p?.close();
  }
});

Deno.test("bad input: multipart and urlencoded forms route by model; unreadable ones pass through to the policy", async () => {
  const engines = scriptedEngines((i) => [{ id: `model-${i}` }]);
  const p = await startLocalProxy({ instances: 2, engines: false, handler: engines.handler });
  try {
    await until("2 healthy", () => p.proxy.status().counts.healthy === 2);
    const post = async (body: BodyInit, headers: Record<string, string> = {}) => {
      const res = await fetch(`${p.proxy.url}/v1/audio/transcriptions`, {
        method: "POST",
        body,
        headers,
      });
      assert.equal(res.status, 200);
      return (await res.json()).instanceIndex as number;
    };
    const upload = (model: string) => {
      const form = new FormData();
      form.append("file", new Blob([new Uint8Array(50_000).fill(13)]), "a.wav");
      form.append("model", model);
      return form;
    };
    for (let k = 0; k < 4; k++) {
      assert.equal(await post(upload("model-1")), 1);
      assert.equal(await post(new URLSearchParams({ model: "model-0" })), 0);
    }
    // Unreadable forms: no boundary, wrong boundary, cut off, no model field.
    const seen = new Set<number>();
    const broken: [BodyInit, Record<string, string>][] = [
      ["--B\r\n\r\nmodel-1", { "content-type": "multipart/form-data" }],
      [
        '--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nmodel-1\r\n--B--',
        { "content-type": "multipart/form-data; boundary=Z" },
      ],
      [
        '--B\r\nContent-Disposition: form-data; name="model"\r\n\r\nmodel-1',
        { "content-type": "multipart/form-data; boundary=B" },
      ],
      ["%zz=%%&&==", { "content-type": "application/x-www-form-urlencoded" }],
    ];
    for (let k = 0; k < 2; k++) {
      for (const [body, headers] of broken) seen.add(await post(body, headers));
    }
    assert.deepEqual([...seen].sort(), [0, 1], "routed by the policy to both instances");
  } finally {
    await p.close();
  }
});
