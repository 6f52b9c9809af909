import assert from "node:assert/strict";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import type { BackendSnapshot, StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { TERM } from "../../lib/ui/ansi.ts";
import { LiveUI, UiLogBuffer } from "../../lib/ui/live.ts";
import { MAX_FIELD_CHARS } from "../../lib/ui/log.ts";

function fleet(clock: FakeClock, requests = 0): StatusSnapshot {
  const b = (id: number) =>
    ({
      id,
      name: String(id),
      state: "healthy",
      stateSince: clock.now() - 5000,
      reason: null,
      vastStatus: "running",
      ssh: "direct",
      endpoint: null,
      engine: "vllm",
      models: ["m"],
      port: 18000,
      gpuLabel: "A100 ×1",
      inFlight: 0,
      requests: 0,
      errors: 0,
      latencyMs: { p50: null, p99: null },
      gpus: [],
      gpuStale: false,
      dph: 1,
      drained: false,
    }) satisfies BackendSnapshot;
  return {
    version: "0.1.0",
    listen: "127.0.0.1:8080",
    policy: "round-robin",
    time: clock.now(),
    startedAt: clock.now(),
    counts: { total: 2, healthy: 2, inFlight: 0, requests, errors: 0 },
    dph: 2,
    apiError: null,
    backends: [b(101), b(202)],
  };
}

function harness(opts: { stdin?: boolean } = {}) {
  const clock = new FakeClock();
  const out: string[] = [];
  const calls: string[] = [];
  let requests = 0;
  let input: ReadableStreamDefaultController<Uint8Array> | undefined;
  const stdin = opts.stdin === false ? null : new ReadableStream<Uint8Array>({
    start(c) {
      input = c;
    },
  });
  const logBuffer = new UiLogBuffer({ now: () => clock.now(), secrets: ["hunter22"] });
  const ui = new LiveUI({
    stdout: {
      write(p) {
        out.push(new TextDecoder().decode(p));
        return p.length;
      },
      columns: () => ({ columns: 100, rows: 20 }),
    },
    stdin,
    snapshot: () => fleet(clock, requests),
    actions: {
      drainToggle: (id) => void calls.push(`drain ${id}`),
      reconnect: (id) => void calls.push(`reconnect ${id}`),
      abortAll: (id) => void calls.push(`abort ${id}`),
      destroy: (id) => {
        calls.push(`destroy ${id}`);
        return Promise.reject(new Error("vast said no"));
      },
      quit: () => void calls.push("quit"),
    },
    clock,
    color: false,
    logBuffer,
  });
  const type = async (s: string) => {
    input!.enqueue(new TextEncoder().encode(s));
    await flushMicrotasks(50);
  };
  return {
    clock,
    out,
    calls,
    ui,
    type,
    logBuffer,
    addRequests: (n: number) => requests += n,
  };
}

Deno.test("LiveUI enters the alternate screen and draws the table at once", async () => {
  const h = harness();
  const done = h.ui.start();
  await flushMicrotasks();
  assert.equal(h.out[0], TERM.altScreenOn + TERM.cursorHide);
  assert.ok(h.out[1].startsWith(TERM.home));
  assert.match(h.out[1], /101/);
  assert.match(h.out[1], /> *202|> *101/);
  assert.ok(!h.out[1].includes("\n\n"), "lines are overwritten in place");
  h.ui.stop();
  await done;
});

Deno.test("LiveUI redraws on each tick with a fresh snapshot and request rate", async () => {
  const h = harness({ stdin: false });
  const done = h.ui.start();
  await flushMicrotasks();
  const before = h.out.length;
  await h.clock.tick(250);
  assert.equal(h.out.length, before, "nothing changed, not a second yet: no redraw");
  h.addRequests(30);
  await h.clock.tick(750);
  assert.equal(h.out.length, before + 1);
  assert.match(h.out.at(-1)!, /30\.0 req\/s/);
  h.logBuffer.log("info", "backend state changed", { id: 101, token: "hunter22" });
  await h.clock.tick(250);
  assert.equal(h.out.length, before + 2, "a log line marks dirty: redraw on the next check");
  assert.match(h.out.at(-1)!, /backend state changed id=101 token=\[redacted\]/);
  h.ui.stop();
  await done;
});

Deno.test("LiveUI turns keys into actions and redraws right after a key", async () => {
  const h = harness();
  const done = h.ui.start();
  await flushMicrotasks();
  const before = h.out.length;
  await h.type("\x1b[Bx");
  assert.deepEqual(h.calls, ["drain 202"]);
  assert.equal(h.out.length, before + 1);
  await h.type("d");
  assert.match(h.out.at(-1)!, /Destroy instance 202 \(A100 ×1\)/);
  await h.type("y");
  assert.deepEqual(h.calls, ["drain 202", "destroy 202"]);
  await flushMicrotasks(50);
  assert.match(h.logBuffer.lines().join("\n"), /destroy failed id=202 error="vast said no"/);
  await h.type("q");
  assert.deepEqual(h.calls.at(-1), "quit");
  h.ui.stop();
  await done;
});

Deno.test("LiveUI restores the terminal on stop, once", async () => {
  const h = harness();
  const done = h.ui.start();
  await flushMicrotasks();
  h.ui.stop();
  await done;
  const restore = TERM.reset + TERM.cursorShow + TERM.altScreenOff;
  assert.equal(h.out.at(-1), restore);
  h.ui.restore();
  h.ui.stop();
  assert.equal(h.out.filter((s) => s === restore).length, 1);
});

Deno.test("LiveUI stops when its signal aborts", async () => {
  const h = harness();
  const ac = new AbortController();
  const done = h.ui.start(ac.signal);
  await flushMicrotasks();
  ac.abort();
  await done;
  assert.ok(h.out.at(-1)!.endsWith(TERM.altScreenOff));
});

Deno.test("UiLogBuffer keeps only the last lines", () => {
  const buf = new UiLogBuffer({ capacity: 3, now: () => 0 });
  let marks = 0;
  const off = buf.subscribe(() => marks++);
  for (let i = 0; i < 5; i++) buf.log("info", `m${i}`);
  buf.log("debug", "hidden");
  off();
  buf.log("warn", "multi\nline");
  assert.equal(marks, 5);
  assert.deepEqual(buf.lines().map((l) => l.slice(9)), [
    "INFO  m3",
    "INFO  m4",
    "WARN  multi line",
  ]);
});

Deno.test("UiLogBuffer cuts a huge value after redacting it, and redacts a quoted secret", () => {
  const buf = new UiLogBuffer({ now: () => 0, secrets: ['se"cret-key'] });
  const path = "/" + "a".repeat(MAX_FIELD_CHARS - 4) + 'se"cret-key' + "%C3%BF".repeat(20_000);
  buf.log("info", "request", { path, why: 'said se"cret-key' });
  const [line] = buf.lines();
  assert.ok(line.length < 2 * MAX_FIELD_CHARS, `${line.length} chars`);
  assert.ok(!line.includes('se\\"c') && !line.includes('se"c'), line.slice(-120));
  assert.match(line, /…\(\+\d+ chars\)" why="said \[redacted\]"$/);
});
