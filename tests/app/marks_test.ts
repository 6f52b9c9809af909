import assert from "node:assert/strict";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import type { BackendEvent } from "../../lib/proxy/backend.ts";
import { Fleet } from "../../lib/proxy/fleet.ts";
import { type LabelSetter, Marks } from "../../lib/app/marks.ts";
import type { BackendState } from "../../lib/proxy/snapshot.ts";
import { FakeTunnelFactory, fromWebResponse, testSpec } from "../_helpers/fake_tunnel.ts";

const LABEL = "vastproxy";

/** Records label calls; fails the next `failures` of them. */
class FakeLabels implements LabelSetter {
  calls: [number, string | null][] = [];
  failures = 0;
  setLabel(id: number, label: string | null): Promise<void> {
    if (this.failures > 0) {
      this.failures--;
      return Promise.reject(new Error("vast API answered 429: API requests too frequent"));
    }
    this.calls.push([id, label]);
    return Promise.resolve();
  }
}

function setup(labels: Record<number, string | null> = {}) {
  const client = new FakeLabels();
  const logger = new MemoryLogger();
  const marks = new Marks(LABEL, {
    client,
    logger,
    labelOf: (id) => (id in labels ? labels[id] : undefined),
  });
  const state = (id: number, from: BackendState, to: BackendState): BackendEvent => ({
    type: "state",
    id,
    from,
    to,
    reason: null,
  });
  return { client, logger, marks, labels, state };
}

Deno.test("Marks sets the label when a backend becomes healthy", async () => {
  const { client, marks, state } = setup({ 1: null });
  marks.onEvent(state(1, "discovered", "connecting"));
  await marks.flush();
  assert.deepEqual(client.calls, []);
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  assert.deepEqual(client.calls, [[1, LABEL]]);
});

Deno.test("Marks clears the label on unhealthy while vast still lists it as ours", async () => {
  const { client, marks, state, labels } = setup({ 1: null });
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  labels[1] = LABEL; // the next listing shows our label
  marks.onEvent(state(1, "healthy", "unhealthy"));
  await marks.flush();
  assert.deepEqual(client.calls, [[1, LABEL], [1, null]]);
});

Deno.test("Marks clears its label even before vast's listing caught up", async () => {
  const { client, marks, state } = setup({ 1: null });
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  marks.onEvent(state(1, "healthy", "unhealthy")); // listing still says null
  await marks.flush();
  assert.deepEqual(client.calls, [[1, LABEL], [1, null]]);
});

Deno.test("Marks leaves a label the user changed meanwhile", async () => {
  const { client, marks, state, labels } = setup({ 1: null });
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  labels[1] = "my-experiment";
  marks.onEvent(state(1, "healthy", "removed"));
  await marks.clearAll();
  assert.deepEqual(client.calls, [[1, LABEL]]);
});

Deno.test("Marks does nothing when a backend goes down before its label was set", async () => {
  const { client, marks, state } = setup({ 1: null });
  marks.onEvent(state(1, "connecting", "healthy"));
  marks.onEvent(state(1, "healthy", "unhealthy"));
  await marks.flush();
  assert.deepEqual(client.calls, []);
});

Deno.test("Marks never clears a label it did not set and that is not ours", async () => {
  const { client, marks, state } = setup({ 1: "prod" });
  marks.onEvent(state(1, "connecting", "unhealthy"));
  await marks.clearAll();
  assert.deepEqual(client.calls, []);
});

Deno.test("Marks adopts its label already present without calling the API", async () => {
  const { client, marks, state } = setup({ 1: LABEL });
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  assert.deepEqual(client.calls, []);
  await marks.clearAll();
  assert.deepEqual(client.calls, [[1, null]]);
});

Deno.test("Marks.clearAll() clears every label still ours on exit", async () => {
  const { client, marks, state, labels } = setup({ 1: null, 2: null, 3: null });
  for (const id of [1, 2, 3]) marks.onEvent(state(id, "connecting", "healthy"));
  await marks.flush();
  labels[1] = LABEL;
  labels[2] = LABEL;
  labels[3] = "user-renamed";
  client.calls = [];
  await marks.clearAll();
  assert.deepEqual(client.calls, [[1, null], [2, null]]);
});

Deno.test("Marks logs a failed setLabel without the error being fatal, and retries on flush", async () => {
  const { client, marks, state, logger } = setup({ 1: null });
  client.failures = 2; // the event's own attempt and the first retry fail
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  assert.deepEqual(client.calls, []);
  assert.match(logger.text(), /warn could not set label id=1 .*429/);
  await marks.flush();
  assert.deepEqual(client.calls, [[1, LABEL]]);
});

Deno.test("Marks gives up after maxAttempts failures", async () => {
  const { client, marks, state, logger } = setup({ 1: null });
  client.failures = 10;
  marks.onEvent(state(1, "connecting", "healthy"));
  for (let i = 0; i < 5; i++) await marks.flush();
  assert.equal(client.failures, 7); // 3 attempts, then no more
  assert.match(logger.text(), /retry=false/);
});

Deno.test("Marks follows a fleet's backends from healthy to removed", async () => {
  const clock = new FakeClock();
  const client = new FakeLabels();
  const logger = new MemoryLogger();
  // Events flow only after `apply`, by which time `marks` exists.
  const fleet: Fleet = new Fleet({
    tunnelFactory: new FakeTunnelFactory({
      now: () => clock.now(),
      autoUp: {},
      handler: () => fromWebResponse(Response.json({ data: [{ id: "m" }] })),
    }),
    clock,
    logger,
    healthIntervalMs: 5000,
    onEvent: (e) => marks.onEvent(e),
  });
  const marks = new Marks(LABEL, { client, logger, labelOf: (id) => fleet.labelOf(id) });
  const spec = testSpec(1);
  await fleet.apply({ added: [spec], changed: [], updated: [], removed: [] });
  await clock.tick(0);
  await marks.flush();
  assert.deepEqual(client.calls, [[1, LABEL]]);
  await fleet.apply({ added: [], changed: [], updated: [], removed: [spec] });
  await flushMicrotasks();
  await fleet.drainAll(0);
  await marks.clearAll();
  assert.deepEqual(client.calls, [[1, LABEL], [1, null]]);
});

Deno.test("Marks sets the label again after an unhealthy→healthy flap before vast's next listing", async () => {
  const { client, marks, state, labels } = setup({ 1: null });
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  labels[1] = LABEL; // vast lists our label
  marks.onEvent(state(1, "healthy", "unhealthy"));
  await marks.flush();
  // The listing is stale (still LABEL) when the backend recovers moments later.
  marks.onEvent(state(1, "unhealthy", "healthy"));
  await marks.flush();
  assert.deepEqual(client.calls, [[1, LABEL], [1, null], [1, LABEL]]);
  // And a second flap still clears what we wrote.
  marks.onEvent(state(1, "healthy", "unhealthy"));
  await marks.flush();
  assert.deepEqual(client.calls.at(-1), [1, null]);
});

Deno.test("Marks leaves a label the user set after ours alone", async () => {
  const { client, marks, state, labels } = setup({ 1: null });
  marks.onEvent(state(1, "connecting", "healthy"));
  await marks.flush();
  labels[1] = "users-own"; // renamed in the console since
  marks.onEvent(state(1, "healthy", "unhealthy"));
  await marks.clearAll();
  assert.deepEqual(client.calls, [[1, LABEL]]);
});
