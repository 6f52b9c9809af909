import assert from "node:assert/strict";
import { DeferredWork } from "../../lib/core/deferred_work.ts";

/** A hand-driven timer: `fire()` runs what is scheduled, `armed` counts live timers. */
function fakeTimer() {
  let pending: { fn: () => void; ms: number } | null = null;
  let armedCount = 0;
  return {
    schedule(fn: () => void, ms: number) {
      assert.equal(pending, null, "one timer at a time");
      pending = { fn, ms };
      armedCount++;
      return () => {
        pending = null;
      };
    },
    fire() {
      const p = pending;
      pending = null;
      p?.fn();
    },
    get live() {
      return pending;
    },
    get armedCount() {
      return armedCount;
    },
  };
}

Deno.test("DeferredWork runs queued tasks together, in order, once the delay passes", () => {
  const timer = fakeTimer();
  const ran: number[] = [];
  const w = new DeferredWork({ maxDelayMs: 20, maxQueued: 100, schedule: timer.schedule });
  for (let i = 0; i < 5; i++) w.defer(() => ran.push(i));
  assert.equal(ran.length, 0, "nothing runs before the batch");
  assert.equal(w.pending, 5);
  assert.equal(timer.armedCount, 1, "one timer for the whole batch");
  assert.equal(timer.live?.ms, 20);
  timer.fire();
  assert.deepEqual(ran, [0, 1, 2, 3, 4]);
  assert.equal(w.pending, 0);
  w.defer(() => ran.push(5));
  assert.equal(timer.armedCount, 2, "the next task arms a new timer");
  timer.fire();
  assert.deepEqual(ran, [0, 1, 2, 3, 4, 5]);
});

Deno.test("DeferredWork.flush runs everything now and disarms the timer", () => {
  const timer = fakeTimer();
  const ran: string[] = [];
  const w = new DeferredWork({ maxDelayMs: 20, maxQueued: 100, schedule: timer.schedule });
  w.defer(() => ran.push("a"));
  w.defer(() => ran.push("b"));
  w.flush();
  assert.deepEqual(ran, ["a", "b"]);
  assert.equal(timer.live, null, "a flushed batch leaves no timer behind");
  w.flush(); // nothing queued: nothing runs twice
  assert.deepEqual(ran, ["a", "b"]);
});

Deno.test("DeferredWork runs a full queue at once, without waiting for the timer", () => {
  const timer = fakeTimer();
  let ran = 0;
  const w = new DeferredWork({ maxDelayMs: 20, maxQueued: 3, schedule: timer.schedule });
  w.defer(() => ran++);
  w.defer(() => ran++);
  assert.equal(ran, 0);
  w.defer(() => ran++);
  assert.equal(ran, 3, "the third task fills the queue: the batch runs");
  assert.equal(w.pending, 0);
  assert.equal(timer.live, null);
});

Deno.test("DeferredWork: a failing task is reported and the rest of its batch still runs", () => {
  const timer = fakeTimer();
  const ran: number[] = [];
  const errors: unknown[] = [];
  const w = new DeferredWork({
    maxDelayMs: 20,
    maxQueued: 100,
    schedule: timer.schedule,
    onError: (e) => errors.push(e),
  });
  w.defer(() => ran.push(1));
  w.defer(() => {
    throw new Error("boom");
  });
  w.defer(() => ran.push(3));
  timer.fire();
  assert.deepEqual(ran, [1, 3]);
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /boom/);
  // An error sink that throws as well does not break the queue either.
  const w2 = new DeferredWork({
    maxDelayMs: 20,
    maxQueued: 100,
    schedule: timer.schedule,
    onError: () => {
      throw new Error("sink");
    },
  });
  w2.defer(() => {
    throw new Error("task");
  });
  w2.defer(() => ran.push(4));
  w2.flush();
  assert.deepEqual(ran, [1, 3, 4]);
  assert.equal(w2.pending, 0);
});

Deno.test("DeferredWork: tasks queued by a running task join its batch, in order", () => {
  const timer = fakeTimer();
  const ran: string[] = [];
  const w = new DeferredWork({ maxDelayMs: 20, maxQueued: 100, schedule: timer.schedule });
  w.defer(() => {
    ran.push("first");
    w.defer(() => ran.push("queued by first"));
    w.flush(); // re-entrant flush: the running batch already takes it
  });
  w.defer(() => ran.push("second"));
  timer.fire();
  assert.deepEqual(ran, ["first", "second", "queued by first"]);
  assert.equal(w.pending, 0);
  assert.equal(timer.live, null, "no timer left armed for a task the batch ran");
});

Deno.test("DeferredWork with real timers runs its batch by itself", async () => {
  const ran: number[] = [];
  const w = new DeferredWork({ maxDelayMs: 5, maxQueued: 100 });
  w.defer(() => ran.push(1));
  const deadline = Date.now() + 2_000;
  while (ran.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(ran, [1]);
});
