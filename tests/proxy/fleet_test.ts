import assert from "node:assert/strict";
import { Http1Error } from "../../lib/http1/types.ts";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import type { BackendEvent } from "../../lib/proxy/backend.ts";
import type { FleetChange, FleetDiff } from "../../lib/core/fleet_diff.ts";
import { Fleet } from "../../lib/proxy/fleet.ts";
import type { RequestOutcome } from "../../lib/proxy/pool.ts";
import type { BackendSpec } from "../../lib/core/backend_spec.ts";
import { FakeTunnelFactory, fromWebResponse, testSpec } from "../_helpers/fake_tunnel.ts";

const ok: RequestOutcome = {
  status: 200,
  latencyMs: 40,
  transportError: false,
  clientCancelled: false,
};

function setup() {
  const clock = new FakeClock();
  const logger = new MemoryLogger(() => clock.now());
  // Every tunnel comes up at once; /v1/models answers from `served`.
  const factory = new FakeTunnelFactory({
    now: () => clock.now(),
    autoUp: { baseUrl: "http://127.0.0.1:18001" },
    handler: () => fromWebResponse(Response.json({ data: served.models.map((id) => ({ id })) })),
  });
  const served = { models: ["llama-3-8b"] };
  const events: BackendEvent[] = [];
  const fleet = new Fleet({
    tunnelFactory: factory,
    clock,
    logger,
    healthIntervalMs: 5000,
    drainTimeoutMs: 30_000,
    onEvent: (e) => events.push(e),
  });
  return { clock, logger, factory, fleet, events, served };
}

/** A diff; `changed` entries need no `rebuild` hint (the fleet decides that itself). */
const diff = (
  d: Partial<Omit<FleetDiff, "changed">> & { changed?: Omit<FleetChange, "rebuild">[] },
): FleetDiff => ({
  added: [],
  updated: [],
  removed: [],
  ...d,
  changed: (d.changed ?? []).map((c) => ({ ...c, rebuild: false })),
});

/** Lets the immediate checks started by tunnels coming up finish. */
async function settle(clock: FakeClock) {
  await clock.tick(0);
  await flushMicrotasks();
}

Deno.test("Fleet.apply() starts eligible instances and shows ineligible ones without connecting", async () => {
  const { fleet, factory, clock } = setup();
  await fleet.apply(diff({
    added: [testSpec(2), testSpec(1, { eligible: false, status: "loading", dph: 0.25 })],
  }));
  await settle(clock);
  assert.deepEqual(factory.opened.map((t) => t.instanceId), [2]);
  assert.deepEqual(fleet.routable().map((b) => b.id), [2]);
  const snaps = fleet.snapshots();
  assert.deepEqual(snaps.map((s) => [s.id, s.state, s.vastStatus]), [
    [1, "discovered", "loading"],
    [2, "healthy", "running"],
  ]);
  await assert.rejects(
    fleet.get(1)!.send({ method: "GET", target: "/", headers: [], body: null }),
    (e) => e instanceof Http1Error && !e.sent,
  );
  await fleet.drainAll(1000);
});

Deno.test("Fleet.apply() updates display fields in place when the connection is unchanged", async () => {
  const { fleet, factory, clock } = setup();
  const before = testSpec(1);
  await fleet.apply(diff({ added: [before] }));
  await settle(clock);
  const backend = fleet.backend(1);
  const after: BackendSpec = { ...before, label: "mine", dph: 0.75, displayName: "1 renamed" };
  await fleet.apply(diff({ updated: [{ before, after }] }));
  assert.equal(fleet.backend(1), backend); // same owner, same counters
  assert.equal(factory.opened.length, 1); // no new tunnel
  assert.equal(fleet.labelOf(1), "mine");
  assert.equal(fleet.snapshots()[0].dph, 0.75);
  assert.equal(fleet.snapshots()[0].name, "1 renamed");
  assert.equal(fleet.snapshots()[0].state, "healthy");
  await fleet.drainAll(1000);
});

Deno.test("Fleet.apply() rebuilds on a connection change; the old one drains without touching others", async () => {
  const { fleet, factory, clock, events } = setup();
  const before = testSpec(1);
  await fleet.apply(diff({ added: [before, testSpec(2)] }));
  await settle(clock);
  const old = fleet.backend(1)!;
  const other = fleet.backend(2)!;
  const oldRequest = old.acquire();
  const otherRequest = other.acquire();
  const after = { ...before, token: "tok-1-rotated" };
  await fleet.apply(diff({ changed: [{ before, after }] }));
  await settle(clock);
  const fresh = fleet.backend(1)!;
  assert.notEqual(fresh, old);
  assert.equal(factory.opened.filter((t) => t.instanceId === 1).length, 2);
  assert.equal(fresh.upstreamAuth(), "Bearer tok-1-rotated");
  assert.equal(fresh.state, "healthy");
  // The old connection stays open for its request; routing no longer sees it.
  assert.equal(old.state, "draining");
  assert.equal(factory.opened[0].closeCalls.length, 0);
  assert.ok(!fleet.routable().includes(old));
  assert.deepEqual(fleet.routable().map((b) => b.id), [1, 2]);
  // The other backend is untouched.
  assert.equal(other.state, "healthy");
  assert.equal(other.inFlight, 1);
  // The draining backend's request is still traffic (the idle collector must not run under it).
  assert.deepEqual(fleet.traffic(), { finished: 0, inFlight: 2 });
  oldRequest(ok);
  await flushMicrotasks();
  assert.equal(old.state, "removed");
  assert.deepEqual(fleet.traffic(), { finished: 0, inFlight: 1 }, "gone once drained");
  assert.equal(factory.opened[0].closeCalls.length, 1);
  assert.equal(factory.last(2).closeCalls.length, 0);
  otherRequest(ok);
  assert.equal(other.snapshot().requests, 1);
  // Listeners hear the id start over, and nothing from the replaced backend.
  const forOne = events.filter((e) => e.type === "state" && e.id === 1).map((e) =>
    e.type === "state" ? `${e.from}>${e.to}` : ""
  );
  assert.deepEqual(forOne, [
    "discovered>connecting",
    "connecting>healthy",
    "healthy>discovered",
    "discovered>connecting",
    "connecting>healthy",
  ]);
  await fleet.drainAll(1000);
});

Deno.test("Fleet.apply() rebuilds when eligibility changes", async () => {
  const { fleet, factory, clock } = setup();
  const loading = testSpec(1, { eligible: false, status: "loading" });
  await fleet.apply(diff({ added: [loading] }));
  const running = testSpec(1);
  await fleet.apply(diff({ changed: [{ before: loading, after: running }] }));
  await settle(clock);
  assert.equal(factory.opened.length, 1);
  assert.equal(fleet.snapshots()[0].state, "healthy");
  const stopped = testSpec(1, { eligible: false, status: "stopped" });
  await fleet.apply(diff({ changed: [{ before: running, after: stopped }] }));
  await settle(clock);
  assert.equal(factory.opened[0].closeCalls.length, 1);
  assert.deepEqual(fleet.snapshots().map((s) => [s.state, s.vastStatus]), [[
    "discovered",
    "stopped",
  ]]);
  assert.deepEqual(fleet.routable(), []);
  await fleet.drainAll(1000);
});

Deno.test("Fleet.apply() drains a removed backend, then drops it", async () => {
  const { fleet, factory, clock } = setup();
  const spec = testSpec(1);
  await fleet.apply(diff({ added: [spec] }));
  await settle(clock);
  const release = fleet.backend(1)!.acquire();
  await fleet.apply(diff({ removed: [spec] })); // resolves without waiting for the drain
  assert.deepEqual(fleet.snapshots().map((s) => s.state), ["draining"]);
  assert.deepEqual(fleet.routable(), []);
  assert.equal(factory.last(1).closeCalls.length, 0);
  release(ok);
  await flushMicrotasks();
  assert.equal(factory.last(1).closeCalls.length, 1);
  assert.deepEqual(fleet.snapshots(), []);
  assert.equal(fleet.get(1), undefined);
  await fleet.drainAll(1000);
});

Deno.test("Fleet.apply() applies queued diffs in order", async () => {
  const { fleet, factory, clock } = setup();
  const a = testSpec(1);
  const b = { ...a, endpoints: [{ host: "ssh9.vast.ai", port: 2222, path: "proxy" as const }] };
  const p1 = fleet.apply(diff({ added: [a] }));
  const p2 = fleet.apply(diff({ changed: [{ before: a, after: b }] }));
  const p3 = fleet.apply(diff({ added: [testSpec(2)] }));
  await Promise.all([p1, p2, p3]);
  await settle(clock);
  assert.deepEqual(factory.opened.map((t) => [t.instanceId, t.spec.endpoints[0].host]), [
    [1, "203.0.113.7"],
    [1, "ssh9.vast.ai"],
    [2, "203.0.113.7"],
  ]);
  assert.deepEqual(fleet.routable().map((x) => x.id), [1, 2]);
  await fleet.drainAll(1000);
});

Deno.test("Fleet.status() counts backends, health, requests and $/h", async () => {
  const { fleet, clock } = setup();
  await fleet.apply(diff({
    added: [
      testSpec(1, { dph: 0.5 }),
      testSpec(2, { dph: 1.25, eligible: false }),
      testSpec(3, { dph: null }),
    ],
  }));
  await settle(clock);
  const b1 = fleet.backend(1)!;
  b1.acquire()({ ...ok, status: 500 });
  b1.acquire();
  const s = fleet.status({
    version: "0.1.0",
    listen: "127.0.0.1:8080",
    policy: "least-inflight",
    startedAt: 1,
    apiError: null,
  });
  assert.deepEqual(s.counts, { total: 3, healthy: 2, inFlight: 1, requests: 1, errors: 1 });
  assert.equal(s.dph, 1.75);
  assert.equal(s.time, clock.now());
  assert.deepEqual(s.backends.map((b) => b.id), [1, 2, 3]);
  assert.equal(fleet.histograms().get(1)?.count, 1);
  await fleet.drainAll(0);
});

Deno.test("Fleet.drainAll() waits for in-flight requests up to the timeout, then closes every tunnel", async () => {
  const { fleet, factory, clock } = setup();
  await fleet.apply(diff({ added: [testSpec(1), testSpec(2)] }));
  await settle(clock);
  const r1 = fleet.backend(1)!.acquire();
  fleet.backend(2)!.acquire(); // never finishes
  let done = false;
  const drained = fleet.drainAll(10_000).then(() => (done = true));
  await clock.tick(1000);
  r1(ok);
  await flushMicrotasks();
  assert.equal(factory.last(1).closeCalls.length, 1);
  assert.equal(factory.last(2).closeCalls.length, 0);
  assert.equal(done, false);
  await clock.tick(9000);
  await drained;
  assert.equal(factory.last(2).closeCalls.length, 1);
  assert.deepEqual(fleet.snapshots(), []);
  // A diff after shutdown starts nothing.
  await fleet.apply(diff({ added: [testSpec(3)] }));
  assert.equal(factory.opened.length, 2);
  assert.equal(clock.pending, 0);
});

Deno.test("Fleet keeps health loops running on the clock", async () => {
  const { fleet, clock, served } = setup();
  await fleet.apply(diff({ added: [testSpec(1)] }));
  await settle(clock);
  assert.deepEqual(fleet.backend(1)!.models, ["llama-3-8b"]);
  served.models = ["qwen"];
  await clock.tick(5000);
  assert.deepEqual(fleet.backend(1)!.models, ["qwen"]);
  await fleet.drainAll(0);
  assert.equal(clock.pending, 0);
});

Deno.test("Fleet.knownModels() and routable() are cached yet see every change by the next call", async () => {
  const { fleet, clock, served } = setup();
  // What both answered before they were cached: built afresh on each call.
  const fresh = () => {
    const models = new Set<string>();
    for (const s of fleet.snapshots()) for (const m of fleet.backend(s.id)!.models) models.add(m);
    return models;
  };
  const same = () => {
    // As sets: the fleet lists them in its map's order, which snapshots() does not show.
    assert.deepEqual(new Set(fleet.knownModels()), fresh());
    assert.deepEqual(
      fleet.routable().map((b) => b.id),
      fleet.snapshots().filter((s) => fleet.backend(s.id)!.routable).map((s) => s.id),
    );
  };
  same();
  await fleet.apply(diff({ added: [testSpec(2)] }));
  await settle(clock);
  assert.deepEqual([...fleet.knownModels()], ["llama-3-8b"]);
  same();
  // Unchanged fleet: the very same set, not a rebuilt one.
  assert.equal(fleet.knownModels(), fleet.knownModels());
  // A health check that finds another model list.
  served.models = ["qwen", "llama-3-8b"];
  await clock.tick(5000);
  await flushMicrotasks();
  assert.deepEqual([...fleet.knownModels()], ["qwen", "llama-3-8b"]);
  same();
  // A backend added, then a rebuild, then a removal.
  served.models = ["mistral"];
  const one = testSpec(1);
  await fleet.apply(diff({ added: [one] }));
  assert.deepEqual(fleet.snapshots().map((s) => s.id), [1, 2]);
  same();
  await settle(clock);
  assert.deepEqual(new Set(fleet.knownModels()), new Set(["qwen", "llama-3-8b", "mistral"]));
  assert.deepEqual(fleet.routable().map((b) => b.id), [1, 2]);
  same();
  await fleet.apply(diff({ changed: [{ before: one, after: { ...one, token: "rotated" } }] }));
  same();
  await settle(clock);
  same();
  await fleet.apply(diff({ removed: [testSpec(2)] }));
  assert.deepEqual(fleet.routable().map((b) => b.id), [1]);
  same();
  await clock.tick(30_000);
  await flushMicrotasks();
  assert.deepEqual(fleet.snapshots().map((s) => s.id), [1]);
  assert.deepEqual([...fleet.knownModels()], ["mistral"]);
  same();
  // Callers may change what routable() returns without touching the fleet.
  fleet.routable().length = 0;
  assert.deepEqual(fleet.routable().map((b) => b.id), [1]);
  await fleet.drainAll(0);
  same();
});
