/**
 * Request bodies, buffered once and within a budget.
 *
 * The relay needs a client's whole body before it dispatches: a retry on
 * another backend replays it, and model-aware routing reads its `model`. A
 * buffer per request is fine for one client, but without limits a few
 * clients that open large uploads and stall can hold any amount of memory
 * for as long as they like. Three limits keep that bounded:
 *
 * - `--max-body`: one body's size (413, as before);
 * - `--max-buffered`: all buffered bodies together, counted by one
 *   `BodyBudget` (503 `server_busy` with `Retry-After` when full);
 * - `--body-timeout`: how long a client may take to send its body (408).
 *
 * A declared `Content-Length` is reserved up front and read into one
 * preallocated buffer (with a BYOB reader when the stream offers one, so
 * chunks land in place instead of in a chunk list that is then copied).
 */
import { type Clock, realClock } from "../core/clock.ts";
import { errorResponse, type ProxyErrorCode } from "./errors.ts";
import { hasBody, rawRequestOf, requestHeader } from "../http1/raw.ts";

/** Ends the body timer; one value, so no `DOMException` is made per request. */
const READ_OVER = Symbol("body read over");

/** Bodies up to this size count as ordinary API requests (a chat request is a few KiB). */
export const SMALL_BODY_BYTES = 1024 * 1024;

/** What a 503 `server_busy` tells the client to wait, seconds. */
export const BUSY_RETRY_AFTER_S = 2;

/** Options of `BodyBudget`. */
export interface BodyBudgetOptions {
  /** `--max-buffered`: bytes all buffered request bodies may hold together. */
  maxBytes: number;
  /**
   * `--max-body`, used to size the headroom kept for small bodies so that the
   * largest allowed body still fits in an otherwise idle budget [maxBytes].
   */
  maxBodyBytes?: number;
  /** Bodies up to this size may use the headroom [SMALL_BODY_BYTES]. */
  smallBodyBytes?: number;
}

/**
 * The one owner of the count of request-body bytes held in memory.
 *
 * Large bodies may not fill the last eighth of the budget (less when
 * `--max-body` needs it): that headroom stays for ordinary small requests, so
 * a burst of stalled multi-MiB uploads makes other large uploads wait (503)
 * but never locks out the chat requests of well-behaved clients.
 */
export class BodyBudget {
  readonly #max: number;
  readonly #headroom: number;
  readonly #small: number;
  #used = 0;
  #peak = 0;

  /** See `BodyBudgetOptions` for the defaults. */
  constructor(opts: BodyBudgetOptions) {
    this.#max = opts.maxBytes;
    const largest = Math.min(opts.maxBodyBytes ?? opts.maxBytes, opts.maxBytes);
    this.#headroom = Math.max(0, Math.min(Math.floor(opts.maxBytes / 8), opts.maxBytes - largest));
    this.#small = opts.smallBodyBytes ?? SMALL_BODY_BYTES;
  }

  /** Bytes reserved right now. */
  get used(): number {
    return this.#used;
  }

  /** Most bytes ever reserved at once (for tests and soak checks). */
  get peak(): number {
    return this.#peak;
  }

  /** The budget (`--max-buffered`). */
  get maxBytes(): number {
    return this.#max;
  }

  /**
   * Reserves `bytes` for a body that will then hold `bodyTotal` bytes in all;
   * false when that does not fit (nothing is reserved then).
   */
  tryReserve(bytes: number, bodyTotal: number): boolean {
    const limit = bodyTotal <= this.#small ? this.#max : this.#max - this.#headroom;
    if (this.#used + bytes > limit) return false;
    this.#used += bytes;
    if (this.#used > this.#peak) this.#peak = this.#used;
    return true;
  }

  /** Gives back what `tryReserve` took. */
  release(bytes: number): void {
    this.#used -= bytes;
    if (this.#used < 0) throw new Error(`BodyBudget released more than it reserved (${bytes})`);
  }
}

/** A body read in full. Disposing it gives its bytes back to the budget. */
export interface BodyOk extends Disposable {
  ok: true;
  /** The bytes, or null when the request has no body. */
  body: Uint8Array<ArrayBuffer> | null;
}

/** A body the proxy refused to read; `response()` is what the client gets. */
export interface BodyRefused extends Disposable {
  ok: false;
  code: ProxyErrorCode;
  response(): Response;
}

/**
 * Outcome of `BodyReader.read()`. Both kinds are `Disposable`, so the relay
 * holds one with `using`: the budget is released when the handler returns,
 * that is once response headers arrived (no retry needs the body after that)
 * or the request failed.
 */
export type BodyRead = BodyOk | BodyRefused;

/** Options of `BodyReader`. */
export interface BodyReaderOptions {
  /** `--max-body`: larger bodies get 413. */
  maxBodyBytes: number;
  /** Shared count of buffered bytes [none: only `maxBodyBytes` applies]. */
  budget?: BodyBudget;
  /** `--body-timeout`: total time to receive one body, ms [none]. */
  timeoutMs?: number;
  /** Time source for the timeout [real clock]. */
  clock?: Clock;
}

/** The outcome of one read before it is wrapped with its release. */
type Outcome =
  | { ok: true; body: Uint8Array<ArrayBuffer> | null; held: number }
  | { ok: false; code: ProxyErrorCode };

/** Set when the body deadline passed; read by the loops after each `read()`. */
interface Deadline {
  passed: boolean;
  /** Cancels the body stream (set once a reader exists). */
  cancel?: () => void;
}

/**
 * A body read whole, holding its share of the budget until disposed. A
 * class, not an object literal: a literal with a computed `Symbol.dispose`
 * key and a closure per request showed in the proxy's profile above the
 * parse of the request head.
 */
class HeldBody implements BodyOk {
  readonly ok = true;
  readonly body: Uint8Array<ArrayBuffer> | null;
  #held: number;
  #budget: BodyBudget | undefined;

  constructor(body: Uint8Array<ArrayBuffer> | null, held: number, budget: BodyBudget | undefined) {
    this.body = body;
    this.#held = held;
    this.#budget = budget;
  }

  [Symbol.dispose](): void {
    if (this.#held > 0) this.#budget?.release(this.#held);
    this.#held = 0;
  }
}

/**
 * Reads request bodies under `--max-body`, `--max-buffered` and
 * `--body-timeout`.
 *
 * The timeout is a total deadline for the whole body, not an idle timeout
 * between chunks: an idle timeout lets a client that trickles one byte every
 * few seconds hold its reservation forever, while a total deadline bounds
 * how long any client can keep budget reserved, whatever it does. The price
 * is that a big upload over a slow link needs a longer `--body-timeout`.
 */
export class BodyReader {
  readonly #max: number;
  readonly #budget: BodyBudget | undefined;
  readonly #timeoutMs: number | undefined;
  readonly #clock: Clock;

  /** See `BodyReaderOptions` for the defaults. */
  constructor(opts: BodyReaderOptions) {
    this.#max = opts.maxBodyBytes;
    this.#budget = opts.budget;
    this.#timeoutMs = opts.timeoutMs;
    this.#clock = opts.clock ?? realClock;
  }

  /** Reads `req`'s body in full, or says why not. Never throws. */
  async read(req: Request): Promise<BodyRead> {
    // `req.body` is not touched before the side channel had its chance: for
    // the server's requests it makes a stream that a buffered body never needs.
    if (!hasBody(req)) return this.#wrap({ ok: true, body: null, held: 0 });
    const declared = contentLength(requestHeader(req, "content-length"));
    if (declared !== null && declared > this.#max) {
      await req.body?.cancel().catch(() => {});
      return this.#wrap({ ok: false, code: "request_too_large" });
    }
    if (declared !== null && declared > 0) {
      // Already whole in the server's buffer: no stream, no reader, no timer.
      const raw = rawRequestOf(req);
      if (raw !== undefined && (!this.#budget || this.#budget.tryReserve(declared, declared))) {
        const bytes = raw.takeBody();
        if (bytes !== null && bytes.byteLength === declared) {
          return this.#wrap({ ok: true, body: bytes as Uint8Array<ArrayBuffer>, held: declared });
        }
        this.#budget?.release(declared);
      }
    }
    const stream = req.body!;
    const deadline: Deadline = { passed: false };
    const timer = new AbortController();
    if (this.#timeoutMs !== undefined) {
      this.#clock.sleep(this.#timeoutMs, timer.signal).then(() => {
        deadline.passed = true;
        deadline.cancel?.();
      }, () => {});
    }
    try {
      const outcome = declared !== null
        ? await this.#readDeclared(stream, declared, deadline)
        : await this.#readCounted(stream, deadline);
      return this.#wrap(outcome);
    } finally {
      timer.abort(READ_OVER);
    }
  }

  /** Adds the release (for success) and the error response (for refusals). */
  #wrap(o: Outcome): BodyRead {
    if (!o.ok) {
      const code = o.code;
      return {
        ok: false,
        code,
        response: () =>
          errorResponse(
            code,
            code === "server_busy"
              ? { headers: { "retry-after": String(BUSY_RETRY_AFTER_S) } }
              : {},
          ),
        [Symbol.dispose]() {},
      };
    }
    return new HeldBody(o.body, o.held, this.#budget);
  }

  /**
   * A body of known length: reserve it all, then read into one buffer. The
   * budget is reserved before the first byte, so a stalled upload holds
   * exactly what it may later need and nothing more appears behind our back.
   */
  async #readDeclared(
    stream: ReadableStream<Uint8Array>,
    length: number,
    deadline: Deadline,
  ): Promise<Outcome> {
    if (length === 0) {
      await stream.cancel().catch(() => {});
      return { ok: true, body: new Uint8Array(0), held: 0 };
    }
    if (this.#budget && !this.#budget.tryReserve(length, length)) {
      await stream.cancel().catch(() => {});
      return { ok: false, code: "server_busy" };
    }
    const fail = (code: ProxyErrorCode): Outcome => {
      this.#budget?.release(length);
      return { ok: false, code };
    };
    const byob = byobReader(stream);
    const reader = byob ?? stream.getReader();
    deadline.cancel = () => void reader.cancel().catch(() => {});
    let buffer = new ArrayBuffer(length);
    let filled = 0;
    try {
      while (filled < length) {
        if (byob) {
          // The BYOB read transfers `buffer`; the view it returns lives on the
          // transferred buffer, which becomes ours again.
          const r = await byob.read(new Uint8Array(buffer, filled, length - filled));
          if (r.value) buffer = r.value.buffer as ArrayBuffer;
          if (deadline.passed) return fail("request_timeout");
          if (r.done) break;
          filled += r.value!.byteLength;
        } else {
          const r = await (reader as ReadableStreamDefaultReader<Uint8Array>).read();
          if (deadline.passed) return fail("request_timeout");
          if (r.done) break;
          const chunk = r.value;
          if (chunk.byteLength > length - filled) {
            await reader.cancel().catch(() => {});
            return fail("bad_request"); // more than Content-Length said
          }
          new Uint8Array(buffer).set(chunk, filled);
          filled += chunk.byteLength;
        }
      }
    } catch {
      return fail(deadline.passed ? "request_timeout" : "bad_request");
    } finally {
      deadline.cancel = undefined;
      reader.releaseLock();
    }
    if (filled < length) return fail("bad_request"); // ended before Content-Length
    return { ok: true, body: new Uint8Array(buffer), held: length };
  }

  /**
   * A body without a declared length (chunked): reserve as chunks arrive and
   * keep them in a list; join them once at the end. The join briefly needs
   * the body twice, so it is reserved too.
   */
  async #readCounted(stream: ReadableStream<Uint8Array>, deadline: Deadline): Promise<Outcome> {
    const budget = this.#budget;
    const reader = stream.getReader();
    deadline.cancel = () => void reader.cancel().catch(() => {});
    const chunks: Uint8Array<ArrayBuffer>[] = [];
    let total = 0;
    const fail = async (code: ProxyErrorCode): Promise<Outcome> => {
      budget?.release(total);
      await reader.cancel().catch(() => {});
      return { ok: false, code };
    };
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (deadline.passed) return await fail("request_timeout");
        if (done) break;
        if (total + value.byteLength > this.#max) return await fail("request_too_large");
        if (budget && !budget.tryReserve(value.byteLength, total + value.byteLength)) {
          return await fail("server_busy");
        }
        total += value.byteLength;
        chunks.push(value as Uint8Array<ArrayBuffer>);
      }
    } catch {
      return await fail(deadline.passed ? "request_timeout" : "bad_request");
    } finally {
      deadline.cancel = undefined;
      reader.releaseLock();
    }
    if (chunks.length === 1) return { ok: true, body: chunks[0], held: total };
    if (budget && !budget.tryReserve(total, total)) {
      budget.release(total);
      return { ok: false, code: "server_busy" };
    }
    const body = new Uint8Array(total);
    let offset = 0;
    for (const c of chunks) {
      body.set(c, offset);
      offset += c.byteLength;
    }
    chunks.length = 0;
    budget?.release(total); // the chunks are garbage now; `body` keeps its own reservation
    return { ok: true, body, held: total };
  }
}

/** A BYOB reader when the stream is a byte stream (Deno.serve's are), else undefined. */
function byobReader(stream: ReadableStream<Uint8Array>): ReadableStreamBYOBReader | undefined {
  try {
    return stream.getReader({ mode: "byob" });
  } catch {
    return undefined;
  }
}

/** A `Content-Length` value as a number, or null when absent or not a plain count. */
function contentLength(value: string | null): number | null {
  if (value === null || !/^\s*\d{1,15}\s*$/.test(value)) return null;
  return Number(value);
}
