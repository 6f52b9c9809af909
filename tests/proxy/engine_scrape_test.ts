import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { Backend } from "../../lib/proxy/backend.ts";
import { OWN_AFFINITY } from "../../lib/proxy/health.ts";
import type { Http1Request, Http1Response } from "../../lib/http1/types.ts";
import { fakeResponse, FakeTunnelFactory, testSpec } from "../_helpers/fake_tunnel.ts";
import type { Engine } from "../../lib/core/backend_spec.ts";

const VLLM = (running: number, queries: number, hits: number) =>
  `# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} ${running}
vllm:num_requests_waiting{model_name="m"} 2
vllm:kv_cache_usage_perc{model_name="m"} 0.5
vllm:prefix_cache_queries_total{model_name="m"} ${queries}
vllm:prefix_cache_hits_total{model_name="m"} ${hits}
`;

/** A healthy backend whose engine answers `/metrics` with `metrics()`; records each request. */
async function setup(engine: Engine = "vllm") {
  const clock = new FakeClock();
  const logger = new MemoryLogger(() => clock.now());
  const requests: Http1Request[] = [];
  const engineState = {
    metrics: (): Http1Response | Promise<Http1Response> =>
      fakeResponse(200, VLLM(3, 100, 40), [["content-type", "text/plain"]]),
  };
  const factory = new FakeTunnelFactory({
    now: () => clock.now(),
    handler: (req) => {
      requests.push(req);
      if (req.target === "/metrics") return engineState.metrics();
      return fakeResponse(200, { object: "list", data: [{ id: "m" }] });
    },
  });
  const backend = new Backend(testSpec(7, { engine, gpuName: "A100", numGpus: 4 }), {
    tunnelFactory: factory,
    clock,
    logger,
    healthIntervalMs: 1000,
  });
  backend.start();
  factory.last(7).up();
  await backend.probeOnce();
  const scrapes = () => requests.filter((r) => r.target === "/metrics");
  return { clock, logger, factory, backend, engineState, scrapes };
}

Deno.test("Backend.metricsOnce() scrapes /metrics through the tunnel with the token", async () => {
  const { backend, scrapes, clock } = await setup();
  assert.equal(backend.engineLoad, null);
  await clock.tick(250);
  await backend.metricsOnce();
  const [req] = scrapes();
  assert.equal(req.method, "GET");
  assert.equal(req.affinity, OWN_AFFINITY);
  assert.deepEqual(req.headers.find(([n]) => n === "authorization"), [
    "authorization",
    "Bearer tok-7-secret",
  ]);
  assert.deepEqual(backend.engineLoad, {
    running: 3,
    waiting: 2,
    kvCacheUsage: 0.5,
    prefixHitRate: 0.4,
    at: clock.now(),
    stale: false,
  });
  assert.ok(Object.isFrozen(backend.engineLoad));
  assert.deepEqual(backend.snapshot().engineLoad, {
    running: 3,
    waiting: 2,
    kvCacheUsage: 0.5,
    prefixHitRate: 0.4,
    stale: false,
  });
  assert.deepEqual(backend.gpu, { name: "A100", count: 4 });
});

Deno.test("Backend.metricsOnce(): the hit rate covers the interval; failure only marks stale", async () => {
  const { backend, engineState, logger } = await setup();
  await backend.metricsOnce();
  engineState.metrics = () => fakeResponse(200, VLLM(1, 200, 130));
  await backend.metricsOnce();
  assert.equal(backend.engineLoad?.prefixHitRate, 0.9); // 90 of 100 new queries hit
  assert.equal(backend.engineLoad?.running, 1);

  engineState.metrics = () => fakeResponse(500, "boom");
  await backend.metricsOnce();
  await backend.metricsOnce();
  assert.equal(backend.engineLoad?.stale, true);
  assert.equal(backend.engineLoad?.running, 1, "old numbers kept");
  assert.equal(backend.state, "healthy", "health untouched");
  const warns = logger.records.filter((e) => e.msg === "engine metrics unavailable");
  assert.equal(warns.length, 1, "warned once per stale period");

  engineState.metrics = () => fakeResponse(200, VLLM(0, 200, 130));
  await backend.metricsOnce();
  assert.equal(backend.engineLoad?.stale, false);
  assert.equal(backend.engineLoad?.prefixHitRate, null, "no queries in the interval");
});

Deno.test("Backend.metricsOnce() backs off an engine that answers 404, and recovers", async () => {
  const { backend, engineState, scrapes, clock } = await setup("sglang");
  engineState.metrics = () => fakeResponse(404, { detail: "Not Found" });
  const attemptsAt: number[] = [];
  const t0 = clock.now();
  for (let t = 0; t <= 16_000; t += 1000) {
    const before = scrapes().length;
    await backend.metricsOnce();
    if (scrapes().length > before) attemptsAt.push(clock.now() - t0);
    await clock.tick(1000);
  }
  // Pauses of 2, 4 and 8 intervals after each 404.
  assert.deepEqual(attemptsAt, [0, 2000, 6000, 14_000]);
  assert.equal(backend.engineLoad, null);
  engineState.metrics = () =>
    fakeResponse(200, "sglang:num_running_reqs 4\nsglang:num_queue_reqs 0\n");
  await clock.tick(30_000);
  await backend.metricsOnce();
  assert.equal(backend.snapshot().engineLoad?.running, 4);
});

Deno.test("Backend.metricsOnce() treats a 200 without known series as unsupported", async () => {
  const { backend, engineState, scrapes } = await setup();
  engineState.metrics = () => fakeResponse(200, "<html>not metrics</html>");
  await backend.metricsOnce();
  await backend.metricsOnce();
  assert.equal(scrapes().length, 1, "backed off");
  assert.equal(backend.engineLoad, null);
});

Deno.test("Backend.metricsOnce(): one at a time; a lost tunnel marks the load stale", async () => {
  const { backend, engineState, scrapes, factory } = await setup();
  let release!: () => void;
  engineState.metrics = () =>
    new Promise((resolve) => (release = () => resolve(fakeResponse(200, VLLM(5, 1, 1)))));
  const a = backend.metricsOnce();
  const b = backend.metricsOnce();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(scrapes().length, 1);
  release();
  await Promise.all([a, b]);
  assert.equal(backend.engineLoad?.running, 5);
  factory.last(7).down();
  await backend.metricsOnce();
  assert.equal(scrapes().length, 1, "nothing sent without a tunnel");
  assert.equal(backend.engineLoad?.stale, true);
});

Deno.test("Backend.recordLlm() labels by served model, else the only model, else other", async () => {
  const { backend } = await setup();
  const sample = { ttftMs: 100, itl: null, outputTokens: 5, tokensPerSec: 50 };
  backend.recordLlm({ ...sample, model: "m" });
  backend.recordLlm({ ...sample, model: null });
  backend.recordLlm({ ...sample, model: "client-made-up" });
  assert.deepEqual([...backend.llmData().keys()], ["m"]);
  assert.equal(backend.llmData().get("m")?.outputTokens, 15);
  const llm = backend.snapshot().llm;
  assert.equal(llm?.outputTokens, 15);
  assert.equal(llm?.tokensPerSec, 50);
  assert.ok(llm?.ttftP50Ms !== null && llm!.ttftP50Ms! > 50 && llm!.ttftP50Ms! <= 100);
});
