/**
 * Absurd but valid durations (`--poll-interval 1000h`) must mean "rarely",
 * never "immediately": timers overflow above 2^31-1 ms and would fire at once,
 * polling the vast.ai API in a tight loop.
 */
import assert from "node:assert/strict";
import { realClock } from "../../lib/core/clock.ts";
import { parseDuration } from "../../lib/cli/units.ts";

Deno.test("realClock.sleep() with a duration beyond the timer limit waits instead of firing at once", async () => {
  const ms = parseDuration("1000h")!;
  assert.ok(ms > 2 ** 31);
  const ctrl = new AbortController();
  let woke = false;
  const sleeping = realClock.sleep(ms, ctrl.signal).then(() => (woke = true), () => {});
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(woke, false, "a 1000 h sleep ended after 60 ms");
  ctrl.abort();
  await sleeping;
});
