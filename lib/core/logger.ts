/**
 * The logging seam. Modules log through an injected `Logger`; the headless
 * writer (lib/ui/log.ts) and the live UI's log pane are implementations, and
 * tests use `MemoryLogger` to assert on what was said.
 */

import type { RequestLogLine } from "./request_log.ts";

/** Severity of a log record. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured fields attached to a record; never put secrets here. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** One log record. */
export interface LogRecord {
  time: number;
  level: LogLevel;
  msg: string;
  fields: LogFields;
}

/** Where modules send what happened. */
export interface Logger {
  /** Records one event. */
  log(level: LogLevel, msg: string, fields?: LogFields): void;
  /**
   * Records one request line (info level), when the logger formats those
   * itself; `logRequest()` falls back to `log()` without it. The line is
   * handed over: the caller must not change it afterwards.
   */
  request?(line: RequestLogLine): void;
}

/** A logger that drops everything. */
export const nullLogger: Logger = { log() {} };

/** Collects records in memory (tests, and the UI's log pane buffer). */
export class MemoryLogger implements Logger {
  /** Everything logged so far, oldest first. */
  readonly records: LogRecord[] = [];
  #now: () => number;

  /** `now` defaults to `Date.now`. */
  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Appends one record. */
  log(level: LogLevel, msg: string, fields: LogFields = {}): void {
    this.records.push({ time: this.#now(), level, msg, fields });
  }

  /** All records as `msg k=v` lines, for substring assertions. */
  text(): string {
    return this.records
      .map((r) =>
        [r.level, r.msg, ...Object.entries(r.fields).map(([k, v]) => `${k}=${v}`)].join(" ")
      )
      .join("\n");
  }
}

/**
 * Replaces every occurrence of each secret in `text` with `[redacted]`.
 * A last line of defence for log writers: code should not log secrets at all.
 */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    // `includes` first: most text holds no secret, and then nothing is allocated.
    if (s && s.length >= 4 && out.includes(s)) out = out.split(s).join("[redacted]");
  }
  return out;
}
