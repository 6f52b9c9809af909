import assert from "node:assert/strict";
import { combineHalves, mirroredRuns, roundOrder } from "../../bench/bench.ts";

Deno.test("mirroredRuns: every path twice, at positions that add up alike", () => {
  const paths = ["a", "b", "c", "e", "f", "g", "h", "i"];
  for (let round = 1; round <= 6; round++) {
    const runs = mirroredRuns(roundOrder(paths, round));
    assert.equal(runs.length, 2 * paths.length);
    for (const p of paths) {
      const at = runs.flatMap((q, i) => (q === p ? [i] : []));
      assert.equal(at.length, 2, `${p} in round ${round}`);
      // A drift linear in time then costs every path the same on average.
      assert.equal(at[0] + at[1], runs.length - 1, `${p} in round ${round}`);
    }
  }
  // The order itself is left as roundOrder gave it.
  assert.deepEqual(mirroredRuns(["x", "y", "z"]), ["x", "y", "z", "z", "y", "x"]);
});

Deno.test("mirroredRuns: a linear drift adds the same to every path's mean", () => {
  const order = roundOrder(["a", "b", "c", "h", "i"], 3);
  const runs = mirroredRuns(order);
  const seen = new Map<string, number[]>();
  // Each run costs its path 10 plus a drift of 7 per position.
  runs.forEach((p, i) => seen.set(p, [...(seen.get(p) ?? []), 10 + 7 * i]));
  const means = [...seen.values()].map(([x, y]) => combineHalves({ p50Ms: x }, { p50Ms: y }).p50Ms);
  assert.equal(new Set(means).size, 1, `means ${means}`);
  // A single pass in order would have set them apart by the drift.
  const single = order.map((_, i) => 10 + 7 * i);
  assert.notEqual(new Set(single).size, 1);
});

Deno.test("combineHalves: means of p50 and rate, the worse p99, errors added", () => {
  assert.deepEqual(
    combineHalves(
      { p50Ms: 0.2, p99Ms: 0.9, rps: 4000, errors: 1 },
      { p50Ms: 0.4, p99Ms: 0.7, rps: 3000, errors: 2 },
    ),
    { p50Ms: 0.30000000000000004, p99Ms: 0.9, rps: 3500, errors: 3 },
  );
  // A metric only one half has is kept as it is.
  assert.deepEqual(combineHalves({ p50Ms: 1, extra: 5 }, { p50Ms: 3 }), { p50Ms: 2, extra: 5 });
  // A NaN half (a run that printed no report) keeps the round NaN, not a half-true number.
  assert.ok(Number.isNaN(combineHalves({ p50Ms: NaN }, { p50Ms: 0.3 }).p50Ms));
});
