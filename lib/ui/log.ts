/**
 * Headless logging: one line per record, as text for people or JSON for log
 * shippers (`--log-format json`). Used when stdout is not a TTY or with
 * `--no-tui`; the live UI's log pane reuses `formatText`.
 */
import {
  type LogFields,
  type Logger,
  type LogLevel,
  type LogRecord,
  redact,
} from "../core/logger.ts";
import { REQUEST_MSG, requestLogFields, type RequestLogLine } from "../core/request_log.ts";
import { paint, type Style } from "./ansi.ts";
import { safeText, terminalJson } from "./terminal_text.ts";

/** Something bytes can be written to (`Deno.stdout`, `Deno.stderr`, a test buffer). */
export interface ByteWriter {
  /** Writes some or all of `p`; returns how many bytes were taken. */
  write(p: Uint8Array): Promise<number> | number;
}

/** Writes all of `p`, looping over partial writes (`Deno.stdout.write` may take less). */
export async function writeAll(w: ByteWriter, p: Uint8Array): Promise<void> {
  let off = 0;
  while (off < p.length) {
    const n = await w.write(p.subarray(off));
    if (n <= 0) throw new Error("Cannot write log output: the writer accepted 0 bytes");
    off += n;
  }
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const LEVEL_STYLE: Record<LogLevel, Style> = {
  debug: "dim",
  info: "cyan",
  warn: "yellow",
  error: "red",
};

/** True when a record at `level` passes a `min` filter. */
export function levelEnabled(level: LogLevel, min: LogLevel): boolean {
  return LEVEL_RANK[level] >= LEVEL_RANK[min];
}

/**
 * Whether to emit ANSI colours: only on a terminal, and never when
 * `NO_COLOR` is set to a non-empty value (no-color.org) or `TERM=dumb`.
 */
export function shouldUseColor(opts: { isTty: boolean; env: Record<string, string | undefined> }) {
  if (!opts.isTty) return false;
  if (opts.env.NO_COLOR) return false;
  if (opts.env.TERM === "dumb") return false;
  return true;
}

/**
 * `k=v`, quoting values a log parser would otherwise split (spaces, quotes,
 * `=`, empty). Values often quote an instance or the vast API (a model id,
 * an error body), so control and escape sequences are stripped first.
 */
function formatValue(v: string | number | boolean | null): string {
  // Finite numbers print as digits, a sign, a dot or an exponent: nothing to clean or quote.
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  const s = safeText(String(v));
  return s === "" || /[\s"=\\]/.test(s) ? JSON.stringify(s) : s;
}

/** Options of `formatText`. */
export interface TextFormatOptions {
  /** Emit ANSI colours (default false). */
  color?: boolean;
  /** `iso` (default) for log files; `clock` (HH:MM:SS, local time) for the TUI pane. */
  time?: "iso" | "clock";
}

/**
 * `2026-11-22T18:11:33.123Z INFO  msg k=v …` (fields with undefined values
 * are left out); the message and values are made terminal-safe (`safeText`).
 */
export function formatText(r: LogRecord, opts: TextFormatOptions = {}): string {
  const color = opts.color ?? false;
  const d = new Date(r.time);
  const time = opts.time === "clock"
    ? [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(
      ":",
    )
    : d.toISOString();
  const level = paint(r.level.toUpperCase().padEnd(5), LEVEL_STYLE[r.level], color);
  // One string built in a loop: this runs once per request line.
  let line = `${paint(time, "dim", color)} ${level} ${safeText(r.msg)}`;
  const fields = r.fields;
  for (const k in fields) {
    if (!Object.hasOwn(fields, k)) continue;
    const v = fields[k];
    if (v === undefined) continue;
    line += ` ${k}=${formatValue(v as string | number | boolean | null)}`;
  }
  return line;
}

/** `{"time","level","msg",...fields}` on one line; `time` is ISO 8601 UTC. */
export function formatJson(r: LogRecord): string {
  const obj: Record<string, unknown> = {
    time: new Date(r.time).toISOString(),
    level: r.level,
    msg: r.msg,
  };
  for (const [k, v] of Object.entries(r.fields)) {
    // Fields never overwrite the three fixed keys a log shipper indexes on.
    if (v !== undefined && !(k in obj)) obj[k] = v;
  }
  // Exact values (JSON escapes C0 controls itself); C1 and bidi controls,
  // which it leaves raw, are written as \u escapes.
  return terminalJson(obj);
}

/** Options of `LineLogger`. */
export interface LineLoggerOptions {
  /** Where lines go (e.g. `Deno.stderr`). */
  writer: ByteWriter;
  /** `text` (default) or `json`. */
  format?: "text" | "json";
  /** Lowest level written (default `info`). */
  level?: LogLevel;
  /** Strings replaced by `[redacted]` in every line (API key, auth token, …). */
  secrets?: readonly string[];
  /** ANSI colours in text format (default false; JSON never has colour). */
  color?: boolean;
  /** Time source (default `Date.now`). */
  now?: () => number;
  /**
   * Longest a line may wait to be batched with later ones, ms (default 0:
   * lines wait only for the rest of the current turn). Warnings and errors,
   * and a batch past `MAX_BATCH_BYTES`, go out at once regardless.
   */
  batchMs?: number;
}

/** Queued text that is written at once rather than waiting for `batchMs`. */
export const MAX_BATCH_BYTES = 64 * 1024;

/** Lines a `LineLogger` holds for a slow writer before it starts dropping. */
export const MAX_QUEUED_LINES = 10_000;

/**
 * Text a `LineLogger` holds for a slow writer before it starts dropping,
 * in UTF-16 units of the values queued: a client's request path can be
 * hundreds of kilobytes once percent-encoded, so a line count alone does
 * not bound memory.
 */
export const MAX_QUEUED_CHARS = 16 * 1024 * 1024;

/** Longest string value a log line shows; the rest is cut, after redaction, and counted. */
export const MAX_FIELD_CHARS = 2048;

/**
 * `s` cut to `MAX_FIELD_CHARS`, saying how much was left out. Apply it to a
 * redacted value: cutting first could leave part of a secret that no longer
 * matches it.
 */
export function clipped(s: string): string {
  if (s.length <= MAX_FIELD_CHARS) return s;
  let end = MAX_FIELD_CHARS;
  // Not between the halves of a surrogate pair.
  const last = s.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${s.slice(0, end)}…(+${s.length - end} chars)`;
}

/** A log value as a line shows it: secrets redacted, then cut (`clipped`). */
export function shownValue(s: string, secrets: readonly string[]): string {
  return clipped(redact(s, secrets));
}

/** `fields` with every string value as `shownValue` makes it; other values kept. */
export function shownFields(fields: LogFields, secrets: readonly string[]): LogFields {
  const shown: LogFields = {};
  for (const k in fields) {
    if (!Object.hasOwn(fields, k)) continue;
    const v = fields[k];
    shown[k] = typeof v === "string" ? shownValue(v, secrets) : v;
  }
  return shown;
}

/** A request line waiting for a batched write, with the time it was logged. */
class QueuedRequest {
  constructor(readonly time: number, readonly line: RequestLogLine) {}
}

/**
 * A `Logger` writing one line per record. Writes are chained so lines keep
 * their order even though the writer is asynchronous; `flush()` waits for
 * them (call it before exiting).
 */
export class LineLogger implements Logger {
  #opts: Required<Omit<LineLoggerOptions, "secrets">> & { secrets: readonly string[] };
  #encoder = new TextEncoder();
  #failed = false;
  /**
   * Lines waiting for the writer: formatted (newline included), or records
   * of batched lines, formatted when the batch is written.
   */
  #queue: (string | LogRecord | QueuedRequest)[] = [];
  /** The running drain, while there is one. */
  #draining: Promise<void> | null = null;
  /** Lines dropped since the queue was last full. */
  #dropped = 0;
  /** UTF-16 length of the queued text, estimated for records (a cheap stand-in for its bytes). */
  #queuedChars = 0;
  /** The pending `batchMs` timer, while lines wait for it. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** A text request line's level and message, coloured and redacted once. */
  #requestHead: string;
  /** What a request line adds to its method and path, at most (for `#queuedChars`). */
  #requestChars: number;

  /** See `LineLoggerOptions` for defaults. */
  constructor(opts: LineLoggerOptions) {
    this.#opts = {
      writer: opts.writer,
      format: opts.format ?? "text",
      level: opts.level ?? "info",
      secrets: opts.secrets ?? [],
      color: opts.format === "json" ? false : opts.color ?? false,
      now: opts.now ?? Date.now,
      batchMs: opts.batchMs ?? 0,
    };
    this.#requestHead = `${paint("INFO ", LEVEL_STYLE.info, this.#opts.color)} ${
      safeText(redact(REQUEST_MSG, this.#opts.secrets))
    }`;
    // The longest numbers a line shows, plus quotes and the newline.
    this.#requestChars = 6 + this.#formatRequest(0, {
      method: "",
      path: "",
      instance: Number.MAX_SAFE_INTEGER,
      status: 999,
      bytes: Number.MAX_SAFE_INTEGER,
      durationMs: 1e12,
      attempts: 999,
      clientCancelled: true,
    }).length;
  }

  /**
   * Queues one request line (info level), formatted by `#formatRequest`:
   * the same text as `log("info", "request", requestLogFields(line))`
   * without the records and field loops of the general path, which ran
   * once per request. `line` is kept, not copied, until the batch is written.
   */
  request(line: RequestLogLine): void {
    if (!levelEnabled("info", this.#opts.level)) return;
    if (this.#full()) return;
    const time = this.#opts.now();
    const batched = this.#opts.batchMs > 0;
    if (batched) {
      this.#queue.push(new QueuedRequest(time, line));
      this.#queuedChars += this.#requestChars + line.method.length + line.path.length;
    } else {
      const text = this.#formatRequest(time, line);
      this.#queue.push(text + "\n");
      this.#queuedChars += text.length + 1;
    }
    this.#queued(batched);
  }

  /** Formats and queues one line. */
  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    if (!levelEnabled(level, this.#opts.level)) return;
    // A slow reader of our output (a stalled pipe, a log shipper) must not
    // grow memory without bound or hold up requests: past MAX_QUEUED_LINES,
    // lines are dropped and the gap is reported once the queue drains.
    if (this.#full()) return;
    const time = this.#opts.now();
    const wait = this.#opts.batchMs;
    const batched = wait > 0 && LEVEL_RANK[level] < LEVEL_RANK.warn;
    if (batched) {
      // Formatted when the batch is written, not here: a request's line is
      // logged right after its answer went out, and formatting it there
      // held up the client's next request (one CPU shared with the client,
      // caches the request path needs). The fields are copied, as the
      // caller may reuse its object.
      const copy: LogFields = {};
      let chars = msg.length + 32;
      for (const k in fields) {
        if (!Object.hasOwn(fields, k)) continue;
        const v = fields[k];
        copy[k] = v;
        chars += k.length + 2 + (typeof v === "string" ? v.length : 8);
      }
      this.#queue.push({ time, level, msg, fields: copy });
      this.#queuedChars += chars;
    } else {
      const line = this.format({ time, level, msg, fields });
      this.#queue.push(line + "\n");
      this.#queuedChars += line.length + 1;
    }
    this.#queued(batched);
  }

  /** True (and the line counted as dropped) when the queue holds all it may. */
  #full(): boolean {
    if (this.#queue.length < MAX_QUEUED_LINES && this.#queuedChars < MAX_QUEUED_CHARS) return false;
    this.#dropped++;
    return true;
  }

  /** Starts or schedules the drain for what was just queued. */
  #queued(batched: boolean): void {
    if (this.#draining) return; // the running drain takes it
    if (batched && this.#queuedChars < MAX_BATCH_BYTES) {
      // At a thousand requests a second, a write per turn was a write (and a
      // hop to Deno's blocking-I/O thread and back) per request line.
      this.#timer ??= setTimeout(() => this.#startDrain(), this.#opts.batchMs);
      return;
    }
    this.#startDrain();
  }

  #startDrain(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    this.#draining ??= this.#drain();
  }

  /**
   * Writes queued lines in batches: everything logged while the previous
   * write was in flight goes out in one write. One write per request line
   * cost the busy proxy about a tenth of its main thread in the benchmark.
   */
  async #drain(): Promise<void> {
    // Let the lines of the current turn join the first batch.
    await Promise.resolve();
    try {
      while (this.#queue.length > 0) {
        let text = "";
        try {
          for (const l of this.#queue) {
            text += typeof l === "string"
              ? l
              : l instanceof QueuedRequest
              ? this.#formatRequest(l.time, l.line) + "\n"
              : this.#formatLate(l) + "\n";
          }
        } catch {
          // Past V8's longest string, say: the batch is lost, never the
          // process (a rejected drain is an unhandled rejection).
          text = "";
          this.#dropped += this.#queue.length;
        }
        this.#queue.length = 0;
        this.#queuedChars = 0;
        if (this.#dropped > 0) {
          text += this.format({
            time: this.#opts.now(),
            level: "warn",
            msg: "log output was too slow; lines dropped",
            fields: { dropped: this.#dropped },
          }) + "\n";
          this.#dropped = 0;
        }
        // A closed stdout (e.g. `| head`) must not crash the proxy; drop the rest quietly.
        if (this.#failed) continue;
        try {
          await writeAll(this.#opts.writer, this.#encoder.encode(text));
        } catch {
          this.#failed = true;
        }
      }
    } finally {
      this.#draining = null;
    }
  }

  /**
   * A batched record's line, formatted at drain time. A value `format`
   * cannot take (a Symbol or BigInt slipped past the types) threw to the
   * caller of `log()` when lines were formatted there; here it would reject
   * the drain, an unhandled rejection that ends the process, and lose the
   * whole batch. The line is kept without its fields instead.
   */
  #formatLate(r: LogRecord): string {
    try {
      return this.format(r);
    } catch {
      return this.format({ ...r, fields: { log_error: "fields could not be formatted" } });
    }
  }

  /**
   * A request line, without the newline: exactly what `format()` makes of
   * `requestLogFields(line)` (tests compare the two), built in one pass.
   * Values are redacted before they are quoted and the line after, as there.
   */
  #formatRequest(time: number, l: RequestLogLine): string {
    try {
      if (this.#opts.format === "json") {
        return this.format({ time, level: "info", msg: REQUEST_MSG, fields: requestLogFields(l) });
      }
      const secrets = this.#opts.secrets;
      let line =
        `${paint(new Date(time).toISOString(), "dim", this.#opts.color)} ${this.#requestHead}` +
        ` method=${formatValue(shownValue(l.method, secrets))} path=${
          formatValue(shownValue(l.path, secrets))
        }` +
        ` instance=${l.instance === null ? "-" : formatValue(l.instance)} status=${
          formatValue(l.status)
        } bytes=${formatValue(l.bytes)} ms=${formatValue(Math.round(l.durationMs))} attempts=${
          formatValue(l.attempts)
        }`;
      if (l.clientCancelled) line += " cancelled=true";
      return redact(line, secrets);
    } catch {
      // As in #formatLate: a value that slipped past the types costs its fields, not the batch.
      return this.format({
        time,
        level: "info",
        msg: REQUEST_MSG,
        fields: { log_error: "fields could not be formatted" },
      });
    }
  }

  /** The line a record becomes, without the newline (redacted; coloured if enabled). */
  format(r: LogRecord): string {
    const secrets = this.#opts.secrets;
    // Redact values before formatting (JSON escaping could otherwise hide a
    // secret from the final pass) and the whole line after.
    const clean: LogRecord = {
      ...r,
      msg: redact(r.msg, secrets),
      fields: shownFields(r.fields, secrets),
    };
    const line = this.#opts.format === "json"
      ? formatJson(clean)
      : formatText(clean, { color: this.#opts.color });
    return redact(line, secrets);
  }

  /** Resolves once every queued line has been written. */
  async flush(): Promise<void> {
    if (this.#timer !== undefined || this.#queue.length > 0) this.#startDrain();
    while (this.#draining) await this.#draining;
  }
}
