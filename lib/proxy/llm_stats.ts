/**
 * LLM metrics the proxy measures itself (issue #15): time to first token,
 * inter-token latency, output tokens and tokens per second, per backend and
 * per model.
 *
 * `LlmObserver` watches one relayed response. The relay hands it each chunk
 * after enqueueing it, and it only reads: no copy of a chunk goes anywhere,
 * nothing waits on it. SSE is scanned for blank-line event boundaries with
 * `indexOf`; only the tail of an event split across chunks is kept (bounded),
 * and only events that may carry `usage` are JSON-parsed. A small JSON body
 * (non-streaming completions) is kept up to a bound and parsed at the end.
 * Garbage never throws: it just yields fewer numbers.
 *
 * `LlmStats` is what a `Backend` keeps: fixed-bucket histograms and counters
 * per model label, bounded in number.
 */
import type { HeaderPairs } from "../http1/types.ts";
import { type HistogramData, LatencyHistogram } from "./histogram.ts";
import { mediaTypeOf } from "./body_model.ts";

/** TTFT bucket bounds, ms: from a cached prompt on a small model to a long queue. */
export const TTFT_BUCKETS_MS: readonly number[] = Object.freeze([
  10,
  25,
  50,
  100,
  250,
  500,
  1_000,
  2_500,
  5_000,
  10_000,
  30_000,
  60_000,
]);
/** Inter-token latency bucket bounds, ms: a few ms on a fast GPU to seconds under load. */
export const ITL_BUCKETS_MS: readonly number[] = Object.freeze([
  1,
  2.5,
  5,
  10,
  20,
  30,
  50,
  75,
  100,
  150,
  250,
  500,
  1_000,
  2_500,
]);

/** What one response showed. */
export interface LlmSample {
  /** The request's `model` when routing read it, else null (the backend names it). */
  model: string | null;
  /** Dispatch to the first SSE event with content, ms; null for JSON bodies. */
  ttftMs: number | null;
  /** Gaps between content events (ITL_BUCKETS_MS), or null with fewer than two. */
  itl: HistogramData | null;
  /** `usage.completion_tokens` when the engine sent it, else the content events counted. */
  outputTokens: number;
  /** Tokens after the first over the time after the first; null for JSON bodies or one event. */
  tokensPerSec: number | null;
}

/** Largest SSE event inspected; larger ones count as content unread. */
const MAX_EVENT_BYTES = 64 * 1024;
/** Largest non-streaming JSON body inspected for `usage`. */
const MAX_JSON_BYTES = 1024 * 1024;
const LF = 10;
const CR = 13;
const COMPLETION_PATHS = new Set(["/v1/chat/completions", "/v1/completions"]);
// A non-empty string value under a key that carries generated text (chat
// deltas, text completions, reasoning, tool-call arguments). Escaped quotes
// inside a value cannot match: `\"content\"` has a backslash before the quote.
const CONTENT = /"(?:content|text|reasoning_content|reasoning|arguments)"\s*:\s*"[^"]/;
const decoder = new TextDecoder();

/**
 * An observer for a response to `method path`, or null when it is not an
 * LLM completion worth measuring (other routes, errors, other media types).
 */
export function llmObserverFor(
  req: { method: string; path: string; model: string | null },
  res: { status: number; headers: HeaderPairs },
  clock: { startedAt: number; now: () => number },
): LlmObserver | null {
  if (req.method !== "POST" || !COMPLETION_PATHS.has(withoutTrailingSlashes(req.path))) return null;
  if (res.status < 200 || res.status > 299) return null;
  let contentType: string | null = null;
  for (const [n, v] of res.headers) {
    // Engines send it in lower case: the exact compare spares a lowercased copy of each name.
    if (n === "content-type" || (n.length === 12 && n.toLowerCase() === "content-type")) {
      contentType = v;
      break;
    }
  }
  // The exact values engines send need no parse of the media type.
  const type = contentType === "application/json" || contentType === "text/event-stream"
    ? contentType
    : mediaTypeOf(contentType);
  const mode = type === "text/event-stream" ? "sse" : type === "application/json" ? "json" : null;
  if (!mode) return null;
  return new LlmObserver({ mode, model: req.model, startedAt: clock.startedAt, now: clock.now });
}

/** `path.replace(/\/+$/, "")` without a regex run per request. */
export function withoutTrailingSlashes(path: string): string {
  let end = path.length;
  while (end > 0 && path.charCodeAt(end - 1) === 0x2f) end--;
  return end === path.length ? path : path.slice(0, end);
}

/** Watches one response's bytes; `finish()` says what it saw. */
export class LlmObserver {
  readonly #mode: "sse" | "json";
  readonly #model: string | null;
  readonly #startedAt: number;
  readonly #now: () => number;
  // Bytes of an event (or the JSON body) not yet complete; bounded.
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #oversize = false;
  // The last byte seen ended a line (CRs ignored), so an LF now ends the event.
  #atLineStart = false;
  #firstAt: number | null = null;
  #lastAt: number | null = null;
  #events = 0;
  #usageTokens: number | null = null;
  // A JSON body given to whole(), decoded.
  #text: string | null = null;
  // Made at the second content event: most responses observed are JSON bodies.
  #itl: LatencyHistogram | null = null;

  /** Prefer `llmObserverFor()`, which picks the mode from the response. */
  constructor(
    opts: { mode: "sse" | "json"; model: string | null; startedAt: number; now: () => number },
  ) {
    this.#mode = opts.mode;
    this.#model = opts.model;
    this.#startedAt = opts.startedAt;
    this.#now = opts.now;
  }

  /** Feeds one relayed chunk. Never throws, never keeps `bytes` past an event's bound. */
  chunk(bytes: Uint8Array): void {
    try {
      if (this.#mode === "json") this.#keep(bytes, MAX_JSON_BYTES);
      else this.#scan(bytes);
    } catch {
      // An observer bug must not break the relay; the numbers are best effort.
    }
  }

  /**
   * Feeds a whole body at once, instead of `chunk()` (a small answer that
   * came with its head). A JSON body is decoded now instead of copied for
   * `finish()`: the text is immutable, so it needs no copy, and decoding a
   * few hundred bytes costs a fraction of allocating the copy, on the
   * response's path.
   */
  whole(bytes: Uint8Array): void {
    if (
      this.#mode !== "json" || this.#text !== null || this.#pendingBytes !== 0 || this.#oversize
    ) {
      return this.chunk(bytes);
    }
    try {
      if (bytes.byteLength > MAX_JSON_BYTES) this.#oversize = true;
      else this.#text = decoder.decode(bytes);
    } catch {
      // As for chunk(): best effort.
    }
  }

  /** What the response showed, or null when it held no completion at all. */
  finish(): LlmSample | null {
    if (this.#mode === "json") {
      const body = this.#oversize ? null : this.#text ?? this.#joined();
      this.#usageTokens = body ? usageTokens(body) : null;
      if (this.#usageTokens === null) return null;
      return {
        model: this.#model,
        ttftMs: null,
        itl: null,
        outputTokens: this.#usageTokens,
        tokensPerSec: null,
      };
    }
    if (this.#events === 0 && this.#usageTokens === null) return null;
    const tokens = this.#usageTokens ?? this.#events;
    const span = this.#firstAt !== null && this.#lastAt !== null ? this.#lastAt - this.#firstAt : 0;
    return {
      model: this.#model,
      ttftMs: this.#firstAt === null ? null : this.#firstAt - this.#startedAt,
      itl: this.#itl !== null && this.#itl.count > 0 ? this.#itl.data() : null,
      outputTokens: tokens,
      tokensPerSec: this.#events >= 2 && span > 0 && tokens > 1
        ? (tokens - 1) / (span / 1000)
        : null,
    };
  }

  /** Finds event ends (a blank line) in `bytes`; completes and handles each event. */
  #scan(bytes: Uint8Array): void {
    let start = 0; // where the current event's bytes begin in this chunk
    let i = 0;
    for (;;) {
      const lf = bytes.indexOf(LF, i);
      if (lf === -1) {
        if (!onlyCr(bytes, i, bytes.length)) this.#atLineStart = false;
        break;
      }
      if (this.#atLineStart && onlyCr(bytes, i, lf)) {
        this.#event(bytes.subarray(start, lf));
        start = lf + 1;
        this.#atLineStart = false;
      } else {
        this.#atLineStart = true;
      }
      i = lf + 1;
    }
    if (start < bytes.length) this.#keep(bytes.subarray(start), MAX_EVENT_BYTES);
  }

  /** One complete event: `tail` is its last bytes, after any kept in `#pending`. */
  #event(tail: Uint8Array): void {
    const oversize = this.#oversize || this.#pendingBytes + tail.byteLength > MAX_EVENT_BYTES;
    const text = oversize ? null : this.#pendingBytes === 0 ? decoder.decode(tail) : (
      this.#keep(tail, MAX_EVENT_BYTES), this.#joined()
    );
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#oversize = false;
    if (text === null) {
      this.#content(); // too big to read: only generated text gets that big
      return;
    }
    const data = dataOf(text);
    if (data === null || data === "[DONE]") return;
    if (data.includes('"usage"') && data.includes('"completion_tokens"')) {
      const n = usageTokens(data);
      if (n !== null) this.#usageTokens = n;
    }
    if (CONTENT.test(data)) this.#content();
  }

  #content(): void {
    const t = this.#now();
    if (this.#firstAt === null) this.#firstAt = t;
    else if (this.#lastAt !== null) {
      (this.#itl ??= new LatencyHistogram(ITL_BUCKETS_MS)).observe(t - this.#lastAt);
    }
    this.#lastAt = t;
    this.#events++;
  }

  /** Keeps `bytes` (copied: the chunk belongs to the client now) unless over `limit`. */
  #keep(bytes: Uint8Array, limit: number): void {
    if (this.#oversize || bytes.byteLength === 0) return;
    if (this.#pendingBytes + bytes.byteLength > limit) {
      this.#oversize = true;
      this.#pending = [];
      this.#pendingBytes = 0;
      return;
    }
    this.#pending.push(bytes.slice());
    this.#pendingBytes += bytes.byteLength;
  }

  #joined(): string {
    // One kept chunk (a JSON body that came with its head) is already a copy of its own.
    if (this.#pending.length === 1) return decoder.decode(this.#pending[0]);
    const out = new Uint8Array(this.#pendingBytes);
    let at = 0;
    for (const p of this.#pending) {
      out.set(p, at);
      at += p.byteLength;
    }
    return decoder.decode(out);
  }
}

function onlyCr(bytes: Uint8Array, from: number, to: number): boolean {
  for (let k = from; k < to; k++) if (bytes[k] !== CR) return false;
  return true;
}

/** The `data:` lines of an SSE event joined by LF (per the SSE spec), or null without any. */
function dataOf(event: string): string | null {
  let data: string | null = null;
  for (const raw of event.split("\n")) {
    const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    if (!line.startsWith("data:")) continue;
    const value = line.startsWith("data: ") ? line.slice(6) : line.slice(5);
    data = data === null ? value : `${data}\n${value}`;
  }
  return data;
}

/** `usage.completion_tokens` of a JSON text, or null. */
export function usageTokens(json: string): number | null {
  const fast = usageTokensFast(json);
  if (fast !== undefined) return fast;
  try {
    return tokenCount(JSON.parse(json)?.usage?.completion_tokens);
  } catch {
    return null;
  }
}

function tokenCount(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null;
}

/**
 * The same answer without parsing the whole body, for the usual shape: the
 * text ends with the top-level `"usage": {…}` object. Parsing a whole
 * completion per response showed in the proxy's profile; the usage object
 * is a few dozen bytes. Returns undefined (take the full parse) for any
 * other shape.
 */
function usageTokensFast(json: string): number | null | undefined {
  // Inside a JSON string every quote is escaped, so `"usage"` with both of
  // its quotes bare is a key or a whole string value, never part of one.
  // The closing quote is bare by construction (`e` is no backslash); the
  // opening one is escaped when an odd run of backslashes precedes it (a
  // key such as `say \"usage`): then leave it to the full parse.
  const key = json.lastIndexOf('"usage"');
  if (key === -1) return undefined;
  let slashes = 0;
  while (key - slashes > 0 && json.charCodeAt(key - slashes - 1) === 0x5c) slashes++;
  if (slashes % 2 === 1) return undefined;
  let i = skipWs(json, key + 7);
  if (json[i] !== ":") return undefined;
  i = skipWs(json, i + 1);
  if (json[i] !== "{") return undefined;
  const end = objectEnd(json, i);
  if (end === -1) return undefined;
  // Top level only: the rest of the text must close the outer object.
  const rest = skipWs(json, end);
  if (json[rest] !== "}" || skipWs(json, rest + 1) !== json.length) return undefined;
  try {
    return tokenCount(JSON.parse(json.slice(i, end))?.completion_tokens);
  } catch {
    return undefined;
  }
}

function skipWs(s: string, i: number): number {
  while (i < s.length && (s[i] === " " || s[i] === "\n" || s[i] === "\r" || s[i] === "\t")) i++;
  return i;
}

/** Index just past the object that opens at `s[open]`, or -1; strings are skipped whole. */
function objectEnd(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) { // a string: skip to its closing quote
      for (i++; i < s.length && s.charCodeAt(i) !== 0x22; i++) if (s.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      if (--depth === 0) return i + 1;
    }
  }
  return -1;
}

/** Per-backend LLM numbers for /vastproxy/status and the table. */
export interface LlmSnapshot {
  /** Median time to first token, ms (estimated from buckets), or null before any stream. */
  ttftP50Ms: number | null;
  /** Median inter-token latency, ms, or null. */
  itlP50Ms: number | null;
  /** Recent decode speed of one stream (moving average), or null. */
  tokensPerSec: number | null;
  /** Output tokens relayed so far. */
  outputTokens: number;
}

/** One model's LLM metrics on one backend, for /vastproxy/metrics. */
export interface LlmModelData {
  ttft: HistogramData;
  itl: HistogramData;
  outputTokens: number;
}

/** Distinct model labels kept per backend; later ones are counted as `other`. */
export const MAX_MODEL_LABELS = 16;
/** Weight of the newest stream in the tokens/s moving average. */
const TPS_ALPHA = 0.2;

class ModelStats {
  ttft = new LatencyHistogram(TTFT_BUCKETS_MS);
  itl = new LatencyHistogram(ITL_BUCKETS_MS);
  outputTokens = 0;
}

/** One backend's LLM metrics; its owner calls `record()`. */
export class LlmStats {
  #all = new ModelStats();
  #models = new Map<string, ModelStats>();
  #tps: number | null = null;

  /** Adds one response's sample under `label` (the caller bounds labels to what it serves). */
  record(label: string, s: LlmSample): void {
    let m = this.#models.get(label);
    if (!m) {
      const key = this.#models.size < MAX_MODEL_LABELS ? label : "other";
      m = this.#models.get(key) ?? new ModelStats();
      this.#models.set(key, m);
    }
    for (const target of [this.#all, m]) {
      if (s.ttftMs !== null) target.ttft.observe(s.ttftMs);
      if (s.itl) target.itl.merge(s.itl);
      target.outputTokens += s.outputTokens;
    }
    if (s.tokensPerSec !== null && Number.isFinite(s.tokensPerSec)) {
      this.#tps = this.#tps === null
        ? s.tokensPerSec
        : this.#tps + TPS_ALPHA * (s.tokensPerSec - this.#tps);
    }
  }

  /** The numbers the status shows. */
  snapshot(): LlmSnapshot {
    return Object.freeze({
      ttftP50Ms: this.#all.ttft.quantile(0.5),
      itlP50Ms: this.#all.itl.quantile(0.5),
      tokensPerSec: this.#tps,
      outputTokens: this.#all.outputTokens,
    });
  }

  /** Copies per model label, for /vastproxy/metrics. */
  data(): Map<string, LlmModelData> {
    return new Map(
      [...this.#models].map((
        [k, m],
      ) => [k, { ttft: m.ttft.data(), itl: m.itl.data(), outputTokens: m.outputTokens }]),
    );
  }
}
