import assert from "node:assert/strict";
import OpenAI from "openai";
import { FakeClock } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { Backend } from "../../lib/proxy/backend.ts";
import {
  maxModelLens,
  mergeModels,
  type ModelEntry,
  modelsResponse,
  parseModelList,
} from "../../lib/proxy/models.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { createHandler } from "../../lib/proxy/relay.ts";
import { vllmModelCard } from "../../lib/sim/fake_engine.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";
import { FakeTunnelFactory, fromWebResponse, testSpec } from "../_helpers/fake_tunnel.ts";

/** A model entry exactly as vLLM 0.x writes it in `GET /v1/models`. */
function vllmCard(id: string, maxModelLen: number, extra: Record<string, unknown> = {}) {
  return vllmModelCard(id, maxModelLen, { root: `/models/${id}`, ...extra });
}

function entries(...cards: Record<string, unknown>[]): ModelEntry[] {
  return [...parseModelList({ data: cards })!.entries];
}

Deno.test("parseModelList() keeps every field of each entry, deep-frozen", () => {
  const card = vllmCard("qwen", 32768);
  const list = parseModelList({ object: "list", data: [card] })!;
  assert.deepEqual(list.models, ["qwen"]);
  assert.deepEqual(list.entries, [card]);
  assert.equal(list.capped, null);
  assert.ok(Object.isFrozen(list.entries));
  assert.ok(Object.isFrozen(list.entries[0]));
  assert.ok(Object.isFrozen(list.entries[0].permission));
  assert.ok(Object.isFrozen((list.entries[0].permission as object[])[0]));
  // A copy: the engine's parsed body is not what the backend keeps.
  assert.notEqual(list.entries[0], card);
});

Deno.test("parseModelList() skips entries without a string id and keeps the first of a repeated id", () => {
  const list = parseModelList({
    data: [
      { id: "a", n: 1 },
      null,
      "b",
      { id: 7 },
      { id: "" },
      { name: "no id" },
      { id: "a", n: 2 },
      { id: "c" },
    ],
  })!;
  assert.deepEqual(list.models, ["a", "c"]);
  assert.deepEqual(list.entries, [{ id: "a", n: 1 }, { id: "c" }]);
  assert.equal(list.capped, null);
});

Deno.test("parseModelList() returns null for a body without a data list", () => {
  for (const body of [null, 42, "x", [], {}, { data: {} }, { data: "x" }]) {
    assert.equal(parseModelList(body), null, JSON.stringify(body));
  }
  assert.deepEqual(parseModelList({ data: [] })?.models, []);
});

Deno.test("parseModelList() caps the model count and says so; a tail of duplicates is no cap", () => {
  const ids = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `m${i}` }));
  const capped = parseModelList({ data: ids(5) }, { maxModels: 3 })!;
  assert.deepEqual(capped.models, ["m0", "m1", "m2"]);
  assert.match(capped.capped!, /more than 3 models; kept the first 3/);
  const dupTail = parseModelList({ data: [...ids(3), ...ids(3)] }, { maxModels: 3 })!;
  assert.deepEqual(dupTail.models, ["m0", "m1", "m2"]);
  assert.equal(dupTail.capped, null);
});

Deno.test("parseModelList() handles 50,000 ids (half repeated) in linear time, capped at 1000", () => {
  // Issue #12 item 6: `includes`-based de-duplication took ~5 s per check here.
  const data = Array.from(
    { length: 50_000 },
    (_, i) => ({ id: `lora-${i % 25_000}`, root: "base" }),
  );
  const started = performance.now();
  const list = parseModelList({ data })!;
  const uncapped = parseModelList({ data }, { maxModels: Infinity, maxBytes: Infinity })!;
  const elapsed = performance.now() - started;
  assert.equal(list.models.length, 1000);
  assert.match(list.capped!, /more than 1000 models/);
  assert.equal(uncapped.models.length, 25_000);
  assert.equal(uncapped.capped, null);
  // Generous for a shared CI core; the quadratic version needs seconds.
  assert.ok(elapsed < 1000, `took ${elapsed.toFixed(0)} ms`);
});

Deno.test("parseModelList() stops at the byte budget and drops oversized fields", () => {
  const big = {
    data: Array.from({ length: 100 }, (_, i) => ({ id: `m${i}`, pad: "x".repeat(100) })),
  };
  const budgeted = parseModelList(big, { maxBytes: 2000 })!;
  assert.ok(budgeted.models.length > 0 && budgeted.models.length < 20, `${budgeted.models.length}`);
  assert.match(budgeted.capped!, /exceeds 2000 bytes; kept the first \d+ models/);

  const odd = parseModelList({
    data: [
      {
        id: "odd",
        max_model_len: 4096,
        huge: "y".repeat(10_000),
        deep: { a: { b: { c: { d: 1 } } } },
        wide: Array.from({ length: 1000 }, (_, i) => i),
        ["__proto__"]: { polluted: true },
      },
      { id: "x".repeat(2000) },
    ],
  })!;
  assert.deepEqual(odd.models, ["odd"]);
  const e = odd.entries[0];
  assert.equal(e.max_model_len, 4096);
  assert.equal("huge" in e, false);
  assert.equal("wide" in e, false);
  assert.deepEqual(e.deep, { a: { b: {} } }); // c sits deeper than MAX_DEPTH
  // An engine's "__proto__" key stays plain data.
  assert.equal(Object.getPrototypeOf(e), Object.prototype);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.match(odd.capped!, /dropped oversized fields of 3 model entries/);
});

Deno.test("mergeModels() unions by id, keeps the first backend's fields and adds instances", () => {
  const merged = mergeModels([
    {
      id: 2,
      models: ["qwen", "whisper"],
      modelEntries: entries(vllmCard("qwen", 8192), vllmCard("whisper", 448)),
    },
    {
      id: 1,
      models: ["qwen"],
      modelEntries: entries(vllmCard("qwen", 32768, { root: "/first/qwen", custom: true })),
    },
    { id: 3, models: ["bare"] },
  ], 1_700_000_123_000);
  assert.deepEqual(merged.map((m) => [m.id, m.instances]), [
    ["qwen", [1, 2]],
    ["whisper", [2]],
    ["bare", [3]],
  ]);
  const qwen = merged[0];
  // Fields of the first backend by id, max_model_len the smallest of all.
  assert.equal(qwen.root, "/first/qwen");
  assert.equal(qwen.custom, true);
  assert.equal(qwen.max_model_len, 8192);
  assert.equal(qwen.owned_by, "vllm");
  assert.equal(qwen.parent, null);
  assert.equal((qwen.permission as unknown[]).length, 1);
  assert.deepEqual(Object.keys(qwen), [...Object.keys(vllmCard("x", 1)), "custom", "instances"]);
  // A backend without entries still lists its ids in OpenAI's shape.
  assert.deepEqual(merged[2], {
    id: "bare",
    object: "model",
    created: 1_700_000_123,
    owned_by: "vastproxy",
    instances: [3],
  });
});

Deno.test("mergeModels() takes the smallest numeric max_model_len and ignores missing ones", () => {
  const merged = mergeModels([
    { id: 1, models: ["m"], modelEntries: entries({ id: "m", max_model_len: "long" }) },
    { id: 2, models: ["m"], modelEntries: entries({ id: "m" }) },
    { id: 3, models: ["m"], modelEntries: entries({ id: "m", max_model_len: 4096 }) },
    { id: 4, models: ["m"], modelEntries: entries({ id: "m", max_model_len: 2048 }) },
  ], 0);
  assert.equal(merged[0].max_model_len, 2048);
  const none = mergeModels([{ id: 1, models: ["m"], modelEntries: entries({ id: "m" }) }], 0);
  assert.equal("max_model_len" in none[0], false);
});

Deno.test("maxModelLens() maps each model to its numeric max_model_len", () => {
  assert.deepEqual(
    maxModelLens(entries(vllmCard("a", 4096), { id: "b" }, { id: "c", max_model_len: null })),
    { a: 4096 },
  );
});

Deno.test("modelsResponse() is 503 without a routable backend", async () => {
  const res = modelsResponse([], 0);
  assert.equal(res.status, 503);
  assert.equal((await res.json()).error.code, "no_healthy_backend");
});

Deno.test("relay GET /v1/models: the openai client reads max_model_len, the smallest across instances", async () => {
  const pool = new FakePool([
    new FakeTarget(1, { modelEntries: entries(vllmCard("qwen", 32768)) }),
    new FakeTarget(2, { modelEntries: entries(vllmCard("qwen", 16384), vllmCard("whisper", 448)) }),
    new FakeTarget(3, { modelEntries: entries(vllmCard("down", 1)), routable: false }),
  ]);
  const h = createHandler({
    pool,
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1024,
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, h);
  try {
    const client = new OpenAI({
      baseURL: `http://127.0.0.1:${server.addr.port}/v1`,
      apiKey: "unused",
      maxRetries: 0,
    });
    const page = await client.models.list();
    type VllmModel = OpenAI.Models.Model & {
      max_model_len: number;
      root: string;
      parent: string | null;
      permission: { object: string }[];
      instances: number[];
    };
    const data = page.data as VllmModel[];
    assert.deepEqual(data.map((m) => m.id), ["qwen", "whisper"]);
    assert.equal(data[0].max_model_len, 16384);
    assert.equal(data[0].root, "/models/qwen");
    assert.equal(data[0].parent, null);
    assert.equal(data[0].permission[0].object, "model_permission");
    assert.equal(data[0].owned_by, "vllm");
    assert.deepEqual(data[0].instances, [1, 2]);
    assert.equal(data[1].max_model_len, 448);
  } finally {
    await server.shutdown();
  }
});

Deno.test("Backend keeps the engine's entries, shows per-instance max_model_len, and logs a cap once", async () => {
  const clock = new FakeClock();
  const logger = new MemoryLogger(() => clock.now());
  const data = [
    vllmCard("qwen", 32768),
    ...Array.from({ length: 1500 }, (_, i) => ({ id: `lora-${i}`, parent: "qwen" })),
  ];
  const factory = new FakeTunnelFactory({
    now: () => clock.now(),
    handler: () => fromWebResponse(Response.json({ object: "list", data })),
  });
  const backend = new Backend(testSpec(7), {
    tunnelFactory: factory,
    clock,
    logger,
    healthIntervalMs: 1000,
  });
  backend.start();
  factory.last(7).up({ baseUrl: "http://127.0.0.1:18001" });
  await backend.probeOnce();
  await backend.probeOnce();
  assert.equal(backend.state, "healthy");
  assert.equal(backend.models.length, 1000);
  assert.deepEqual(backend.modelEntries[0], vllmCard("qwen", 32768));
  assert.deepEqual(backend.snapshot().maxModelLen, { qwen: 32768 });
  const caps = logger.records.filter((r) => r.msg === "model list capped");
  assert.equal(caps.length, 1);
  assert.equal(caps[0].fields.id, 7);
  assert.match(String(caps[0].fields.reason), /more than 1000 models/);
});
