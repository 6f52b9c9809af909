import assert from "node:assert/strict";
import {
  clipped,
  LineLogger,
  MAX_BATCH_BYTES,
  MAX_FIELD_CHARS,
  MAX_QUEUED_CHARS,
  MAX_QUEUED_LINES,
} from "../../lib/ui/log.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { logRequest, requestLogFields, type RequestLogLine } from "../../lib/core/request_log.ts";
import { SwitchLogger } from "../../lib/commands/_serve_ui.ts";

const T = Date.parse("2026-12-01T23:40:05.007Z");

/** A request line: a plain GET unless told otherwise. */
function requestLine(fields: Partial<RequestLogLine> = {}): RequestLogLine {
  return {
    method: "GET",
    path: "/",
    instance: 1,
    status: 200,
    bytes: 0,
    durationMs: 0,
    attempts: 1,
    clientCancelled: false,
    ...fields,
  };
}

/** A logger and the text of everything it wrote. */
function logger(opts: {
  format?: "text" | "json";
  color?: boolean;
  secrets?: string[];
  batchMs?: number;
  level?: "info" | "warn";
  now?: () => number;
}) {
  const decoder = new TextDecoder();
  let text = "";
  const log = new LineLogger({
    writer: {
      write(p: Uint8Array) {
        text += decoder.decode(p);
        return p.length;
      },
    },
    now: () => T,
    ...opts,
  });
  return { log, text: () => text };
}

/** A small seeded PRNG (mulberry32): the same hostile lines on every run. */
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Pieces a client can put in a method or path, and the secrets around them.
const PIECES = [
  "/v1/chat/completions",
  "GET",
  "POST",
  "request",
  " ",
  '"',
  "\\",
  "=",
  "\t",
  "\n",
  "\r",
  "\x1b[31m",
  "\x1b]0;title\x07",
  "\x00",
  "\x7f",
  "\u009b",
  "\u202e",
  "\u2066",
  "é",
  "日本",
  "😀",
  "\ud800",
  "sk-secret-key",
  "tok3n",
  'ke"y',
  "se\\cret",
  "method=",
  "[redacted]",
  "%2F",
  "",
  "/" + "p".repeat(1500),
];
// A quote or backslash in a secret is escaped by quoting: only redacting the
// value before it is quoted catches it.
const SECRETS = [
  "sk-secret-key",
  "tok3n",
  'ke"y',
  "se\\cret",
  "request",
  "method=GE",
  "200 b",
  "ms=0",
  "INFO",
];

function hostileString(next: () => number): string {
  let s = "";
  const n = Math.floor(next() * 6);
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(next() * PIECES.length)];
  return s;
}

function hostileLine(next: () => number): RequestLogLine {
  const numbers = [0, 1, 7, 200, 499, 502, 12345678, -1, 0.5, 1.49, 2.5, 1e21, NaN, Infinity];
  const pick = () => numbers[Math.floor(next() * numbers.length)];
  return {
    method: hostileString(next),
    path: hostileString(next),
    instance: next() < 0.3 ? null : pick(),
    status: pick(),
    bytes: pick(),
    durationMs: next() * 3000 - 1,
    attempts: pick(),
    clientCancelled: next() < 0.5,
  };
}

Deno.test("LineLogger.request writes exactly what log() writes for the same request line", async () => {
  const next = rng(14);
  let compared = 0;
  for (const format of ["text", "json"] as const) {
    for (const color of [false, true]) {
      for (const secrets of [[], SECRETS, ["request"], ["st m", "h=/v"]]) {
        for (const batchMs of [0, 5]) {
          const dedicated = logger({ format, color, secrets, batchMs });
          const general = logger({ format, color, secrets, batchMs });
          for (let i = 0; i < 60; i++) {
            const line = hostileLine(next);
            dedicated.log.request(line);
            general.log.log("info", "request", requestLogFields(line));
            compared++;
          }
          await Promise.all([dedicated.log.flush(), general.log.flush()]);
          assert.ok(general.text().length > 0);
          assert.equal(dedicated.text(), general.text(), `${format} color=${color} ${secrets}`);
        }
      }
    }
  }
  assert.equal(compared, 2 * 2 * 4 * 2 * 60);
});

Deno.test("LineLogger.request: the usual line, and secrets redacted", async () => {
  const { log, text } = logger({ secrets: ["sk-secret-key"], batchMs: 5 });
  const line = requestLine({
    method: "POST",
    path: "/v1/chat/completions",
    instance: 3,
    bytes: 512,
    durationMs: 12.6,
  });
  log.request(line);
  log.request({
    ...line,
    path: "/x sk-secret-key",
    instance: null,
    status: 499,
    clientCancelled: true,
  });
  await log.flush();
  assert.equal(
    text(),
    "2026-12-01T23:40:05.007Z INFO  request method=POST path=/v1/chat/completions instance=3 status=200 bytes=512 ms=13 attempts=1\n" +
      '2026-12-01T23:40:05.007Z INFO  request method=POST path="/x [redacted]" instance=- status=499 bytes=512 ms=13 attempts=1 cancelled=true\n',
  );
});

Deno.test("LineLogger.request keeps the order of lines logged either way, and the level filter", async () => {
  const { log, text } = logger({ batchMs: 5 });
  const line = (path: string) => requestLine({ path });
  log.request(line("/a"));
  log.log("info", "between");
  log.request(line("/b"));
  await log.flush();
  assert.deepEqual(text().trimEnd().split("\n").map((l) => l.slice(25)), [
    "INFO  request method=GET path=/a instance=1 status=200 bytes=0 ms=0 attempts=1",
    "INFO  between",
    "INFO  request method=GET path=/b instance=1 status=200 bytes=0 ms=0 attempts=1",
  ]);
  // Request lines are info: a logger set to warn writes none.
  const filtered = logger({ level: "warn", batchMs: 5 });
  filtered.log.request(line("/c"));
  filtered.log.log("warn", "kept");
  await filtered.log.flush();
  assert.equal(filtered.text(), "2026-12-01T23:40:05.007Z WARN  kept\n");
});

Deno.test("LineLogger.request: a batch waits for batchMs only up to MAX_BATCH_BYTES", async () => {
  for (const opts of [{}, { color: true }, { format: "json" as const }]) {
    const writes: number[] = [];
    const log = new LineLogger({
      writer: {
        write(p: Uint8Array) {
          writes.push(p.length);
          return p.length;
        },
      },
      now: () => T,
      batchMs: 60_000,
      ...opts,
    });
    const line = requestLine({
      method: "POST",
      path: "/v1/chat/completions",
      instance: 12,
      bytes: 1234567,
      durationMs: 12345.6,
      clientCancelled: true,
    });
    // One line per turn, as requests end: the bound, not the timer, starts the write.
    for (let i = 0; i < 2_000 && writes.length === 0; i++) {
      log.request(line);
      await Promise.resolve();
      await new Promise((r) => setTimeout(r, 0));
    }
    assert.equal(writes.length, 1, `no write before the timer (${JSON.stringify(opts)})`);
    assert.ok(
      writes[0] <= MAX_BATCH_BYTES && writes[0] > MAX_BATCH_BYTES / 2,
      `first write ${writes[0]} bytes (${JSON.stringify(opts)})`,
    );
    await log.flush();
  }
});

Deno.test("LineLogger: a huge path is cut after redaction, and says how much is left out", async () => {
  const secret = "sk-secret-key";
  // The secret straddles the cut: cut first, half of it would be written.
  const path = "/" + "a".repeat(MAX_FIELD_CHARS - 6) + secret + "%C3%BF".repeat(60_000);
  const line = requestLine({ path, instance: null, status: 401, attempts: 0 });
  for (const batchMs of [0, 5]) {
    const dedicated = logger({ secrets: [secret], batchMs });
    const general = logger({ secrets: [secret], batchMs });
    dedicated.log.request(line);
    general.log.log("info", "request", requestLogFields(line));
    await Promise.all([dedicated.log.flush(), general.log.flush()]);
    const text = dedicated.text();
    assert.equal(text, general.text());
    assert.ok(text.length < MAX_FIELD_CHARS + 200, `${text.length} chars`);
    assert.ok(!text.includes("sk-sec"), "part of the secret was written");
    const redacted = path.replace(secret, "[redacted]");
    const shown = `${redacted.slice(0, MAX_FIELD_CHARS)}…(+${
      redacted.length - MAX_FIELD_CHARS
    } chars)`;
    assert.ok(text.includes(` path="${shown}" instance=-`), text.slice(0, 200));
  }
  assert.equal(clipped("x".repeat(MAX_FIELD_CHARS)), "x".repeat(MAX_FIELD_CHARS));
  // A surrogate pair is never split.
  const emoji = "x".repeat(MAX_FIELD_CHARS - 1) + "😀";
  assert.equal(clipped(emoji), "x".repeat(MAX_FIELD_CHARS - 1) + "…(+2 chars)");
});

Deno.test("LineLogger: a stalled writer holds at most MAX_QUEUED_CHARS of huge lines, and nothing rejects", async () => {
  for (const general of [false, true]) {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let written = 0;
    let text = "";
    const decoder = new TextDecoder();
    const log = new LineLogger({
      writer: {
        async write(p: Uint8Array) {
          await gate;
          written += p.length;
          text = decoder.decode(p.subarray(Math.max(0, p.length - 200)));
          return p.length;
        },
      },
      now: () => 0,
      batchMs: 5,
    });
    const path = "/" + "%C3%BF".repeat(65_000); // what a 65 KB target of 0xFF bytes becomes
    const n = 1_000;
    for (let i = 0; i < n; i++) {
      const line = requestLine({ path, instance: null, status: 401, attempts: 0 });
      if (general) log.log("info", "request", requestLogFields(line));
      else log.request(line);
      if (i === 0) await new Promise((r) => setTimeout(r, 20)); // the first batch is stuck writing
    }
    release();
    await log.flush();
    const kept = Math.ceil(MAX_QUEUED_CHARS / path.length);
    const dropped = Number(/dropped=(\d+)/.exec(text)?.[1]);
    assert.ok(dropped >= n - 1 - kept - 1 && dropped < n - 1, `dropped ${dropped}`);
    assert.ok(written < (kept + 2) * (MAX_FIELD_CHARS + 200), `${written} bytes written`);
  }
});

Deno.test("LineLogger.request drops lines past MAX_QUEUED_LINES for a stalled writer, and says so", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const decoder = new TextDecoder();
  let text = "";
  const log = new LineLogger({
    writer: {
      async write(p: Uint8Array) {
        await gate;
        text += decoder.decode(p);
        return p.length;
      },
    },
    now: () => 0,
    batchMs: 5,
  });
  for (let i = 0; i < MAX_QUEUED_LINES + 7; i++) {
    log.request(requestLine({ path: `/${i}` }));
  }
  release();
  await log.flush();
  const lines = text.trimEnd().split("\n");
  assert.equal(lines.filter((l) => l.includes("INFO  request")).length, MAX_QUEUED_LINES);
  assert.match(lines.at(-1)!, /lines dropped dropped=7$/);
});

Deno.test("logRequest and SwitchLogger: own formatter when the target has one, an info record otherwise", async () => {
  const line = requestLine({
    method: "POST",
    path: "/v1/completions",
    instance: null,
    status: 401,
    bytes: 10,
    durationMs: 0.4,
    attempts: 0,
  });
  const memory = new MemoryLogger(() => T);
  const sw = new SwitchLogger(memory);
  logRequest(sw, line);
  assert.deepEqual(memory.records, [{
    time: T,
    level: "info",
    msg: "request",
    fields: {
      method: "POST",
      path: "/v1/completions",
      instance: "-",
      status: 401,
      bytes: 10,
      ms: 0,
      attempts: 0,
      cancelled: undefined,
    },
  }]);
  // A target with its own formatter gets the line itself, not a record.
  const got: unknown[] = [];
  sw.switchTo({ log: (...a) => got.push(["log", ...a]), request: (l) => got.push(["request", l]) });
  logRequest(sw, line);
  assert.equal(got.length, 1);
  assert.deepEqual(got[0], ["request", line]);
  assert.equal((got[0] as unknown[])[1], line);
  const lines = logger({ batchMs: 5 });
  sw.switchTo(lines.log);
  logRequest(sw, line);
  await lines.log.flush();
  assert.equal(
    lines.text(),
    "2026-12-01T23:40:05.007Z INFO  request method=POST path=/v1/completions instance=- status=401 bytes=10 ms=0 attempts=0\n",
  );
  assert.equal(memory.records.length, 1);
});
