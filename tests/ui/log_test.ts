import assert from "node:assert/strict";
import { LineLogger, MAX_QUEUED_LINES, shouldUseColor } from "../../lib/ui/log.ts";

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
