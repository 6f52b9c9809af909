import assert from "node:assert/strict";
import { IdleGc, type MemoryReading } from "../../lib/app/idle_gc.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";

const MiB = 1024 * 1024;

/** An IdleGc over hand-driven time, requests, in-flight count and memory. */
function world() {
  const w = {
    now: 0,
    requests: 0,
    inFlight: 0,
    memory: { heapTotal: 20 * MiB, external: 2 * MiB } as MemoryReading,
    // What a collection leaves.
    afterGc: { heapTotal: 12 * MiB, external: 1 * MiB } as MemoryReading,
    collections: 0,
    logger: new MemoryLogger(),
  };
  const idle = new IdleGc({
    traffic: () => ({ finished: w.requests, busy: w.inFlight }),
    memory: () => w.memory,
    gc: () => {
      w.collections++;
      w.memory = w.afterGc;
    },
    logger: w.logger,
  });
  /** Moves time in 5-s checks, as the proxy's loop does. */
  const wait = (ms: number) => {
    for (let t = 0; t < ms; t += 5_000) {
      w.now += 5_000;
      idle.tick();
    }
  };
  return { w, idle, wait };
}

Deno.test("IdleGc collects a burst's memory once, 10 s into the quiet", () => {
  const { w, wait } = world();
  w.requests = 500;
  w.memory = { heapTotal: 480 * MiB, external: 300 * MiB }; // a burst of large bodies
  wait(5_000); // the burst's last requests are seen
  wait(5_000);
  assert.equal(w.collections, 0, "5 s of quiet is a pause between requests");
  wait(5_000);
  assert.equal(w.collections, 1);
  assert.match(w.logger.text(), /info idle: gave memory back beforeMiB=780 afterMiB=13 ms=\d+/);
  wait(10 * 60_000);
  assert.equal(w.collections, 1, "one collection per quiet spell");
});

Deno.test("IdleGc: the warm heap of ordinary traffic is collected only after a minute", () => {
  const { w, wait } = world();
  w.requests = 1;
  w.memory = { heapTotal: 64 * MiB, external: 2 * MiB }; // +44 MiB: under 128, over 32
  wait(5_000);
  wait(55_000);
  assert.equal(w.collections, 0, "a pause under a minute keeps its heap");
  wait(5_000);
  assert.equal(w.collections, 1);
});

Deno.test("IdleGc: a request or one in flight is activity; small growth is not worth a collection", () => {
  const { w, wait } = world();
  w.memory = { heapTotal: 60 * MiB, external: 2 * MiB };
  wait(50_000);
  w.requests++; // one request at 50 s
  wait(55_000);
  assert.equal(w.collections, 0, "the minute starts again at the last request");
  w.inFlight = 1; // a long stream, no new requests
  wait(5 * 60_000);
  assert.equal(w.collections, 0, "nothing is collected under a running stream");
  w.inFlight = 0;
  wait(60_000);
  assert.equal(w.collections, 1);

  // Next pause: 31 MiB over what the last collection left is below the bar.
  w.requests++;
  w.memory = { heapTotal: w.afterGc.heapTotal + 31 * MiB, external: w.afterGc.external };
  wait(3 * 60_000);
  assert.equal(w.collections, 1);
  // 32 MiB is enough, after a minute.
  w.memory = { heapTotal: w.afterGc.heapTotal + 32 * MiB, external: w.afterGc.external };
  wait(5_000);
  assert.equal(w.collections, 2, "growth seen while still quiet is collected in the same spell");
});

Deno.test("exposedGc() under the product's V8 flags frees dropped buffers at once", async () => {
  const { RUNTIME_V8_ARG } = await import("../../scripts/compile.ts");
  const script = `
    import { exposedGc } from "./lib/app/idle_gc.ts";
    let bufs = Array.from({ length: 40 }, () => new Uint8Array(4 << 20).fill(1));
    const held = Deno.memoryUsage().external;
    bufs = [];
    exposedGc()();
    console.log(JSON.stringify({ held, after: Deno.memoryUsage().external }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", RUNTIME_V8_ARG, script],
    cwd: new URL("../..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const { held, after } = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.ok(held >= 160 * MiB, `held ${held}`);
  assert.ok(after < held - 150 * MiB, `external ${held} → ${after}`);
});
