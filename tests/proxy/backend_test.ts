import assert from "node:assert/strict";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { Backend, type BackendDeps, type BackendEvent } from "../../lib/proxy/backend.ts";
import { deriveState, INITIAL_INPUTS, transition } from "../../lib/proxy/backend_state.ts";
import type { RequestOutcome } from "../../lib/proxy/pool.ts";
import { Http1Error, type Http1Request, type Http1Response } from "../../lib/http1/types.ts";
import { FakeTunnelFactory, fromWebResponse, testSpec } from "../_helpers/fake_tunnel.ts";

/**
 * A scripted `/v1/models` engine: records each call (`url` is the path it
 * came through plus the target), answers with `answer()`; with `hang` set, a
 * call ends only when its signal aborts.
 */
function modelsEngine() {
  const calls: { url: string; auth: string | null }[] = [];
  const state = {
    calls,
    hang: false,
    answer: (): Response | Promise<Response> =>
      Response.json({ object: "list", data: [{ id: "llama-3-8b" }] }),
    handle: async (req: Http1Request, via: string | undefined): Promise<Http1Response> => {
      calls.push({
        url: `${via}${req.target}`,
        auth: req.headers.find(([n]) => n === "authorization")?.[1] ?? null,
      });
      if (state.hang) {
        await new Promise((_, reject) =>
          req.signal?.addEventListener("abort", () => reject(req.signal?.reason))
        );
      }
      return fromWebResponse(await state.answer());
    },
  };
  return state;
}

/** Health checks made so far (the loop also scrapes `/metrics`). */
function checks(models: ReturnType<typeof modelsEngine>): number {
  return models.calls.filter((c) => c.url.endsWith("/v1/models")).length;
}

function setup(overrides: Partial<BackendDeps> = {}, spec = testSpec(7), realHttp = false) {
  const clock = new FakeClock();
  const logger = new MemoryLogger(() => clock.now());
  const models = modelsEngine();
  const factory = new FakeTunnelFactory({
    now: () => clock.now(),
    handler: realHttp ? undefined : (req, t) => models.handle(req, t.baseUrl()),
  });
  const events: BackendEvent[] = [];
  const backend = new Backend(spec, {
    tunnelFactory: factory,
    clock,
    logger,
    healthIntervalMs: 1000,
    onEvent: (e) => events.push(e),
    ...overrides,
  });
  const states = () => events.filter((e) => e.type === "state").map((e) => `${e.from}>${e.to}`);
  return { clock, logger, factory, models, events, states, backend, spec };
}

/** A backend started with its tunnel up and one successful check. */
async function healthy(overrides: Partial<BackendDeps> = {}) {
  const t = setup(overrides);
  t.backend.start();
  t.factory.last(7).up({ baseUrl: "http://127.0.0.1:18001" });
  await t.backend.probeOnce();
  assert.equal(t.backend.state, "healthy");
  return t;
}

const ok: RequestOutcome = {
  status: 200,
  latencyMs: 40,
  transportError: false,
  clientCancelled: false,
};

Deno.test("Backend.start() connects, and one successful check after the tunnel is up makes it healthy", async () => {
  const { backend, factory, states, models } = setup();
  assert.equal(backend.state, "discovered");
  backend.start();
  assert.equal(backend.state, "connecting");
  assert.equal(backend.routable, false);
  await backend.probeOnce(); // tunnel not up yet: nothing to check
  assert.equal(models.calls.length, 0);
  assert.equal(backend.state, "connecting");
  factory.last(7).up({ baseUrl: "http://127.0.0.1:18001" });
  await backend.probeOnce(); // joins the immediate check the `up` event started
  assert.equal(models.calls.length, 1);
  assert.equal(models.calls[0].url, "http://127.0.0.1:18001/v1/models");
  assert.equal(backend.state, "healthy");
  assert.equal(backend.routable, true);
  assert.deepEqual(states(), ["discovered>connecting", "connecting>healthy"]);
});

Deno.test("Backend.probeOnce() goes down after 2 consecutive failures, not 1, and recovers after 1 success", async () => {
  const { backend, models, states } = await healthy();
  models.answer = () => new Response("loading", { status: 502 });
  await backend.probeOnce();
  assert.equal(backend.state, "healthy");
  await backend.probeOnce();
  assert.equal(backend.state, "unhealthy");
  assert.equal(backend.snapshot().reason, "GET /v1/models answered HTTP 502");
  assert.equal(backend.routable, false);
  await backend.probeOnce(); // still failing: no new event
  models.answer = () => Response.json({ data: [{ id: "llama-3-8b" }] });
  await backend.probeOnce();
  assert.equal(backend.state, "healthy");
  assert.deepEqual(states(), [
    "discovered>connecting",
    "connecting>healthy",
    "healthy>unhealthy",
    "unhealthy>healthy",
  ]);
});

Deno.test("Backend: a success between failures resets the count", async () => {
  const { backend, models } = await healthy();
  const fail = () => new Response("x", { status: 500 });
  const good = () => Response.json({ data: [] });
  for (const answer of [fail, good, fail]) {
    models.answer = answer;
    await backend.probeOnce();
  }
  assert.equal(backend.state, "healthy");
});

Deno.test("Backend: tunnel down makes it unhealthy at once; up probes immediately and recovers", async () => {
  const { backend, factory, models, states } = await healthy();
  factory.last(7).down("keepalive timeout");
  assert.equal(backend.state, "unhealthy");
  assert.match(backend.snapshot().reason ?? "", /SSH connection lost: keepalive timeout/);
  await assert.rejects(
    backend.send({ method: "GET", target: "/", headers: [], body: null }),
    (e) => e instanceof Http1Error && !e.sent, // down: provably not sent
  );
  assert.equal(backend.routable, false);
  const before = models.calls.length;
  factory.last(7).up({ baseUrl: "http://127.0.0.1:18002" });
  assert.equal(backend.state, "unhealthy"); // not before a check passes
  await backend.probeOnce();
  assert.equal(models.calls.length, before + 1);
  assert.equal(models.calls.at(-1)?.url, "http://127.0.0.1:18002/v1/models");
  assert.equal(backend.state, "healthy");
  assert.deepEqual(states().slice(2), ["healthy>unhealthy", "unhealthy>healthy"]);
});

Deno.test("Backend: a check that started on a lost connection does not decide the new one", async () => {
  const { backend, factory, models } = await healthy();
  const answers: ((r: Response) => void)[] = [];
  models.answer = () => new Promise<Response>((r) => answers.push(r));
  const checks = backend.probeOnce();
  await flushMicrotasks();
  factory.last(7).down();
  factory.last(7).up({ baseUrl: "http://127.0.0.1:18002" }); // queues a check on the new path
  answers[0](Response.json({ data: [{ id: "llama-3-8b" }] })); // the old path's answer
  await flushMicrotasks();
  assert.equal(backend.state, "unhealthy"); // not trusted: it was another connection
  assert.equal(models.calls.at(-1)?.url, "http://127.0.0.1:18002/v1/models");
  answers[1](Response.json({ data: [{ id: "llama-3-8b" }] }));
  await checks;
  assert.equal(backend.state, "healthy");
});

Deno.test("Backend.probeOnce() refreshes the model list on success", async () => {
  const { backend, models } = await healthy();
  assert.deepEqual(backend.models, ["llama-3-8b"]);
  models.answer = () =>
    Response.json({ data: [{ id: "qwen" }, { id: "qwen-lora" }, { id: "qwen" }] });
  await backend.probeOnce();
  assert.deepEqual(backend.models, ["qwen", "qwen-lora"]);
  assert.deepEqual(backend.snapshot().models, ["qwen", "qwen-lora"]);
});

Deno.test("Backend.probeOnce() sends the instance token as Bearer over real HTTP", async () => {
  const seen: (string | null)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    seen.push(req.headers.get("authorization"));
    return Response.json({ object: "list", data: [{ id: "served-model" }] });
  });
  try {
    const t = setup({}, testSpec(7), true);
    t.backend.start();
    t.factory.last(7).up({ baseUrl: `http://127.0.0.1:${server.addr.port}` });
    await t.backend.probeOnce();
    assert.deepEqual(seen, ["Bearer tok-7-secret"]);
    assert.deepEqual(t.backend.models, ["served-model"]);
    assert.equal(t.backend.upstreamAuth(), "Bearer tok-7-secret");
  } finally {
    await server.shutdown();
  }
});

Deno.test("Backend.probeOnce() sends no Authorization when the instance has no token", async () => {
  const t = setup({}, testSpec(7, { token: null }));
  t.backend.start();
  t.factory.last(7).up();
  await t.backend.probeOnce();
  assert.equal(t.models.calls[0].auth, null);
  assert.equal(t.backend.upstreamAuth(), null);
});

Deno.test("Backend.probeOnce() gives up after the 5 s timeout on the clock", async () => {
  const t = await healthy();
  // From now on a check hangs until its abort.
  t.models.hang = true;
  const probe = t.backend.probeOnce();
  await t.clock.tick(4999);
  assert.equal(t.clock.pending, 1); // still waiting
  await t.clock.tick(1);
  await probe;
  assert.equal(t.backend.state, "healthy"); // one failure is not enough
  const second = t.backend.probeOnce();
  await t.clock.tick(5000);
  await second;
  assert.equal(t.backend.state, "unhealthy");
  assert.equal(t.backend.snapshot().reason, "GET /v1/models timed out after 5000 ms");
  assert.equal(t.clock.pending, 0); // no timer left behind
});

Deno.test("Backend: a refused host key shows as hostkey-mismatch with the reason", async () => {
  const { backend, factory, states } = await healthy();
  factory.last(7).hostkeyMismatch("host key changed; remove its line from known_hosts");
  assert.equal(backend.state, "hostkey-mismatch");
  assert.match(backend.snapshot().reason ?? "", /remove its line/);
  assert.equal(backend.routable, false);
  assert.equal(states().at(-1), "healthy>hostkey-mismatch");
});

Deno.test("Backend.gpuOnce() failure marks metrics stale but keeps state and tunnel", async () => {
  let fail = false;
  const gpu = {
    index: 0,
    name: "RTX 4090",
    utilization: 97,
    memoryUsed: 20000,
    memoryTotal: 24564,
    temperature: 71,
    powerDraw: null,
  };
  const t = await healthy({
    gpuProbe: () =>
      Promise.resolve(
        fail ? { ok: false, error: "nvidia-smi exited with code 9" } : { ok: true, gpus: [gpu] },
      ),
  });
  await t.backend.gpuOnce();
  assert.deepEqual(t.backend.snapshot().gpus, [gpu]);
  assert.equal(t.backend.snapshot().gpuStale, false);
  fail = true;
  await t.backend.gpuOnce();
  await t.backend.gpuOnce();
  const snap = t.backend.snapshot();
  assert.equal(snap.gpuStale, true);
  assert.deepEqual(snap.gpus, [gpu]); // last known numbers stay, marked stale
  assert.equal(t.backend.state, "healthy");
  const tunnel = t.factory.last(7);
  assert.equal(tunnel.reconnects, 0);
  assert.equal(tunnel.closeCalls.length, 0);
  assert.equal(t.logger.records.filter((r) => r.msg === "GPU metrics unavailable").length, 1);
});

Deno.test("Backend.gpuOnce() treats a throwing probe as a failure", async () => {
  const t = await healthy({ gpuProbe: () => Promise.reject(new Error("channel closed")) });
  await t.backend.gpuOnce();
  assert.equal(t.backend.snapshot().gpuStale, true);
  assert.equal(t.backend.state, "healthy");
});

Deno.test("Backend.acquire() counts in-flight, requests, errors and latency exactly once per release", async () => {
  const { backend } = await healthy();
  const r1 = backend.acquire();
  const r2 = backend.acquire();
  const r3 = backend.acquire();
  assert.equal(backend.inFlight, 3);
  r1(ok);
  r1(ok); // double release is ignored
  assert.equal(backend.inFlight, 2);
  r2({ ...ok, status: 503, latencyMs: 10 });
  r3({ status: null, latencyMs: 5, transportError: false, clientCancelled: true });
  const s = backend.snapshot();
  assert.equal(s.inFlight, 0);
  assert.equal(s.requests, 3);
  assert.equal(s.errors, 1); // the 503; the cancelled one is not the backend's fault
  assert.equal(backend.histogram().count, 2); // cancelled requests have no real latency
  assert.notEqual(s.latencyMs.p50, null);
});

Deno.test("Backend.acquire(): a cancelled client never counts as an error, even with a transport error", async () => {
  const { backend, models } = await healthy();
  const before = models.calls.length;
  backend.acquire()({ status: null, latencyMs: 3, transportError: true, clientCancelled: true });
  await flushMicrotasks();
  assert.equal(backend.snapshot().errors, 0);
  assert.equal(models.calls.length, before); // and triggers no passive check
});

Deno.test("Backend.acquire(): a transport error counts and triggers one immediate check", async () => {
  const { backend, models } = await healthy();
  let answer!: (r: Response) => void;
  models.answer = () => new Promise<Response>((r) => (answer = r));
  const before = models.calls.length;
  const failed = { status: null, latencyMs: 3, transportError: true, clientCancelled: false };
  backend.acquire()(failed);
  backend.acquire()(failed); // a burst shares the check already running
  await flushMicrotasks();
  assert.equal(models.calls.length, before + 1);
  assert.equal(backend.snapshot().errors, 2);
  answer(Response.json({ data: [] }));
  await backend.probeOnce();
});

Deno.test("Backend.setDrained() takes it out of routing but keeps checking it", async () => {
  const { backend, models, states } = await healthy();
  backend.setDrained(true);
  assert.equal(backend.routable, false);
  assert.equal(backend.state, "draining");
  assert.equal(backend.snapshot().drained, true);
  const before = models.calls.length;
  await backend.probeOnce();
  assert.equal(models.calls.length, before + 1);
  backend.setDrained(false);
  assert.equal(backend.routable, true);
  assert.deepEqual(states().slice(2), ["healthy>draining", "draining>healthy"]);
});

Deno.test("Backend.drainAndClose() waits for in-flight requests, then closes the tunnel", async () => {
  const { backend, factory, clock, states } = await healthy();
  const release = backend.acquire();
  let closed = false;
  const done = backend.drainAndClose(30_000).then(() => (closed = true));
  await clock.tick(10_000);
  assert.equal(backend.state, "draining");
  assert.equal(backend.routable, false);
  assert.equal(factory.last(7).closeCalls.length, 0);
  assert.equal(closed, false);
  release(ok);
  await done;
  assert.equal(backend.state, "removed");
  assert.deepEqual(factory.last(7).closeCalls, [{ graceful: false }]);
  assert.equal(factory.last(7).listenerCount, 0);
  assert.equal(clock.pending, 0);
  assert.deepEqual(states().slice(2), ["healthy>draining", "draining>removed"]);
});

Deno.test("Backend.drainAndClose() closes after the timeout when requests hang", async () => {
  const { backend, factory, clock } = await healthy();
  backend.acquire();
  const done = backend.drainAndClose(5_000);
  await clock.tick(5_000);
  await done;
  assert.equal(backend.state, "removed");
  assert.equal(factory.last(7).closeCalls.length, 1);
});

Deno.test("Backend.snapshot() is frozen and never carries the token", async () => {
  const { backend, spec } = await healthy();
  const snap = backend.snapshot();
  assert.ok(Object.isFrozen(snap));
  assert.equal(JSON.stringify(snap).includes(spec.token!), false);
  assert.equal(snap.ssh, "direct");
  assert.equal(snap.endpoint, "ssh.example:22");
  assert.equal(snap.port, 18000);
});

Deno.test("Backend emits path events only on a direct↔proxy switch", async () => {
  const { backend, factory, events } = await healthy();
  const tunnel = factory.last(7);
  tunnel.up({ path: "direct" });
  tunnel.up({ path: "proxy" });
  tunnel.up({ path: "proxy" });
  tunnel.up({ path: "direct" });
  await backend.probeOnce();
  assert.deepEqual(events.filter((e) => e.type === "path"), [
    { type: "path", id: 7, from: "direct", to: "proxy" },
    { type: "path", id: 7, from: "proxy", to: "direct" },
  ]);
});

Deno.test("Backend gives the tunnel a verify that health-checks through the candidate's sender", async () => {
  const { backend, factory, models } = setup();
  backend.start();
  const verify = factory.last(7).options.verify!;
  const candidate = (req: Http1Request) => models.handle(req, "candidate:");
  assert.equal(await verify(candidate), true);
  assert.equal(models.calls[0].url, "candidate:/v1/models");
  assert.equal(models.calls[0].auth, "Bearer tok-7-secret");
  models.answer = () => new Response("no", { status: 502 });
  assert.equal(await verify(candidate), false);
});

Deno.test("Backend.startLoops() checks every interval and stops on abort", async () => {
  const { backend, factory, models, clock } = setup();
  backend.start();
  factory.last(7).up();
  const ac = new AbortController();
  const loop = backend.startLoops(ac.signal);
  await clock.tick(0);
  const first = checks(models);
  await clock.tick(1000);
  await clock.tick(1000);
  assert.equal(checks(models), first + 2);
  ac.abort();
  await loop;
  await clock.tick(5000);
  assert.equal(checks(models), first + 2);
  assert.equal(clock.pending, 0);
});

Deno.test("Backend.startLoops(): a hanging GPU read neither delays health checks nor piles up", async () => {
  let gpuCalls = 0;
  let finishGpu!: () => void;
  const { backend, factory, models, clock } = setup({
    gpuProbe: () => {
      gpuCalls++;
      return new Promise((resolve) => {
        finishGpu = () => resolve({ ok: true, gpus: [] });
      });
    },
  });
  backend.start();
  factory.last(7).up();
  const ac = new AbortController();
  const loop = backend.startLoops(ac.signal);
  await clock.tick(0);
  const first = checks(models);
  for (let i = 0; i < 3; i++) await clock.tick(1000);
  assert.equal(checks(models), first + 3, "checks kept their interval");
  assert.equal(gpuCalls, 1, "no second nvidia-smi while the first hangs");
  finishGpu();
  await clock.tick(1000);
  assert.equal(gpuCalls, 2, "the next interval reads again");
  ac.abort();
  finishGpu();
  await loop;
});

Deno.test("Backend.start() leaves an ineligible (display-only) backend discovered, with no tunnel", () => {
  const { backend, factory } = setup({}, testSpec(7, { eligible: false, status: "loading" }));
  backend.start();
  assert.equal(backend.state, "discovered");
  assert.equal(factory.opened.length, 0);
  assert.equal(backend.snapshot().vastStatus, "loading");
});

Deno.test("deriveState() and transition(): removed is terminal; same state keeps its since", () => {
  const removed = { name: "removed", since: 1, reason: "closed" } as const;
  assert.equal(transition(removed, { name: "healthy", reason: null }, 5).changed, false);
  const unhealthy = { name: "unhealthy", since: 1, reason: "a" } as const;
  const r = transition(unhealthy, { name: "unhealthy", reason: "b" }, 5);
  assert.deepEqual(r, { status: { name: "unhealthy", since: 1, reason: "b" }, changed: false });
  const running = { ...INITIAL_INPUTS, phase: "running" as const, tunnel: "up" as const };
  assert.equal(
    deriveState({ ...running, drained: true, tunnel: "hostkey-mismatch" }).name,
    "hostkey-mismatch",
  );
  assert.equal(deriveState({ ...running, tunnel: "connecting" }).name, "connecting");
  assert.equal(deriveState({ ...running, tunnel: "connecting", health: true }).name, "unhealthy");
});
