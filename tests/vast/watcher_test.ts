import assert from "node:assert/strict";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import { MemoryLogger, nullLogger } from "../../lib/core/logger.ts";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";
import { VastClient } from "../../lib/vast/client.ts";
import { VastApiError } from "../../lib/vast/errors.ts";
import { instanceRecordSchema, type VastInstanceRecord } from "../../lib/vast/schema.ts";
import type { FleetDiff } from "../../lib/core/fleet_diff.ts";
import { type InstanceLister, Watcher, type WatcherOptions } from "../../lib/vast/watcher.ts";

const POLL = 10_000;

function rec(id: number, overrides: Record<string, unknown> = {}): VastInstanceRecord {
  return instanceRecordSchema.parse(makeInstanceRecord({ id, ...overrides }));
}

/** Answers each listInstances() call with the next scripted result (last one repeats). */
class ScriptedLister implements InstanceLister {
  calls = 0;
  #script: (VastInstanceRecord[] | Error)[];
  constructor(script: (VastInstanceRecord[] | Error)[]) {
    this.#script = script;
  }
  push(...results: (VastInstanceRecord[] | Error)[]): void {
    this.#script.push(...results);
  }
  listInstances(): Promise<VastInstanceRecord[]> {
    const next = this.#script.length > 1 ? this.#script.shift()! : this.#script[0];
    this.calls++;
    return next instanceof Error ? Promise.reject(next) : Promise.resolve(structuredClone(next));
  }
}

class RecordingClock extends FakeClock {
  readonly sleeps: number[] = [];
  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return super.sleep(ms, signal);
  }
}

function watcher(client: InstanceLister, opts: Partial<WatcherOptions> = {}) {
  return new Watcher({
    client,
    clock: new FakeClock(),
    pollIntervalMs: POLL,
    filters: { label: null, instances: [] },
    remotePort: null,
    logger: nullLogger,
    random: () => 0,
    ...opts,
  });
}

const idsOf = (specs: { id: number }[]) => specs.map((s) => s.id);

function summary(diff: FleetDiff | null) {
  if (!diff) return null;
  return {
    added: idsOf(diff.added),
    changed: diff.changed.map((c) => `${c.after.id}${c.rebuild ? ":rebuild" : ""}`),
    updated: idsOf(diff.updated.map((u) => u.after)),
    removed: idsOf(diff.removed),
  };
}

Deno.test("Watcher.pollOnce() adds every instance, eligible or not, then reports no change", async () => {
  const w = watcher(new ScriptedLister([[rec(1), rec(2, { actual_status: "loading" })]]));
  const diff = await w.pollOnce();
  assert.deepEqual(summary(diff), { added: [1, 2], changed: [], updated: [], removed: [] });
  assert.deepEqual(w.known().map((s) => [s.id, s.eligible]), [[1, true], [2, false]]);
  assert.equal(await w.pollOnce(), null);
});

Deno.test("Watcher removes an instance only after two consecutive successful listings without it", async () => {
  const lister = new ScriptedLister([[rec(1), rec(2)], [rec(1)], [rec(1), rec(2)], [rec(1)], [
    rec(1),
  ]]);
  const w = watcher(lister);
  await w.pollOnce();
  assert.equal(await w.pollOnce(), null); // missing once: kept
  assert.deepEqual(idsOf(w.known()), [1, 2]);
  assert.equal(await w.pollOnce(), null); // back: the count resets
  assert.equal(await w.pollOnce(), null); // missing once again
  assert.deepEqual(summary(await w.pollOnce()), {
    added: [],
    changed: [],
    updated: [],
    removed: [2],
  });
  assert.deepEqual(idsOf(w.known()), [1]);
});

Deno.test("Watcher keeps the fleet through one empty listing", async () => {
  const w = watcher(new ScriptedLister([[rec(1), rec(2)], [], [rec(1), rec(2)]]));
  await w.pollOnce();
  assert.equal(await w.pollOnce(), null);
  assert.equal(await w.pollOnce(), null);
  assert.deepEqual(idsOf(w.known()), [1, 2]);
});

Deno.test("Watcher.pollOnce() keeps the known fleet on an API error and reports it", async () => {
  const error = new VastApiError("server", "vast.ai API failed (HTTP 502)", { status: 502 });
  const w = watcher(new ScriptedLister([[rec(1), rec(2)], error, [rec(1)], error, [rec(1)]]));
  await w.pollOnce();
  assert.equal(w.lastError(), null);
  await assert.rejects(w.pollOnce(), error);
  assert.equal(w.lastError(), "vast.ai API failed (HTTP 502)");
  assert.deepEqual(idsOf(w.known()), [1, 2]);
  assert.equal(await w.pollOnce(), null); // 2 missing once
  assert.equal(w.lastError(), null);
  await assert.rejects(w.pollOnce()); // an error is not a listing without 2
  assert.deepEqual(idsOf(w.known()), [1, 2]);
  assert.deepEqual(summary(await w.pollOnce())?.removed, [2]);
});

Deno.test("Watcher reports a token change as changed with rebuild", async () => {
  const w = watcher(new ScriptedLister([[rec(1)], [rec(1, { jupyter_token: "f".repeat(64) })]]));
  await w.pollOnce();
  const diff = await w.pollOnce();
  assert.deepEqual(summary(diff), { added: [], changed: ["1:rebuild"], updated: [], removed: [] });
  assert.equal(diff!.changed[0].after.token, "f".repeat(64));
  assert.notEqual(diff!.changed[0].before.token, "f".repeat(64));
});

Deno.test("Watcher reports an SSH port change as a rebuild, status change as changed only", async () => {
  const w = watcher(
    new ScriptedLister([[rec(1), rec(2)], [
      rec(1, { ssh_port: 20000 }),
      rec(2, { actual_status: "stopped" }),
    ]]),
  );
  await w.pollOnce();
  assert.deepEqual(summary(await w.pollOnce()), {
    added: [],
    changed: ["1:rebuild", "2"],
    updated: [],
    removed: [],
  });
  assert.deepEqual(w.known().map((s) => s.eligible), [true, false]);
});

Deno.test("Watcher reports a label or price change as a display-only update", async () => {
  const w = watcher(new ScriptedLister([[rec(1)], [rec(1, { label: "renamed", dph_total: 0.5 })]]));
  await w.pollOnce();
  const diff = await w.pollOnce();
  assert.deepEqual(summary(diff), { added: [], changed: [], updated: [1], removed: [] });
  assert.equal(diff!.updated[0].after.label, "renamed");
  assert.equal(diff!.updated[0].after.dph, 0.5);
});

Deno.test("Watcher: a label change under --label flips eligibility without a rebuild", async () => {
  const w = watcher(new ScriptedLister([[rec(1)], [rec(1, { label: "other" })]]), {
    filters: { label: "llm-pool-a", instances: [] },
  });
  await w.pollOnce();
  const diff = await w.pollOnce();
  assert.deepEqual(summary(diff), { added: [], changed: ["1"], updated: [], removed: [] });
  assert.equal(diff!.changed[0].before.eligible, true);
  assert.equal(diff!.changed[0].after.eligible, false);
});

Deno.test("Watcher.known() returns copies the caller cannot corrupt", async () => {
  const w = watcher(new ScriptedLister([[rec(1)]]));
  await w.pollOnce();
  w.known()[0].endpoints.length = 0;
  assert.equal(w.known()[0].endpoints.length, 3);
});

Deno.test("Watcher.start() delivers every diff, in order, to a slow consumer", async () => {
  // Call n lists instances 1..n, so every poll adds exactly one instance.
  let n = 0;
  const lister: InstanceLister & { calls: number } = {
    calls: 0,
    listInstances() {
      this.calls++;
      n++;
      return Promise.resolve(Array.from({ length: n }, (_, i) => rec(i + 1)));
    },
  };
  const clock = new FakeClock();
  const w = watcher(lister, { clock });
  const received: number[][] = [];
  let release: (() => void) | null = null;
  const ctl = new AbortController();
  const done = w.start(ctl.signal, async (diff) => {
    received.push(idsOf(diff.added));
    await new Promise<void>((r) => (release = r));
  });

  for (let round = 1; round <= 5; round++) {
    await flushMicrotasks();
    assert.equal(received.length, round);
    // While the consumer is busy, time passes but no poll happens.
    await clock.tick(POLL * 5);
    assert.equal(lister.calls, round);
    assert.equal(clock.pending, 0);
    release!();
    await flushMicrotasks();
    assert.equal(clock.pending, 1); // parked in the poll interval
    await clock.tick(POLL);
  }
  await flushMicrotasks();
  assert.deepEqual(received, [[1], [2], [3], [4], [5], [6]]);
  // Stopping lets the consumer finish its diff first: start() settles after it.
  ctl.abort();
  let settled = false;
  const finished = done.then(() => (settled = true));
  await flushMicrotasks();
  assert.equal(settled, false);
  release!();
  await finished;
  assert.equal(lister.calls, 6);
});

Deno.test("Watcher.start() backs off on consecutive errors and resets after a success", async () => {
  const err = new VastApiError("rate-limited", "vast.ai API rate limit hit (HTTP 429)", {
    status: 429,
  });
  const clock = new RecordingClock();
  const logger = new MemoryLogger();
  const lister = new ScriptedLister([err, err, err, err, [rec(1)]]);
  const w = watcher(lister, { clock, logger });
  const diffs: FleetDiff[] = [];
  const ctl = new AbortController();
  const done = w.start(ctl.signal, (d) => void diffs.push(d));
  for (const step of [20_000, 40_000, 60_000, 60_000, POLL]) await clock.tick(step);
  ctl.abort();
  await done;
  assert.deepEqual(clock.sleeps, [20_000, 40_000, 60_000, 60_000, POLL, POLL]);
  assert.equal(lister.calls, 6);
  assert.equal(diffs.length, 1);
  assert.equal(logger.records.filter((r) => r.level === "warn").length, 4);
  assert.match(logger.text(), /keeping the known fleet.*HTTP 429/);
});

Deno.test("Watcher with VastClient and the fake API survives an empty page", async () => {
  const api = startFakeVastApi({
    apiKey: "key-123456",
    instances: [makeInstanceRecord({ id: 1 }), makeInstanceRecord({ id: 2 })],
  });
  try {
    const client = new VastClient({ apiKey: "key-123456", apiUrl: api.url });
    const w = watcher(client);
    assert.deepEqual(summary(await w.pollOnce())?.added, [1, 2]);
    api.state.failNext(1, "emptyPage");
    assert.equal(await w.pollOnce(), null);
    api.state.update(2, { actual_status: "stopped" });
    assert.deepEqual(summary(await w.pollOnce())?.changed, ["2"]);
    api.state.instances = api.state.instances.filter((r) => r.id !== 1);
    assert.equal(await w.pollOnce(), null);
    assert.deepEqual(summary(await w.pollOnce())?.removed, [1]);
  } finally {
    await api.close();
  }
});
