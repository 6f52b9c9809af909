import assert from "node:assert/strict";
import fc from "fast-check";
import {
  createPolicy,
  eligibleFor,
  LeastInFlight,
  pickTarget,
  type Policy,
  Rendezvous,
  rendezvousScore,
  RoundRobin,
} from "../../lib/proxy/policies.ts";
import {
  LAZY_PREFIX_BYTES,
  MAX_PREFIX_BLOCKS,
  prefixBlocks,
  routeInfoFor,
} from "../../lib/proxy/route_info.ts";
import { SglangCacheAware } from "../../bench/_sglang_cache_aware.ts";
import { FakeTarget } from "../_helpers/fake_pool.ts";

const targets = (...ids: number[]) => ids.map((id) => new FakeTarget(id));

const factories: [string, () => Policy][] = [
  ["round-robin", () => createPolicy("round-robin")],
  ["least-inflight", () => createPolicy("least-inflight")],
  ["rendezvous", () => createPolicy("rendezvous")],
  ["cache-aware", () => createPolicy("cache-aware")],
  ["sglang-cache-aware (bench baseline)", () => new SglangCacheAware({ seed: 1 })],
];

// One contract, every policy (STYLE.md §7).
for (const [name, make] of factories) {
  Deno.test(`${name}.select() returns a candidate, never a non-candidate, undefined on empty`, () => {
    const policy = make();
    assert.equal(policy.select([], {}), undefined);
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: 1_000_000 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(5), { minLength: 12, maxLength: 12 }),
        fc.option(fc.string(), { nil: undefined }),
        fc.array(fc.nat(2 ** 40), { maxLength: 8 }),
        (ids, loads, key, prefix) => {
          const cands = ids.map((id, i) => new FakeTarget(id, { inFlight: loads[i] }));
          const route = key === undefined ? {} : { stickyKey: key };
          const picked = policy.select(cands, prefix.length ? { ...route, prefix } : route);
          assert.ok(picked !== undefined && cands.includes(picked as FakeTarget));
        },
      ),
    );
  });
}

Deno.test("createPolicy() maps names and rejects unknown ones", () => {
  assert.ok(createPolicy("round-robin") instanceof RoundRobin);
  assert.ok(createPolicy("least-inflight") instanceof LeastInFlight);
  assert.ok(createPolicy("rendezvous") instanceof Rendezvous);
  // deno-lint-ignore no-explicit-any
  assert.throws(() => createPolicy("random" as any), /round-robin, least-inflight or cache-aware/);
});

Deno.test("RoundRobin.select() distributes 30 requests 10/10/10 in id order", () => {
  const rr = new RoundRobin();
  const cands = targets(30, 10, 20); // pool order must not matter
  const picks = Array.from({ length: 30 }, () => rr.select(cands)!.id);
  assert.deepEqual(picks.slice(0, 6), [10, 20, 30, 10, 20, 30]);
  for (const id of [10, 20, 30]) assert.equal(picks.filter((p) => p === id).length, 10);
});

Deno.test("LeastInFlight.select() picks the least loaded under skew", () => {
  const p = new LeastInFlight();
  const [a, b, c] = [
    new FakeTarget(1, { inFlight: 5 }),
    new FakeTarget(2, { inFlight: 0 }),
    new FakeTarget(3, { inFlight: 9 }),
  ];
  for (let i = 0; i < 5; i++) assert.equal(p.select([a, b, c], {})!.id, 2);
  b.baseLoad = 6;
  assert.equal(p.select([a, b, c], {})!.id, 1);
});

Deno.test("LeastInFlight.select() rotates among tied candidates", () => {
  const p = new LeastInFlight();
  const cands = [
    new FakeTarget(3, { inFlight: 1 }),
    new FakeTarget(1, { inFlight: 1 }),
    new FakeTarget(2, { inFlight: 4 }),
  ];
  const picks = Array.from({ length: 6 }, () => p.select(cands, {})!.id);
  assert.deepEqual(picks, [1, 3, 1, 3, 1, 3]);
});

Deno.test("Rendezvous.select() is deterministic across policy instances", () => {
  const cands = targets(101, 202, 303, 404);
  for (let k = 0; k < 200; k++) {
    const route = { stickyKey: `session-${k}` };
    assert.equal(
      new Rendezvous().select(cands, route),
      new Rendezvous().select([...cands].reverse(), route),
    );
  }
});

// Two replicas (or two versions of vastproxy after an upgrade) must send a
// session to the same backend, so the hash is part of the contract: these
// values are pinned, and changing the hash function, a constant or the way
// key and id are joined fails here rather than silently reshuffling sessions.
Deno.test("rendezvousScore() returns the pinned 64-bit values", () => {
  assert.equal(rendezvousScore("abc", 1), 0xd8e421d481c5f681n);
  assert.equal(rendezvousScore("abc", 2), 0xa0126c4838bce1den);
  assert.equal(rendezvousScore("", 101), 0x57ce21538044745fn);
  assert.equal(rendezvousScore("ü🐇", 31337101), 0x286a931d75696f21n); // UTF-8 bytes, not UTF-16
});

Deno.test("Rendezvous.select() sends pinned keys to pinned backends", () => {
  const cands = targets(101, 202, 303, 404);
  const expected: Record<string, number> = {
    alice: 404,
    bob: 101,
    carol: 404,
    dave: 404,
    erin: 101,
    frank: 303,
    "session-0": 101,
    "session-1": 303,
    "": 202,
    "ü🐇": 303,
  };
  for (const [key, id] of Object.entries(expected)) {
    assert.equal(new Rendezvous().select(cands, { stickyKey: key })!.id, id, `key "${key}"`);
    assert.equal(new Rendezvous().select([...cands].reverse(), { stickyKey: key })!.id, id);
  }
});

Deno.test("Rendezvous.select() moves only the removed backend's keys, and spreads keys", () => {
  const all = targets(11, 22, 33, 44, 55);
  const p = new Rendezvous();
  const keys = Array.from({ length: 1000 }, (_, i) => `user-${i}`);
  const before = new Map(keys.map((k) => [k, p.select(all, { stickyKey: k })!.id]));
  const counts = new Map<number, number>();
  for (const id of before.values()) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const t of all) {
    assert.ok(counts.get(t.id)! > 120, `backend ${t.id} got ${counts.get(t.id)} keys`);
  }

  const without33 = all.filter((t) => t.id !== 33);
  for (const k of keys) {
    const after = p.select(without33, { stickyKey: k })!.id;
    if (before.get(k) !== 33) assert.equal(after, before.get(k), `key ${k} moved`);
    else assert.notEqual(after, 33);
  }
});

Deno.test("eligibleFor() keeps only backends serving the model", () => {
  const a = new FakeTarget(1, { models: ["llama"] });
  const b = new FakeTarget(2, { models: ["qwen"] });
  const c = new FakeTarget(3, { models: ["qwen", "llama"] });
  const r = eligibleFor([a, b, c], { model: "qwen" });
  assert.ok(r.ok);
  assert.deepEqual(r.targets.map((t) => t.id), [2, 3]);
  assert.deepEqual(eligibleFor([a, b], { model: "gpt-4" }), { ok: false, code: "model_not_found" });
  const all = eligibleFor([a, b], {});
  assert.ok(all.ok && all.targets.length === 2);
  assert.deepEqual(eligibleFor([], { model: "qwen" }), { ok: false, code: "no_healthy_backend" });
});

Deno.test("eligibleFor() passes an unknown model through when the fleet serves one model", () => {
  const a = new FakeTarget(1, { models: ["llama"] });
  const b = new FakeTarget(2, { models: ["llama"] });
  const r = eligibleFor([a, b], { model: "gpt-4" });
  assert.ok(r.ok);
  assert.deepEqual(r.targets.map((t) => t.id), [1, 2]);
});

Deno.test("eligibleFor() answers 503, not 404, for a model whose only servers are down", () => {
  const qwen = new FakeTarget(2, { models: ["qwen"] });
  const mistral = new FakeTarget(3, { models: ["mistral"] });
  // llama's backend is in the fleet but unhealthy: it is known, not routable.
  const known = new Set(["llama", "qwen", "mistral"]);
  assert.deepEqual(eligibleFor([qwen, mistral], { model: "llama", knownModels: known }), {
    ok: false,
    code: "no_healthy_backend",
  });
  // A one-model routable set does not swallow a known model served elsewhere.
  assert.deepEqual(
    eligibleFor([qwen], { model: "llama", knownModels: new Set(["llama", "qwen"]) }),
    {
      ok: false,
      code: "no_healthy_backend",
    },
  );
  // Unknown everywhere, several models: still 404.
  assert.deepEqual(eligibleFor([qwen, mistral], { model: "gpt-9", knownModels: known }), {
    ok: false,
    code: "model_not_found",
  });
});

Deno.test("pickTarget() honours a routable pin, else falls back to the policy", () => {
  const a = new FakeTarget(1);
  const b = new FakeTarget(2);
  const c = new FakeTarget(3, { routable: false });
  const policies = { policy: new RoundRobin(), sticky: new Rendezvous() };
  for (let i = 0; i < 3; i++) {
    const d = pickTarget([a, b], { pinnedId: 2, stickyKey: "x" }, policies);
    assert.ok(d.ok && d.target.id === 2);
  }
  // 3 is not routable (not in the list) and 99 does not exist: policy decides.
  const picks = [3, 99, 3, 99].map((pin) => {
    const d = pickTarget([a, b], { pinnedId: pin }, policies);
    assert.ok(d.ok);
    return d.target.id;
  });
  assert.deepEqual(picks, [1, 2, 1, 2]);
  void c;
});

Deno.test("pickTarget() applies sticky before the policy and avoids tried backends", () => {
  const all = targets(1, 2, 3);
  const policies = { policy: new RoundRobin(), sticky: new Rendezvous() };
  const first = pickTarget(all, { stickyKey: "s1" }, policies);
  const again = pickTarget(all, { stickyKey: "s1" }, policies);
  assert.ok(first.ok && again.ok && first.target === again.target);
  const retry = pickTarget(all, { stickyKey: "s1" }, policies, new Set([first.target.id]));
  assert.ok(retry.ok && retry.target !== first.target);
  // A pinned backend that already failed is not retried while others exist.
  const pinnedRetry = pickTarget(all, { pinnedId: 2 }, policies, new Set([2]));
  assert.ok(pinnedRetry.ok && pinnedRetry.target.id !== 2);
  // Only one backend: it may be tried again.
  const only = pickTarget(targets(7), {}, policies, new Set([7]));
  assert.ok(only.ok && only.target.id === 7);
});

Deno.test("routeInfoFor() collects model, sticky key and pin", () => {
  const headers = new Headers({
    "content-type": "application/json",
    "x-session-id": "abc",
    "x-vastproxy-instance": "42",
  });
  const body = new TextEncoder().encode('{"model":"m"}');
  assert.deepEqual(routeInfoFor(headers, body, "X-Session-ID"), {
    model: "m",
    stickyKey: "abc",
    pinnedId: 42,
  });
  headers.set("x-vastproxy-instance", "not-a-number");
  assert.deepEqual(routeInfoFor(headers, null, null), {});
});

Deno.test("routeInfoFor() extracts cumulative prefix blocks only when asked, from one parse", () => {
  const headers = new Headers({ "content-type": "application/json" });
  const sys = "You are a careful assistant. ".repeat(10); // 290 chars
  const body = (user: string) =>
    new TextEncoder().encode(JSON.stringify({
      model: "m",
      messages: [{ role: "system", content: sys }, { role: "user", content: user }],
    }));
  assert.equal(routeInfoFor(headers, body("hi"), null).prefix, undefined);
  const a = routeInfoFor(headers, body("x".repeat(200)), null, undefined, { prefix: true });
  const b = routeInfoFor(headers, body("y".repeat(200)), null, undefined, { prefix: true });
  assert.equal(a.model, "m");
  // 2 + 6 + 290 + 4 + 200 = 502 chars: 7 full blocks; the first 4 are system prompt only.
  assert.equal(a.prefix!.length, 7);
  assert.deepEqual(a.prefix!.slice(0, 4), b.prefix!.slice(0, 4));
  assert.notEqual(a.prefix![4], b.prefix![4]);
  // Block hashes are cumulative: same block text after a different prefix hashes differently.
  const p1 = prefixBlocks("a".repeat(64) + "c".repeat(64));
  const p2 = prefixBlocks("b".repeat(64) + "c".repeat(64));
  assert.notEqual(p1[1], p2[1]);
  assert.ok(p1.every((h) => Number.isSafeInteger(h) && h >= 0));
  // Bounded: never more than MAX_PREFIX_BLOCKS.
  const huge = routeInfoFor(headers, body("z".repeat(100_000)), null, undefined, { prefix: true });
  assert.equal(huge.prefix!.length, MAX_PREFIX_BLOCKS);
  // `prompt` bodies too; non-JSON bodies carry none.
  const completion = new TextEncoder().encode(JSON.stringify({ prompt: "q".repeat(130) }));
  assert.equal(
    routeInfoFor(headers, completion, null, undefined, { prefix: true }).prefix!.length,
    2,
  );
  const form = new Headers({ "content-type": "application/x-www-form-urlencoded" });
  const formBody = new TextEncoder().encode("model=m2");
  assert.deepEqual(routeInfoFor(form, formBody, null, undefined, { prefix: true }), {
    model: "m2",
  });
});

Deno.test("routeInfoFor() leaves a small body's prefix unread until asked, and reads a large one at once", () => {
  const enc = new TextEncoder();
  const headers = (name: string) => name === "content-type" ? "application/json" : null;
  const prompt = "p".repeat(200);
  const small = enc.encode(JSON.stringify({ prompt }));
  const route = routeInfoFor(headers, small, null, new Set(["m"]), { prefix: true });
  assert.deepEqual(Object.keys(route), ["knownModels"], "the prefix is no own key");
  small.fill(0x20); // were it parsed already, this would change nothing: it is read on first get
  assert.equal(route.prefix, undefined);
  const again = routeInfoFor(headers, enc.encode(JSON.stringify({ prompt })), null, undefined, {
    prefix: true,
  });
  assert.deepEqual(again.prefix, prefixBlocks(prompt));
  assert.equal(again.prefix, again.prefix, "made once");
  // Over LAZY_PREFIX_BYTES: parsed now, so a route kept for later holds no large upload.
  const big = enc.encode(JSON.stringify({ prompt, pad: "x".repeat(LAZY_PREFIX_BYTES) }));
  const eager = routeInfoFor(headers, big, null, new Set(["m"]), { prefix: true });
  big.fill(0x20);
  assert.deepEqual(eager.prefix, prefixBlocks(prompt));
});
