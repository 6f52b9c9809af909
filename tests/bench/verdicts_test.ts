import assert from "node:assert/strict";
import { floorLines, type PathName, type ScenarioResult, verdicts } from "../../bench/bench.ts";

/** A scenario with `rounds` per path (paths left out have none). */
function scenario(
  id: string,
  rounds: Partial<Record<PathName, Record<string, number>[]>>,
): ScenarioResult {
  const empty = { a: [], b: [], c: [], d: [], e: [], f: [], g: [], h: [], i: [] };
  return { id, title: id, setup: "", rounds: { ...empty, ...rounds }, notes: [] };
}

const ok = (p50Ms: number) => ({ p50Ms, errors: 0 });
const rate = (rps: number, errors = 0) => ({ rps, errors });

function verdict(all: ScenarioResult[], target: string) {
  const v = verdicts(all).find((x) => x.target === target);
  assert.ok(v, `no verdict "${target}"`);
  return v;
}

Deno.test("verdicts: the c=1 target on the medians, shown as the number it checks", () => {
  const S1W = "#14 (wrk): S1W p50 (c) − (b) ≤ 0.15 ms";
  // 0.165 − 0.015 is 0.15000000000000002 in floating point: still exactly 150 µs.
  const edge = scenario("S1W", { b: [ok(0.015)], c: [ok(0.165)] });
  assert.deepEqual(verdict([edge], S1W), { target: S1W, value: "0.150 ms", ok: true });
  const over = scenario("S1W", {
    b: [ok(0.3), ok(0.31), ok(0.32)],
    c: [ok(0.46), ok(0.461), ok(0.9)],
  });
  assert.deepEqual(verdict([over], S1W), { target: S1W, value: "0.151 ms", ok: false });
});

Deno.test("verdicts: a round with errors, or one that measured nothing, fails the target", () => {
  const S1W = "#14 (wrk): S1W p50 (c) − (b) ≤ 0.15 ms";
  const b = [ok(0.3), ok(0.3), ok(0.3)];
  // Two of (c)'s three rounds failed outright (NaN): the one left must not pass alone.
  const failed = scenario("S1W", { b, c: [ok(0.4), ok(NaN), ok(NaN)] });
  const v = verdict([failed], S1W);
  assert.equal(v.ok, false);
  assert.match(v.value, /2 rounds without a p50Ms on b\/c/);
  const errs = scenario("S1W", { b, c: [ok(0.4), { p50Ms: 0.4, errors: 3 }, ok(0.4)] });
  assert.equal(verdict([errs], S1W).ok, false);
  assert.match(verdict([errs], S1W).value, /3 errors/);

  const S2W = "#14 (wrk): S2W req/s (c) ≥ 1.5× (e) go core";
  const rates = scenario("S2W", {
    b: [rate(1000)],
    c: [rate(900)],
    e: [rate(400, 1)], // the Go core's errors make the ratio no measurement either
  });
  assert.equal(verdict([rates], S2W).ok, false);
  assert.equal(verdict([rates], "#14 (wrk): S2W req/s (c) ≥ 60% of (b)").ok, true);
});

Deno.test("verdicts: ratios at the line pass, just under it fail, and say so", () => {
  const at = scenario("S2W", { b: [rate(1000)], c: [rate(600)], e: [rate(400)] });
  assert.deepEqual(verdict([at], "#14 (wrk): S2W req/s (c) ≥ 60% of (b)").value, "60.00%");
  assert.equal(verdict([at], "#14 (wrk): S2W req/s (c) ≥ 60% of (b)").ok, true);
  assert.equal(verdict([at], "#14 (wrk): S2W req/s (c) ≥ 1.5× (e) go core").value, "1.500×");
  assert.equal(verdict([at], "#14 (wrk): S2W req/s (c) ≥ 1.5× (e) go core").ok, true);
  const under = scenario("S2W", { b: [rate(100_000)], c: [rate(59_990)], e: [rate(40_000)] });
  const v = verdict([under], "#14 (wrk): S2W req/s (c) ≥ 60% of (b)");
  assert.deepEqual([v.value, v.ok], ["59.99%", false]);
});

Deno.test("floorLines: each floor path over (b), and a floor with errors or lost rounds says so", () => {
  const b = [ok(0.3), ok(0.3), ok(0.3)];
  const clean = scenario("S1W", {
    b,
    c: [ok(0.46), ok(0.46), ok(0.46)],
    h: [ok(0.34), ok(0.34), ok(0.34)],
    i: [ok(0.4), ok(0.4), ok(0.4)],
  });
  const lines = floorLines([clean], ["f", "g", "h", "i"]);
  assert.equal(
    lines.at(-1),
    "  S1W: p50 over (b) ssh -L: (h) SSH floor +0.04 ms, (i) HTTP floor +0.10 ms, " +
      "(c) vastproxy +0.16 ms",
  );
  // (h) died after its first round: its "+x ms" comes from one round and must say so.
  const broken = scenario("S1W", {
    b,
    c: [ok(0.46)],
    h: [ok(0.34), { p50Ms: NaN, errors: 5 }, { p50Ms: NaN, errors: 5 }],
  });
  assert.match(
    floorLines([broken], ["h"]).at(-1)!,
    /\(h\) SSH floor \+0\.04 ms, 10 errors, 2 rounds without a p50Ms on h/,
  );
  // A floor at or under (b): its sign as it is, and no "+-0.00".
  const level = scenario("S1", {
    b: [ok(0.3)],
    c: [ok(0.5)],
    h: [ok(0.299)],
    i: [ok(0.28)],
  });
  assert.equal(
    floorLines([level], ["h", "i"]).at(-1),
    "  S1: p50 over (b) ssh -L: (h) SSH floor +0.00 ms, (i) HTTP floor -0.02 ms, " +
      "(c) vastproxy +0.20 ms",
  );
  // No floor path measured: no floor lines at all.
  assert.deepEqual(floorLines([scenario("S2W", { b, c: b })], ["h", "i"]), []);
});
