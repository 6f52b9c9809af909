import assert from "node:assert/strict";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import { Admission, type AdmissionResult } from "../../lib/proxy/admission.ts";
import { pickTarget, RoundRobin } from "../../lib/proxy/policies.ts";
import type { RouteTarget } from "../../lib/proxy/pool.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";

/** Saturated at 2 in flight. */
const full = (t: RouteTarget, extra: number) => t.inFlight + extra >= 2;

function setup(opts: { maxQueue?: number; timeoutMs?: number } = {}) {
  const clock = new FakeClock();
  const a = new FakeTarget(1, { inFlight: 2 });
  const b = new FakeTarget(2, { inFlight: 2 });
  const pool = new FakePool([a, b]);
  const adm = new Admission({ saturated: full, clock, ...opts });
  const policies = { policy: new RoundRobin() };
  const admit = (signal?: AbortSignal) =>
    adm.admit(pool, {}, (ts) => pickTarget(ts, {}, policies), signal);
  return { clock, a, b, adm, admit };
}

const idOf = (r: AdmissionResult) => (r.ok ? r.target.id : r.code);

Deno.test("Admission.admit() routes at once while a backend has room", async () => {
  const { a, admit, adm } = setup();
  a.baseLoad = 1;
  assert.equal(idOf(await admit()), 1);
  assert.equal(adm.stats().queued, 0);
});

Deno.test("Admission holds requests FIFO and binds each to the backend that frees first", async () => {
  const { a, b, adm, admit } = setup();
  const order: string[] = [];
  const p1 = Promise.resolve(admit()).then((r) => order.push(`r1→${idOf(r)}`));
  const p2 = Promise.resolve(admit()).then((r) => order.push(`r2→${idOf(r)}`));
  await flushMicrotasks();
  assert.equal(adm.stats().depth, 2);
  b.baseLoad = 1; // backend 2 frees a slot
  adm.wake();
  await flushMicrotasks();
  // One slot freed, one request bound: r2 does not follow r1 onto backend 2.
  assert.deepEqual(order, ["r1→2"]);
  b.baseLoad = 2; // the relay's acquire
  a.baseLoad = 1;
  adm.wake();
  await Promise.all([p1, p2]);
  assert.deepEqual(order, ["r1→2", "r2→1"]);
  assert.equal(adm.stats().depth, 0);
  assert.equal(adm.stats().waits.count, 2);
});

Deno.test("Admission polls, so capacity freed by others' requests is noticed without a wake", async () => {
  const { clock, a, admit } = setup();
  const r = Promise.resolve(admit());
  await flushMicrotasks();
  a.baseLoad = 0;
  await clock.tick(250);
  assert.equal(idOf(await r), 1);
});

Deno.test("Admission answers server_busy with Retry-After after the deadline", async () => {
  const { clock, adm, admit } = setup({ timeoutMs: 1000 });
  const r = Promise.resolve(admit());
  await clock.tick(999);
  assert.equal(adm.stats().depth, 1);
  await clock.tick(1);
  const res = await r;
  assert.deepEqual(res, { ok: false, code: "server_busy", reason: "timeout" });
  assert.equal(adm.stats().timedOut, 1);
  const http = adm.busyResponse("timeout");
  assert.equal(http.status, 503);
  assert.equal(http.headers.get("retry-after"), "2");
  assert.equal((await http.json()).error.code, "server_busy");
});

Deno.test("Admission answers server_busy at once when the queue is full", async () => {
  const { adm, admit } = setup({ maxQueue: 2 });
  void admit();
  void admit();
  await flushMicrotasks();
  assert.deepEqual(await admit(), { ok: false, code: "server_busy", reason: "queue_full" });
  assert.equal(adm.stats().rejected, 1);
  assert.equal(adm.busyResponse("queue_full").headers.get("retry-after"), "2");
});

Deno.test("Admission drops a held request whose client left", async () => {
  const { adm, admit, clock } = setup();
  const ac = new AbortController();
  const r = Promise.resolve(admit(ac.signal));
  await flushMicrotasks();
  ac.abort();
  assert.deepEqual(await r, { ok: false, code: "client_cancelled" });
  assert.equal(adm.stats().depth, 0);
  await clock.tick(60_000); // its deadline timer is gone too
  assert.equal(adm.stats().timedOut, 0);
});

Deno.test("Admission does not hold pinned requests or eligibility errors", async () => {
  const clock = new FakeClock();
  const a = new FakeTarget(1, { inFlight: 5, models: ["m"] });
  const pool = new FakePool([a]);
  const adm = new Admission({ saturated: full, clock });
  const policies = { policy: new RoundRobin() };
  const pin = await adm.admit(
    pool,
    { pinnedId: 1 },
    (ts) => pickTarget(ts, { pinnedId: 1 }, policies),
  );
  assert.equal(idOf(pin), 1);
  const other = new FakeTarget(2, { models: ["x"] });
  const pool2 = new FakePool([a, other]);
  const route = { model: "nope" };
  const r = await adm.admit(pool2, route, (ts) => pickTarget(ts, route, policies));
  assert.equal(idOf(r), "model_not_found");
});

Deno.test("Admission takes the signal as a function, asked for only when the request is held", async () => {
  const clock = new FakeClock();
  const a = new FakeTarget(1, { inFlight: 1 });
  const pool = new FakePool([a]);
  const adm = new Admission({ saturated: full, clock });
  const policies = { policy: new RoundRobin() };
  let asked = 0;
  const ctl = new AbortController();
  const signal = () => {
    asked++;
    return ctl.signal;
  };
  const admit = () => adm.admit(pool, {}, (ts) => pickTarget(ts, {}, policies), signal);
  assert.equal(idOf(await admit()), 1);
  assert.equal(asked, 0, "routed at once: no signal made");
  a.baseLoad = 2;
  const held = Promise.resolve(admit());
  await flushMicrotasks();
  assert.equal(asked, 1);
  assert.equal(adm.stats().depth, 1);
  ctl.abort();
  assert.equal(
    idOf(await held),
    "client_cancelled",
    "the function's signal cancels as a signal does",
  );
  assert.equal(adm.stats().depth, 0);
});
