import assert from "node:assert/strict";
import { LineLogger, MAX_BATCH_BYTES, MAX_QUEUED_LINES, shouldUseColor } from "../../lib/ui/log.ts";

const T = Date.parse("2026-11-22T18:11:33.123Z");

function sink() {
  const chunks: Uint8Array[] = [];
  return {
    writer: {
      write(p: Uint8Array) {
        chunks.push(p.slice());
        return p.length;
      },
    },
    text: () => new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c]))),
  };
}

Deno.test("LineLogger writes the exact text format", async () => {
  const s = sink();
  const log = new LineLogger({ writer: s.writer, now: () => T });
  log.log("info", "backend state changed", { id: 123, from: "connecting", to: "healthy" });
  log.log("warn", "probe failed", { id: 123, error: "connect ECONNREFUSED 127.0.0.1:1", n: null });
  log.log("error", "odd", { empty: "", skipped: undefined, ok: true });
  await log.flush();
  assert.equal(
    s.text(),
    "2026-11-22T18:11:33.123Z INFO  backend state changed id=123 from=connecting to=healthy\n" +
      '2026-11-22T18:11:33.123Z WARN  probe failed id=123 error="connect ECONNREFUSED 127.0.0.1:1" n=null\n' +
      '2026-11-22T18:11:33.123Z ERROR odd empty="" ok=true\n',
  );
});

Deno.test("LineLogger writes one JSON object per line", async () => {
  const s = sink();
  const log = new LineLogger({ writer: s.writer, format: "json", now: () => T, color: true });
  log.log("info", "request done", { id: 123, status: 200, msg: "ignored", x: undefined });
  await log.flush();
  assert.equal(
    s.text(),
    '{"time":"2026-11-22T18:11:33.123Z","level":"info","msg":"request done","id":123,"status":200}\n',
  );
});

Deno.test("LineLogger redacts secrets in text and JSON", async () => {
  for (const format of ["text", "json"] as const) {
    const s = sink();
    const log = new LineLogger({
      writer: s.writer,
      format,
      now: () => T,
      secrets: ["sk-secret-123", 'tok"en'],
    });
    log.log("error", "bad key sk-secret-123", { header: "Bearer sk-secret-123", t: 'tok"en' });
    await log.flush();
    assert.ok(!s.text().includes("sk-secret-123"), s.text());
    assert.ok(!s.text().includes("tok"), s.text());
    assert.match(s.text(), /\[redacted\]/);
  }
});

Deno.test("LineLogger filters by level", async () => {
  const s = sink();
  const log = new LineLogger({ writer: s.writer, level: "warn", now: () => T });
  log.log("debug", "a");
  log.log("info", "b");
  log.log("warn", "c");
  log.log("error", "d");
  await log.flush();
  assert.deepEqual(s.text().trim().split("\n").map((l) => l.split(/\s+/)[2]), ["c", "d"]);
});

Deno.test("LineLogger uses ANSI only when color is on", async () => {
  const plain = sink();
  new LineLogger({ writer: plain.writer, now: () => T }).log("error", "x", { a: 1 });
  const coloured = sink();
  const log = new LineLogger({ writer: coloured.writer, now: () => T, color: true });
  log.log("error", "x", { a: 1 });
  await log.flush();
  assert.ok(!plain.text().includes("\x1b"));
  assert.ok(coloured.text().includes("\x1b[31mERROR"));
});

Deno.test("LineLogger keeps order with an async writer and survives a closed one", async () => {
  const lines: string[] = [];
  const log = new LineLogger({
    writer: {
      async write(p: Uint8Array) {
        await Promise.resolve();
        lines.push(new TextDecoder().decode(p));
        return p.length;
      },
    },
    now: () => T,
  });
  for (let i = 0; i < 5; i++) log.log("info", `m${i}`);
  await log.flush();
  const got = lines.join("").trimEnd().split("\n").map((l) => l.split(" ").at(-1));
  assert.deepEqual(got, ["m0", "m1", "m2", "m3", "m4"]);
  const broken = new LineLogger({
    writer: {
      write() {
        throw new Error("EPIPE");
      },
    },
  });
  broken.log("info", "lost");
  await broken.flush();
});

Deno.test("shouldUseColor() needs a TTY and no NO_COLOR", () => {
  assert.equal(shouldUseColor({ isTty: true, env: {} }), true);
  assert.equal(shouldUseColor({ isTty: false, env: {} }), false);
  assert.equal(shouldUseColor({ isTty: true, env: { NO_COLOR: "1" } }), false);
  assert.equal(shouldUseColor({ isTty: true, env: { NO_COLOR: "" } }), true);
  assert.equal(shouldUseColor({ isTty: true, env: { TERM: "dumb" } }), false);
});

Deno.test("LineLogger drops lines past MAX_QUEUED_LINES for a stalled writer, then reports the gap", async () => {
  const written: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const decoder = new TextDecoder();
  const log = new LineLogger({
    writer: {
      async write(p: Uint8Array) {
        await gate; // the reader of our stderr is stuck
        written.push(decoder.decode(p));
        return p.length;
      },
    },
    now: () => 0,
  });
  for (let i = 0; i < MAX_QUEUED_LINES + 25; i++) log.log("info", `line ${i}`);
  release();
  await log.flush();
  const lines = written.join("").trimEnd().split("\n");
  assert.equal(lines.filter((l) => l.includes("INFO  line")).length, MAX_QUEUED_LINES);
  assert.equal(lines.at(MAX_QUEUED_LINES - 1), "1970-01-01T00:00:00.000Z INFO  line 9999");
  assert.match(lines.at(-1)!, /WARN {2}log output was too slow; lines dropped dropped=25/);
  // Queued lines leave in batches, not one write each.
  assert.ok(written.length <= 2, `${written.length} writes`);
  // Once drained, logging works normally again.
  log.log("info", "after");
  await log.flush();
  assert.match(written.at(-1)!, /INFO {2}after/);
});

/** A logger batching for `batchMs` (in `format`), and the text of each write it made. */
function batchedLogger(batchMs: number, format?: "text" | "json") {
  const writes: string[] = [];
  const decoder = new TextDecoder();
  const log = new LineLogger({
    writer: {
      write(p: Uint8Array) {
        writes.push(decoder.decode(p));
        return p.length;
      },
    },
    format,
    now: () => 0,
    batchMs,
  });
  return { log, writes };
}

Deno.test("LineLogger with batchMs holds info lines for one write, bounded in time", async () => {
  const { log, writes } = batchedLogger(40);
  log.log("info", "a");
  await new Promise((r) => setTimeout(r, 0));
  log.log("info", "b");
  await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(writes, [], "info lines wait for the batch");
  // The bound: without any flush the lines leave once batchMs has passed.
  const deadline = Date.now() + 2_000;
  while (writes.length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(writes.length, 1);
  assert.match(writes[0], /INFO {2}a\n.*INFO {2}b\n$/s);
});

Deno.test("LineLogger with batchMs writes warnings at once, and flush() does not wait for the timer", async () => {
  const { log, writes } = batchedLogger(60_000);
  log.log("info", "queued");
  log.log("warn", "urgent");
  await new Promise((r) => setTimeout(r, 0));
  // The warning takes the queued info line with it, in order.
  assert.equal(writes.length, 1);
  assert.match(writes[0], /INFO {2}queued\n.*WARN {2}urgent\n$/s);
  log.log("info", "late");
  const started = Date.now();
  await log.flush(); // a pending 60 s timer must be cancelled, not awaited (or leaked)
  assert.ok(Date.now() - started < 1_000);
  assert.match(writes.at(-1)!, /INFO {2}late\n$/);
  assert.equal(writes.length, 2);
});

Deno.test("LineLogger with batchMs writes a batch past MAX_BATCH_BYTES without waiting", async () => {
  const writes: number[] = [];
  const log = new LineLogger({
    writer: {
      write(p: Uint8Array) {
        writes.push(p.length);
        return p.length;
      },
    },
    now: () => 0,
    batchMs: 60_000,
  });
  const big = "x".repeat(1000);
  for (let i = 0; i < 70; i++) log.log("info", big);
  await new Promise((r) => setTimeout(r, 0));
  assert.ok(writes.length >= 1, "a full batch leaves without the timer");
  assert.ok(writes[0] >= MAX_BATCH_BYTES);
  await log.flush();
  assert.equal(writes.reduce((a, b) => a + b, 0), 70 * (big.length + 32));
});

Deno.test("LineLogger with batchMs: a field it cannot format loses no other line and rejects nothing", async () => {
  // Fields are typed as primitives, but nothing stops an `any` from slipping
  // a Symbol or a BigInt in. Formatted at log() time (before batching) such
  // a value threw to its caller; formatted at drain time it must not reject
  // the drain (an unhandled rejection ends the process) nor take the rest
  // of the batch with it.
  for (const format of ["text", "json"] as const) {
    const { log, writes } = batchedLogger(5, format);
    log.log("info", "before");
    const odd = format === "text" ? Symbol("s") : 10n;
    try {
      log.log("info", "odd", { v: odd as unknown as string });
    } catch { /* throwing to the caller is fine too */ }
    log.log("info", "after");
    await new Promise((r) => setTimeout(r, 30)); // the timer's drain, not flush()
    await log.flush();
    const text = writes.join("");
    assert.match(text, /before/, format);
    assert.match(text, /after/, format);
  }
});
