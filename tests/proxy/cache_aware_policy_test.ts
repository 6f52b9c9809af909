import assert from "node:assert/strict";
import { CacheAware, gpuPrior, MAX_PENDING } from "../../lib/proxy/cache_aware_policy.ts";
import { FakeTarget } from "../_helpers/fake_pool.ts";

const blocks = (...xs: number[]) => xs;
const SYS = [11, 12, 13, 14];
const convA = [...SYS, 21, 22, 23, 24];
const convB = [...SYS, 31, 32, 33, 34];
const gpu4090 = { name: "RTX 4090", count: 1 };

Deno.test("CacheAware.select() spreads an idle fleet with no history by rotation", () => {
  const p = new CacheAware();
  const cands = [1, 2, 3].map((id) => new FakeTarget(id, { gpu: gpu4090 }));
  const picks = [1, 2, 3, 4].map(() => p.select(cands, {})!.id);
  assert.deepEqual(picks, [1, 2, 3, 1]);
});

Deno.test("CacheAware.select() keeps a conversation on the backend holding its prefix", () => {
  const p = new CacheAware({ balanceThreshold: 0.5 });
  const a = new FakeTarget(1, { gpu: gpu4090 });
  const b = new FakeTarget(2, { gpu: gpu4090 });
  const first = p.select([a, b], { prefix: convA })!;
  // The next turn extends the prefix; the holder is busier but within balance.
  (first as FakeTarget).baseLoad = 4; // load 4/16 = 0.25 < 0.5 threshold
  const next = p.select([a, b], { prefix: [...convA, 25, 26] })!;
  assert.equal(next, first);
  assert.equal(p.matched(first.id, [...convA, 25, 26]), 10);
  // A new conversation sharing the system prompt with both backends goes by load.
  const other = first === a ? b : a;
  p.select([other], { prefix: convB });
  assert.equal(p.select([a, b], { prefix: [...SYS, 41, 42] }), other);
});

Deno.test("CacheAware.select() lets balance override affinity past the threshold", () => {
  const p = new CacheAware({ balanceThreshold: 0.5 });
  const a = new FakeTarget(1, { gpu: gpu4090 });
  const b = new FakeTarget(2, { gpu: gpu4090 });
  b.baseLoad = 1;
  assert.equal(p.select([a, b], { prefix: convA }), a);
  a.baseLoad = 9; // 9/16 − 1/16 = 0.5: not past the threshold, affinity 1 − 0.56 > 0 − 0.06
  assert.equal(p.select([a, b], { prefix: convA }), a);
  a.baseLoad = 10; // 10/16 − 1/16 > 0.5: affinity is ignored
  assert.equal(p.select([a, b], { prefix: convA }), b);
});

Deno.test("CacheAware.load() is capacity-relative: GPU prior, then what the engine showed", () => {
  const p = new CacheAware();
  const small = new FakeTarget(1, { gpu: gpu4090, inFlight: 8 });
  const big = new FakeTarget(2, { gpu: { name: "H100 SXM", count: 2 }, inFlight: 16 });
  assert.equal(gpuPrior(small.gpu), 16);
  assert.equal(gpuPrior(big.gpu), 128);
  assert.equal(p.load(small), 0.5);
  assert.equal(p.load(big), 0.125);
  // Without affinity to weigh, fewest in flight wins (as least-inflight).
  assert.equal(p.select([small, big], {}), small);
  // Where the 4090 holds the prompt, its capacity-relative load (0.5 vs
  // 0.125, gap past 0.25) overrides the affinity: the H100s get it.
  p.select([small], { prefix: [1, 2, 3] });
  assert.equal(p.select([small, big], { prefix: [1, 2, 3] }), big);
  // The engine ran 32 while others waited: its slot limit is 32, above the prior.
  small.engineLoad = { running: 32, waiting: 3, kvCacheUsage: 0.9, prefixHitRate: null };
  p.select([small, big], {});
  assert.equal(p.capacity(small), 32);
  small.engineLoad = { running: 4, waiting: 0, kvCacheUsage: 0.1, prefixHitRate: null };
  assert.equal(p.capacity(small), 32);
  assert.equal(p.load(small), 8 / 32);
});

Deno.test("CacheAware.saturated() trips only on the engine's own queue past a quarter of capacity", () => {
  const p = new CacheAware({ saturationQueue: 0.25 });
  const t = new FakeTarget(1, { gpu: gpu4090, inFlight: 200 });
  // No metrics: never held back on a guess, however busy it looks.
  assert.equal(p.saturated(t), false);
  t.baseLoad = 2;
  t.engineLoad = { running: 16, waiting: 0, kvCacheUsage: null, prefixHitRate: null };
  assert.equal(p.saturated(t), false); // no queue
  t.engineLoad = { running: 16, waiting: 5, kvCacheUsage: null, prefixHitRate: null };
  assert.equal(p.saturated(t), true); // 5 waiting > 0.25 × 16
  t.engineLoad = { running: 16, waiting: 3, kvCacheUsage: null, prefixHitRate: null };
  assert.equal(p.saturated(t), false); // 3 is not past 4
  t.baseLoad = 18;
  assert.equal(p.saturated(t), true); // 3 waiting + 2 of ours beyond 16 slots
  const stale = { running: 16, waiting: 50, kvCacheUsage: null, prefixHitRate: null, stale: true };
  t.engineLoad = stale;
  assert.equal(p.saturated(t), false); // an old reading is not trusted
});

Deno.test("CacheAware keeps at most maxEntries prefix blocks, evicting the oldest", () => {
  const p = new CacheAware({ maxEntries: 1000 });
  const cands = [1, 2, 3, 4].map((id) => new FakeTarget(id, { gpu: gpu4090 }));
  for (let i = 0; i < 5000; i++) {
    const prefix = Array.from({ length: 20 }, (_, k) => i * 100 + k);
    p.select(cands, { prefix });
    assert.ok(p.entries <= 1000);
  }
  assert.equal(p.entries, 1000);
  // The newest request is still fully remembered; the first one is gone.
  const last = Array.from({ length: 20 }, (_, k) => 4999 * 100 + k);
  assert.equal(Math.max(...cands.map((c) => p.matched(c.id, last))), 20);
  assert.equal(Math.max(...cands.map((c) => p.matched(c.id, blocks(0, 1, 2)))), 0);
});

Deno.test("CacheAware eviction trims a prefix from its end, not its start", () => {
  const p = new CacheAware({ maxEntries: 6 });
  const a = new FakeTarget(1);
  p.select([a], { prefix: convA }); // 8 blocks, cap 6: the two deepest go
  assert.equal(p.matched(1, convA), 6);
});

Deno.test("CacheAware.select() with one candidate reads no prefix until a choice needs the record", () => {
  const p = new CacheAware();
  const a = new FakeTarget(1, { gpu: gpu4090 });
  const b = new FakeTarget(2, { gpu: gpu4090 });
  let reads = 0;
  const lazy = (prefix: number[]) => ({
    get prefix() {
      reads++;
      return prefix;
    },
  });
  // Alone, many times: picked without reading any prompt.
  assert.equal(p.select([a], lazy(convA)), a);
  assert.equal(p.select([a], lazy([...SYS, 81])), a);
  assert.equal(reads, 0, "no choice, no prefix read");
  // The first choice records the lone picks first, in order, once each:
  // conversation A stays on a.
  assert.equal(p.select([a, b], { prefix: [...convA, 25] }), a);
  assert.equal(reads, 2);
  assert.equal(p.matched(a.id, [...SYS, 81]), SYS.length + 1);
  assert.equal(reads, 2);
  // A conversation continued on the survivor while a backend was away
  // stays on the survivor when the other comes back.
  assert.equal(p.select([b], lazy(convB)), b);
  assert.equal(p.select([a, b], { prefix: [...convB, 35] }), b);
  // Reads of the record see pending picks too.
  p.select([a], lazy([...SYS, 51]));
  assert.equal(p.matched(a.id, [...SYS, 51]), SYS.length + 1);
  const before = p.entries;
  p.select([b], lazy([...SYS, 61, 62])); // b holds SYS already: two new blocks
  assert.equal(p.entries, before + 2);
});

Deno.test("CacheAware records every lone pick: a full pending list is recorded, not dropped", () => {
  const p = new CacheAware();
  const a = new FakeTarget(1);
  let reads = 0;
  const routes = Array.from({ length: MAX_PENDING + 5 }, (_, i) => ({
    get prefix() {
      reads++;
      return [1000 + i];
    },
  }));
  for (const [i, r] of routes.entries()) {
    p.select([a], r);
    // Nothing read until the list is full; then all of it, at once.
    assert.equal(reads, i < MAX_PENDING ? 0 : MAX_PENDING, `after pick ${i}`);
  }
  for (let i = 0; i < routes.length; i++) assert.equal(p.matched(a.id, [1000 + i]), 1, `pick ${i}`);
  assert.equal(reads, routes.length, "each route read once");
  assert.equal(p.entries, routes.length);
});

Deno.test("CacheAware: a route whose prefix cannot be read records nothing and fails no other pick", () => {
  const p = new CacheAware();
  const a = new FakeTarget(1);
  const b = new FakeTarget(2);
  const bad = {
    get prefix(): number[] {
      throw new Error("bad prefix");
    },
  };
  assert.equal(p.select([a], bad), a);
  p.select([a], { prefix: [7] });
  // Another request, with a good route: the bad pending record is dropped, not thrown.
  assert.doesNotThrow(() => p.select([a, b], { prefix: [1, 2, 3] }));
  assert.equal(p.matched(a.id, [7]), 1, "the good lone pick after it is still recorded");
  assert.equal(p.entries, 4);
});
