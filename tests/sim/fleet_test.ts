/**
 * The simulated fleet behind the real proxy wiring (`startProxy`): it scales
 * to 32 instances, offers direct and proxy SSH paths, and its events (engine
 * crash, SSH blip, instance added or vanished) move backends through the
 * states a user would see. The fleet's own time is a FakeClock, so restarts
 * and returns happen exactly when the test says.
 */
import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import type { BackendSnapshot } from "../../lib/proxy/snapshot.ts";
import { type RunningProxy, startProxy } from "../../lib/app/proxy_app.ts";
import { Chaos, type ChaosTarget, type SimEvent } from "../../lib/sim/chaos.ts";
import { type SimFleet, startSimFleet } from "../../lib/sim/fleet.ts";
import { eventually } from "../_helpers/e2e_fleet.ts";
import { testServeConfig, testTunnelFactory } from "../_helpers/config.ts";

interface World {
  sim: SimFleet;
  proxy: RunningProxy;
  clock: FakeClock;
  events: SimEvent[];
  logger: MemoryLogger;
  backend(id: number): BackendSnapshot | undefined;
  close(): Promise<void>;
}

/** A sim fleet on a FakeClock behind a real proxy with short, test-sized timings. */
async function startWorld(
  opts: { instances: number; loading?: number; chaos?: boolean; random?: () => number },
): Promise<World> {
  const clock = new FakeClock();
  const events: SimEvent[] = [];
  const sim = await startSimFleet({
    ...opts,
    clock,
    loadingMs: [1_000, 1_000],
    tokenDelayMs: [0, 1],
    onEvent: (e) => events.push(e),
  });
  const logger = new MemoryLogger();
  const config = testServeConfig({
    apiKey: sim.apiKey,
    apiUrl: sim.apiUrl,
    sshKeys: [sim.clientKeyPath],
    knownHosts: sim.knownHostsPath,
    pollIntervalMs: 200,
  });
  const tunnelFactory = testTunnelFactory(sim.clientKeyPath, sim.knownHostsPath, {
    logger,
    keepaliveIntervalMs: 1_000,
    keepaliveCountMax: 3,
  });
  let proxy: RunningProxy;
  try {
    proxy = await startProxy(config, { logger, tunnelFactory });
  } catch (err) {
    await sim.close();
    throw err;
  }
  return {
    sim,
    proxy,
    clock,
    events,
    logger,
    backend: (id) => proxy.status().backends.find((b) => b.id === id),
    async close() {
      await proxy.shutdown(500);
      await sim.close();
    },
  };
}

function healthy(w: World): number {
  return w.proxy.status().counts.healthy;
}

function describe(w: World): string {
  return w.proxy.status().backends.map((b) => `${b.id}:${b.state}(${b.reason ?? ""})`).join(" ");
}

Deno.test("startSimFleet() with 32 instances becomes healthy behind startProxy, both SSH paths", async () => {
  const started = performance.now();
  const w = await startWorld({ instances: 32, loading: 1 });
  try {
    assert.ok(performance.now() - started < 5_000, "32 instances start in parallel, fast");
    const loadingId = w.sim.instances.at(-1)!.id;
    await eventually(`31 healthy: ${describe(w)}`, () => healthy(w) === 31, 20_000);
    // The loading instance is listed but not proxied until it runs.
    assert.equal(w.proxy.status().counts.total, 32);
    assert.equal(w.backend(loadingId)?.vastStatus, "loading");

    await w.clock.tick(1_000);
    assert.deepEqual(w.events, [{ type: "instance-running", id: loadingId }]);
    await eventually(`32 healthy: ${describe(w)}`, () => healthy(w) === 32, 10_000);

    const backends = w.proxy.status().backends;
    const paths = new Set(backends.map((b) => b.ssh));
    assert.deepEqual([...paths].sort(), ["direct", "proxy"]);
    for (const inst of w.sim.instances) {
      assert.equal(w.backend(inst.id)?.ssh, inst.path, `instance ${inst.id} path`);
    }
    // Varied hardware and engines, as the demo table should show.
    assert.ok(new Set(backends.map((b) => b.gpuLabel)).size >= 5);
    assert.deepEqual(
      new Set(backends.map((b) => b.engine)),
      new Set(["vllm", "sglang", "llama.cpp"]),
    );
    // GPU metrics arrive over the same SSH connections.
    await eventually(
      "GPU metrics",
      () => {
        const all = w.proxy.status().backends;
        return all.length === 32 && all.every((b) => b.gpus.length > 0);
      },
    );

    const res = await fetch(`${w.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        model: "Qwen/Qwen3-8B",
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      }),
    });
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /"content":" quick"/);
    assert.match(text, /data: \[DONE\]/);
  } finally {
    await w.close();
  }
});

Deno.test("SimFleet chaos on a FakeClock: an engine crash makes its backend unhealthy, then healthy again", async () => {
  // Draws before start-up completes answer 0.5; then the test scripts them.
  const script: number[] = [];
  const random = () => script.shift() ?? 0.5;
  const w = await startWorld({ instances: 3, chaos: true, random });
  try {
    await eventually(`3 healthy: ${describe(w)}`, () => healthy(w) === 3);
    const target = w.sim.instances[0];
    // kind 0 → engine-crash; pick 0 → first candidate; down 0.5 → 15 s.
    script.push(0, 0, 0.5);
    // Chaos waits 20–40 s between events (0.5 → 30 s).
    await w.clock.tick(30_000);
    await eventually("crash event", () => w.events.length === 1);
    assert.deepEqual(w.events[0], { type: "engine-crashed", id: target.id, restartInMs: 15_000 });
    assert.equal(target.engineUp, false);
    await eventually(
      `instance ${target.id} unhealthy: ${describe(w)}`,
      () => w.backend(target.id)?.state === "unhealthy",
    );
    assert.equal(healthy(w), 2);

    await w.clock.tick(14_999);
    assert.equal(target.engineUp, false, "not restarted before its time");
    await w.clock.tick(1);
    await eventually("restart event", () => w.events.length === 2);
    assert.deepEqual(w.events[1], { type: "engine-restarted", id: target.id });
    await eventually(
      `instance ${target.id} healthy again: ${describe(w)}`,
      () => w.backend(target.id)?.state === "healthy",
    );
  } finally {
    await w.close();
  }
});

Deno.test("SimFleet.ops: SSH drop reconnects, vanish and add go through the proxy's fleet", async () => {
  const w = await startWorld({ instances: 3 });
  try {
    await eventually(`3 healthy: ${describe(w)}`, () => healthy(w) === 3);
    const [a, b] = w.sim.instances;

    w.sim.ops.dropSsh(a.id);
    assert.equal(w.events[0].type, "ssh-dropped");
    // The loss marks the backend down at once (it may be back before a poll sees it).
    const leftHealthy = () =>
      w.logger.records.some((r) => r.fields.id === a.id && r.fields.from === "healthy");
    await eventually("the drop is seen", leftHealthy, 5_000);
    await eventually(`reconnected: ${describe(w)}`, () => w.backend(a.id)?.state === "healthy");

    w.sim.ops.vanish(b.id, 10_000);
    assert.equal(b.listed, false);
    // Two listings without it (200 ms polls) remove it from the proxy.
    await eventually(`${b.id} removed: ${describe(w)}`, () => w.backend(b.id) === undefined);
    await w.clock.tick(10_000);
    assert.equal(b.listed, true);
    await eventually(`${b.id} back: ${describe(w)}`, () => w.backend(b.id)?.state === "healthy");

    const added = await w.sim.ops.addInstance(2_000);
    await eventually(
      "new instance listed as loading",
      () => w.backend(added.id)?.vastStatus === "loading",
    );
    await w.clock.tick(2_000);
    await eventually(
      `${added.id} healthy: ${describe(w)}`,
      () => w.backend(added.id)?.state === "healthy",
    );
    assert.equal(w.sim.instances.length, 4);
    assert.deepEqual(w.events.map((e) => e.type), [
      "ssh-dropped",
      "instance-vanished",
      "instance-back",
      "instance-added",
      "instance-running",
    ]);
  } finally {
    await w.close();
  }
});

/** A ChaosTarget that records calls. */
function recordingTarget(ids: number[], canAdd = true) {
  const calls: string[] = [];
  const target: ChaosTarget = {
    candidates: () => ids,
    canAdd: () => canAdd,
    crashEngine: (id, ms) => Promise.resolve(void calls.push(`crash ${id} ${ms}`)),
    dropSsh: (id) => void calls.push(`drop ${id}`),
    addInstance: (ms) => Promise.resolve({ id: calls.push(`add ${ms}`) }),
    vanish: (id, ms) => void calls.push(`vanish ${id} ${ms}`),
  };
  return { target, calls };
}

Deno.test("Chaos.step() picks events by weight, caps growth and spares the last instance", async () => {
  const clock = new FakeClock();
  const script: number[] = [];
  const random = () => script.shift() ?? 0;
  const { target, calls } = recordingTarget([1, 2, 3, 4]);
  const chaos = new Chaos({ target, clock, random });
  // kind draw, then (id draw, duration draw) as the kind needs.
  script.push(0.1, 0.99, 0); // crash, last id, shortest down time
  assert.equal(await chaos.step(), "engine-crash");
  script.push(0.5, 0.25); // ssh drop of the second id
  assert.equal(await chaos.step(), "ssh-drop");
  script.push(0.7, 1); // add, longest load
  assert.equal(await chaos.step(), "add-instance");
  script.push(0.9, 0.5, 0); // vanish third id, shortest time away
  assert.equal(await chaos.step(), "vanish");
  assert.deepEqual(calls, ["crash 4 10000", "drop 2", "add 20000", "vanish 3 30000"]);

  const capped = recordingTarget([7, 8], false);
  script.push(0.7, 0, 1);
  assert.equal(await new Chaos({ target: capped.target, clock, random }).step(), "vanish");
  assert.deepEqual(capped.calls, ["vanish 7 45000"]);

  const lonely = recordingTarget([9]);
  script.push(0.1);
  assert.equal(await new Chaos({ target: lonely.target, clock, random }).step(), null);
  assert.deepEqual(lonely.calls, []);
});

Deno.test("Chaos.start() waits 20–40 s between events and stops on abort", async () => {
  const clock = new FakeClock();
  const { target, calls } = recordingTarget([1, 2]);
  const draws = [0, 0.5, 0, 0]; // interval 20 s, ssh drop, first id, then interval 20 s
  const chaos = new Chaos({ target, clock, random: () => draws.shift() ?? 0.5 });
  const stop = new AbortController();
  const run = chaos.start(stop.signal);
  await clock.tick(19_999);
  assert.deepEqual(calls, []);
  await clock.tick(1);
  assert.deepEqual(calls, ["drop 1"]);
  stop.abort();
  await run;
  assert.equal(clock.pending, 0);
});
