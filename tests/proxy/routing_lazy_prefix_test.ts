/**
 * The cache-aware policy's lazy prefix (route_info.ts, cache_aware_policy.ts)
 * against what eager recording gave, and what a kept route holds. Found by
 * a hostile review of the first version (which dropped lone picks past 64,
 * and whose lazy getter kept the whole request alive through the header
 * lookup); kept as the cases it got wrong.
 */
import assert from "node:assert/strict";
import {
  LAZY_PREFIX_BYTES,
  prefixBlocks,
  type RouteInfo,
  routeInfoFor,
} from "../../lib/proxy/route_info.ts";
import { Admission } from "../../lib/proxy/admission.ts";
import { CacheAware } from "../../lib/proxy/cache_aware_policy.ts";
import { pickTarget } from "../../lib/proxy/policies.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";
import { COLLECT, withGc } from "../_helpers/gc_probe.ts";

const gpu4090 = { name: "RTX 4090", count: 1 };

/** Block hashes of conversation `c`: its own blocks, no shared system prompt. */
function conv(c: number, blocks: number): number[] {
  return Array.from({ length: blocks }, (_, k) => 1_000_000 + c * 1000 + k);
}

/**
 * Routes `n` first turns while instance 2 is saturated (the admission queue
 * then hands the policy instance 1 alone), then turn 2 of the first
 * conversation once instance 2 is open again. `eager` reads `entries` after
 * every pick, which records pending lone picks at once: what the eager
 * recording before this change did.
 */
function secondTurnGoesTo(n: number, eager: boolean): number {
  const policy = new CacheAware();
  // Instance 1 has one request in flight: alone that is not a reason to
  // leave a backend holding 80% of the prompt (balance threshold 0.25).
  const a = new FakeTarget(1, { gpu: gpu4090, inFlight: 1 });
  const b = new FakeTarget(2, { gpu: gpu4090 });
  const pool = new FakePool([a, b]);
  let bSaturated = true;
  // Wired as proxy_app.ts wires it, with instance 2's saturation scripted.
  const admission = new Admission({
    saturated: (t) => t.id === 2 && bSaturated,
  });
  const route = (prefix: number[]): RouteInfo => {
    // The prefix behind a getter, as on the relay's lazy routes.
    const r = {};
    Object.defineProperty(r, "prefix", { get: () => prefix, configurable: true });
    return r;
  };
  const admit = (r: RouteInfo): number => {
    const d = admission.admit(pool, r, (targets) => pickTarget(targets, r, { policy }));
    assert.ok(!(d instanceof Promise) && d.ok, "routed at once");
    if (eager) void policy.entries;
    return d.target.id;
  };
  for (let c = 0; c < n; c++) assert.equal(admit(route(conv(c, 4))), 1);
  bSaturated = false;
  // Turn 2 of conversation 0: its 4 blocks, then one new block.
  return admit(route([...conv(0, 4), 42]));
}

// A lone pick is not a lone backend: with the admission queue (on by default
// with cache-aware) every request routed while the other eligible backends
// are saturated is one. However many come in a row, none is forgotten.
Deno.test("affinity of picks made while the other backends were saturated is not lost", () => {
  // Fewer than MAX_PENDING: the lazy record equals the eager one.
  assert.equal(secondTurnGoesTo(10, true), 1);
  assert.equal(secondTurnGoesTo(10, false), 1);
  // 70 conversations while instance 2 was saturated: eager keeps turn 2 of
  // the first on instance 1, which holds 4 of its 5 blocks.
  assert.equal(secondTurnGoesTo(70, true), 1, "eager recording");
  assert.equal(
    secondTurnGoesTo(70, false),
    1,
    "turn 2 must stay on the backend holding its prefix: no lone pick made while the other " +
      "backend was saturated may be dropped from the record",
  );
});

// A route kept for later (CacheAware's pending picks) must hold its body
// and nothing else of the request: a closure made in routeInfoFor's scope
// would also keep its header lookup, and through it the whole Request.
Deno.test("a lazy route keeps nothing of the request but its body", async () => {
  const r = await withGc(`
import { routeInfoFor } from "LIB/proxy/route_info.ts";
${COLLECT}
const keep: unknown[] = [];
function build(prefix: boolean, read: boolean) {
  // Stands for the relay's Request, reached only through the header accessor.
  const req = { big: new Uint8Array(4 << 20) };
  const ref = new WeakRef(req);
  const header = (name: string) => (name === "content-type" && req.big ? "application/json" : null);
  const body = new TextEncoder().encode(JSON.stringify({ prompt: "p".repeat(300) }));
  const route = routeInfoFor(header, body, null, undefined, { prefix });
  if (read) keep.push(route.prefix);
  keep.push(route); // the route lives on (CacheAware's pending list)
  return ref;
}
const noPrefix = build(false, false);
const lazy = build(true, false);
const lazyRead = build(true, true);
await collect();
console.log(JSON.stringify({
  noPrefix: noPrefix.deref() ? 1 : 0,
  lazy: lazy.deref() ? 1 : 0,
  lazyRead: lazyRead.deref() ? 1 : 0,
  kept: keep.length,
}));
`);
  assert.equal(r.noPrefix, 0, "control: a route without the prefix keeps no request");
  assert.deepEqual(
    { lazy: r.lazy, lazyRead: r.lazyRead },
    { lazy: 0, lazyRead: 0 },
    "a lazy route (read or not) keeps alive the request its header accessor reads (1 = kept)",
  );
});

// The same, end to end: one backend, cache-aware, the requests answered and
// their responses read: no pending pick keeps its Request alive.
Deno.test("a one-backend cache-aware fleet keeps no answered Request alive", async () => {
  const r = await withGc(`
import { createHandler } from "LIB/proxy/relay.ts";
import { createPolicy } from "LIB/proxy/policies.ts";
import { FakePool, FakeTarget } from "TESTS/_helpers/fake_pool.ts";
${COLLECT}
const keep: unknown[] = [];
async function run(name: "least-inflight" | "cache-aware") {
  const t = new FakeTarget(1);
  t.sender = () => Promise.resolve({
    status: 200,
    statusText: "OK",
    headers: [["content-type", "application/json"], ["content-length", "2"]],
    body: new TextEncoder().encode("{}"),
  });
  const policy = createPolicy(name);
  const h = createHandler({
    pool: new FakePool([t]),
    policy,
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1 << 20,
    onRequestLog: () => {},
  });
  keep.push(h, t, policy);
  const refs: WeakRef<object>[] = [];
  // One function per request, so no frame of this one holds a Request.
  const one = async (i: number) => {
    const req = new Request("http://proxy.test/v1/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "fake-model", prompt: "x".repeat(300) + i }),
    });
    refs.push(new WeakRef(req));
    const res = await h(req);
    await res.arrayBuffer();
  };
  for (let i = 0; i < 8; i++) await one(i);
  // A request of another client last, as in a server: the last Request may
  // stay referenced by what the handler touched last.
  await one(99);
  await collect();
  return refs.slice(0, 8).filter((w) => w.deref() !== undefined).length;
}
const control = await run("least-inflight");
const cacheAware = await run("cache-aware");
console.log(JSON.stringify({ control, cacheAware }));
`);
  assert.equal(r.control, 0, "control: least-inflight keeps no Request");
  assert.equal(
    r.cacheAware,
    0,
    `cache-aware kept ${r.cacheAware} of 8 answered Requests alive (its pending lone picks)`,
  );
});

// Every route with a prefix to make later has the same shape, with fast
// properties: a getter defined on each route made each one a dictionary-mode
// object, slower to build and to read in every routing step.
Deno.test("routes with a lazy prefix share one shape with fast properties", async () => {
  const r = await withGc(
    `
import { routeInfoFor } from "LIB/proxy/route_info.ts";
const fast = new Function("r", "return %HasFastProperties(r)");
const same = new Function("a", "b", "return %HaveSameMap(a, b)");
const header = (n: string) => (n === "content-type" ? "application/json" : null);
const routes = [1, 2, 3].map((i) =>
  routeInfoFor(header, new TextEncoder().encode(JSON.stringify({ prompt: "q".repeat(100 * i) })), null, new Set(["m"]), { prefix: true })
);
console.log(JSON.stringify({
  fast: routes.every((x) => fast(x)) ? 1 : 0,
  same: same(routes[0], routes[1]) && same(routes[1], routes[2]) ? 1 : 0,
}));
`,
    "--allow-natives-syntax",
  );
  assert.deepEqual(r, { fast: 1, same: 1 });
});

const jsonType = (n: string) => (n === "content-type" ? "application/json" : null);

// What a kept route holds is its body's whole buffer: a small body that is a
// view of a large read buffer (a chunked body's piece, a lone streamed chunk)
// has its prefix made at once, so the route never keeps that buffer.
Deno.test("a small body viewing a large buffer is read at once, not kept by the route", () => {
  const prompt = "p".repeat(300);
  const bytes = new TextEncoder().encode(JSON.stringify({ prompt }));
  const backing = new Uint8Array(64 * 1024);
  backing.set(bytes);
  const body = backing.subarray(0, bytes.byteLength);
  assert.ok(body.byteLength <= LAZY_PREFIX_BYTES && backing.byteLength > LAZY_PREFIX_BYTES);
  // knownModels of one model: no parse for the model, so the route keeps the body itself.
  const route = routeInfoFor(jsonType, body, null, new Set(["m"]), { prefix: true });
  // The connection's buffer is done with; were the route's prefix made (or
  // the body copied) at the call, this changes nothing.
  backing.fill(0x20);
  assert.deepEqual(
    route.prefix,
    prefixBlocks(prompt),
    "a route must not read its prefix later through a view of a 64 KiB buffer",
  );
});
