import assert from "node:assert/strict";
import { POLICIES, runOne, trace, WORKLOADS } from "../../bench/routing.ts";

Deno.test("routing simulation: same seed, same numbers; another seed, other numbers", () => {
  const [name, make] = POLICIES.find(([n]) => n === "cache-aware")!;
  const sessions = trace(WORKLOADS[0], 0.8, 0.5, 7);
  const a = runOne(make, sessions(), 0.5, 7);
  const b = runOne(make, trace(WORKLOADS[0], 0.8, 0.5, 7)(), 0.5, 7);
  assert.deepEqual(a, b, name);
  const c = runOne(make, trace(WORKLOADS[0], 0.8, 0.5, 8)(), 0.5, 8);
  assert.notDeepEqual(a, c);
  assert.ok(a.ttftP50 > 0 && a.hitRate > 0);
});
