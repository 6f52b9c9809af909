import assert from "node:assert/strict";
import { backoffDelay } from "../../lib/core/backoff.ts";

Deno.test("backoffDelay() doubles from baseMs and caps at maxMs", () => {
  const d = (attempt: number) =>
    backoffDelay(attempt, { baseMs: 1_000, maxMs: 60_000, random: () => 0 });
  assert.deepEqual([0, 1, 2, 5, 6, 7, 1_000].map(d), [
    1_000,
    2_000,
    4_000,
    32_000,
    60_000,
    60_000,
    60_000,
  ]);
});

Deno.test("backoffDelay() jitter removes at most the jitter share", () => {
  const opts = { baseMs: 1_000, maxMs: 60_000 };
  assert.equal(backoffDelay(2, { ...opts, random: () => 0.999999 }), 2_000);
  assert.equal(backoffDelay(2, { ...opts, random: () => 0.5 }), 3_000);
  assert.equal(backoffDelay(2, { ...opts, random: () => 1, jitter: 1 }), 0);
  assert.equal(backoffDelay(2, { ...opts, random: () => 1, jitter: 0 }), 4_000);
});

Deno.test("backoffDelay() stays within [cap/2, cap] for any random value", () => {
  for (let i = 0; i < 200; i++) {
    const r = i / 200;
    const v = backoffDelay(3, { baseMs: 500, maxMs: 10_000, random: () => r });
    assert.ok(v >= 2_000 && v <= 4_000, `${v} for random ${r}`);
  }
  assert.equal(backoffDelay(-3, { baseMs: 500, maxMs: 10_000, random: () => 0 }), 500);
});
