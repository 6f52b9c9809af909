/**
 * One accepted client connection of the HTTP/1.1 server (server.ts): reads
 * request heads, hands each request to the handler with its body as a
 * stream (made when first used), writes the response, and keeps the connection alive between
 * requests. Timeouts apply only while the connection waits for a client:
 * for a request head (`headerTimeoutMs`), between requests (`idleTimeoutMs`)
 * and inside a stalled request body (`idleTimeoutMs`). While the handler runs
 * or a response streams, nothing times out: an LLM may take minutes before
 * its first token.
 */
import { ChunkedDecoder, findHeadEnd, resumeFrom } from "./parse.ts";
import {
  BadRequestError,
  parseRequestHead,
  type RequestFraming,
  requestFraming,
  type RequestHead,
} from "./request_head.ts";
import { encodeResponseHead, simpleResponse } from "./response_head.ts";
import { latin1ToBytes } from "./latin1.ts";
import { type HeaderPairs, headerValue } from "./types.ts";
import { type UpgradePlan, upgradePlanOf } from "./upgrade.ts";
import { type RawRequest, responseBytesOf, responseSourceOf, serverRequest } from "./raw.ts";
import type { BodySource } from "./body_source.ts";
import { RequestAbort } from "./request_abort.ts";
import { Framer, PENDING, settledSoon } from "./_response_writer.ts";
import { concatBytes } from "../core/slab.ts";

/** The handler the server runs; the shape of `Deno.serve`'s. */
export type ServerHandler = (
  req: Request,
  info: ServerHandlerInfo,
) => Response | Promise<Response>;

/** What a connection takes from its server. */
export interface ServerConnOptions {
  handler: ServerHandler;
  onError: (err: unknown) => Response | Promise<Response>;
  headerTimeoutMs: number;
  idleTimeoutMs: number;
  maxHeadBytes: number;
  /** `host:port` for requests without a Host field (HTTP/1.0). */
  listenHost: string;
  /** True once the server is shutting down: finish the current response, then close. */
  stopping(): boolean;
  /** Hears what an `onCompleted` listener threw (the connection goes on). */
  onListenerError: (err: unknown) => void;
}

const EMPTY = new Uint8Array(0);
const DONE = Promise.resolve();
/** Read size while waiting for a head: small, since thousands of idle connections each hold one. */
const HEAD_READ = 4 * 1024;
/** Most bytes besides the body a taken body may keep alive (the head it came with, mostly). */
const VIEW_SPARE = 1024;
/** Read size inside a request body. */
const BODY_READ = 64 * 1024;
/** Response bytes gathered before a write, when more are ready at once. */
const WRITE_BATCH = 64 * 1024;
const CONTINUE = latin1ToBytes("HTTP/1.1 100 Continue\r\n\r\n");
/** What `#scanHead` says besides a head: it needs another read, or it is over the limit. */
const MORE = 1;
const TOO_LARGE = 2;

/** Where the connection is: waiting between requests, reading a head, or serving one. */
type Phase = "idle" | "head" | "active";

/**
 * One request while it is served: the body's progress (shared by the body
 * stream and the connection), the handler's side channel (`RawRequest`),
 * and what a disconnect must stop. One object per request where there were
 * a small object and four closures.
 */
class Exchange implements RawRequest {
  readonly headers: HeaderPairs;
  readonly abort = new RequestAbort();
  /** All of the body was read (or there is none). */
  done: boolean;
  /** The handler started reading it. */
  started = false;
  /** Answered or given up: a disconnect from now on aborts nothing. */
  finished = false;
  peerGone = false;
  /** Stops the response body being written (its stream or source), once the client left. */
  cancelResponse: (() => void) | null = null;
  /** The declared length `takeBody` may take whole, or -1. */
  readonly #length: number;
  readonly #take: (ex: Exchange, length: number) => Uint8Array | null;

  constructor(
    headers: HeaderPairs,
    done: boolean,
    length: number,
    take: (ex: Exchange, length: number) => Uint8Array | null,
  ) {
    this.headers = headers;
    this.done = done;
    this.#length = length;
    this.#take = take;
  }

  takeBody(): Uint8Array | null {
    return this.#take(this, this.#length);
  }

  /** The client left while this was served: abort the handler's work, once. */
  peerLeft(): void {
    if (this.finished || this.peerGone) return;
    this.peerGone = true;
    this.abort.abort(new DOMException("client disconnected", "AbortError"));
    this.cancelResponse?.();
  }
}

/** Methods the `Request` normalises to GET or HEAD. */
const GET_OR_HEAD = /^(?:get|head)$/i;

/** Numbers accepted connections; unique for the life of the process. */
let nextConnectionId = 1;

/**
 * What the handler learns about the connection: `Deno.serve`'s fields plus
 * `connectionId`, unique per accepted connection (unlike the remote
 * address, whose port a later client may get again).
 */
export type ServerHandlerInfo = Deno.ServeHandlerInfo<Deno.NetAddr> & {
  connectionId: number;
  /**
   * `completed` without a promise: calls `fn(true)` once the response was
   * written whole, `fn(false)` when it was not (the client left, a write
   * failed). Called once, never inside the caller's own stack; a throwing
   * `fn` is logged by the server, never thrown. An exchange that switched
   * protocols (101) is no HTTP exchange any more: like `completed`, it is
   * never told.
   */
  onCompleted(fn: (delivered: boolean) => void): void;
};

/**
 * How a request's response ended, told to whoever asked: `info.completed`
 * (a promise, made only when someone reads it) or `info.onCompleted` (a
 * callback). The relay asks for every answer it settles after delivery;
 * the callback costs it no promise, reactions or turns per request. Either
 * settles as an eager promise would, whether asked before or after the end.
 */
class Completion {
  #state: "pending" | "ok" | "failed" = "pending";
  #error: unknown = undefined;
  #promise: Promise<void> | null = null;
  #resolve: (() => void) | null = null;
  #reject: ((err: unknown) => void) | null = null;
  #listeners: ((delivered: boolean) => void)[] | null = null;
  readonly #report: (err: unknown) => void;

  /** `report` gets what a listener threw (a listener must never break the connection). */
  constructor(report: (err: unknown) => void) {
    this.#report = report;
  }

  get promise(): Promise<void> {
    if (this.#promise === null) {
      if (this.#state === "ok") this.#promise = Promise.resolve();
      else if (this.#state === "failed") this.#promise = Promise.reject(this.#error);
      else {
        this.#promise = new Promise<void>((res, rej) => {
          this.#resolve = res;
          this.#reject = rej;
        });
      }
      this.#promise.catch(() => {}); // a rejection nobody awaits is not an error
    }
    return this.#promise;
  }

  listen(fn: (delivered: boolean) => void): void {
    if (this.#state !== "pending") {
      // Already over: still not inside the caller's stack, as a promise would.
      const delivered = this.#state === "ok";
      queueMicrotask(() => this.#call(fn, delivered));
      return;
    }
    (this.#listeners ??= []).push(fn);
  }

  succeed(): void {
    if (this.#state !== "pending") return;
    this.#state = "ok";
    this.#resolve?.();
    this.#notify(true);
  }

  fail(err: unknown): void {
    if (this.#state !== "pending") return;
    this.#state = "failed";
    this.#error = err;
    this.#reject?.(err);
    this.#notify(false);
  }

  #notify(delivered: boolean): void {
    const listeners = this.#listeners;
    if (listeners === null) return;
    this.#listeners = null;
    for (const fn of listeners) this.#call(fn, delivered);
  }

  #call(fn: (delivered: boolean) => void, delivered: boolean): void {
    try {
      fn(delivered);
    } catch (err) {
      this.#report(err);
    }
  }
}

/** The handler's `info`, with `completed` made on first read (see `Completion`). */
class HandlerInfo implements ServerHandlerInfo {
  readonly remoteAddr: Deno.NetAddr;
  readonly connectionId: number;
  #completion: Completion;

  constructor(remoteAddr: Deno.NetAddr, completion: Completion, connectionId: number) {
    this.remoteAddr = remoteAddr;
    this.#completion = completion;
    this.connectionId = connectionId;
  }

  get completed(): Promise<void> {
    return this.#completion.promise;
  }

  onCompleted(fn: (delivered: boolean) => void): void {
    this.#completion.listen(fn);
  }
}

/** One client connection; `run()` serves it until it closes. */
export class ServerConn {
  #id = nextConnectionId++;
  #conn: Deno.TcpConn;
  #opts: ServerConnOptions;
  #remoteAddr: Deno.NetAddr;
  // Unread bytes are #buf[#pos..]. Chunks handed to a body stream are views
  // of #buf; #buf is replaced, never written, so they stay valid.
  #buf: Uint8Array = EMPTY;
  #pos = 0;
  #reading: Promise<void> | null = null;
  #readEnded = false;
  #readSize = HEAD_READ;
  // A head-size read buffer whose bytes were copied out after the last read,
  // so the next read can use it again (it is never handed out as a view).
  #scratch: Uint8Array | null = null;
  #eof = false;
  #closed = false;
  #phase: Phase = "head";
  // Where the search for the end of the head resumes after another read.
  #headFrom = 0;
  // One lazy timer per connection (see #arm): the deadline moves, the timer
  // is only re-made when it would fire too late.
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #deadline = Infinity;
  #onExpire: (() => void) | null = null;
  // The request being served, told when the client goes away.
  #current: Exchange | null = null;
  #watching = false;

  constructor(conn: Deno.TcpConn, opts: ServerConnOptions) {
    this.#conn = conn;
    this.#opts = opts;
    this.#remoteAddr = conn.remoteAddr;
  }

  /** True while no request is being served (shutdown may close it at once). */
  get waiting(): boolean {
    return this.#phase !== "active";
  }

  /** Serves requests until the client leaves, a timeout fires, or the server stops. */
  async run(): Promise<void> {
    try {
      let first = true;
      while (!this.#closed && (first || !this.#opts.stopping())) {
        if (!(await this.#serveOne(first))) break;
        first = false;
      }
    } finally {
      this.close();
    }
  }

  /** Closes the socket (idempotent); a pending read ends, a pending request is aborted. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#disarm();
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#current?.peerLeft();
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  // --- reading ---------------------------------------------------------------

  #available(): number {
    return this.#buf.length - this.#pos;
  }

  /** Reads once from the socket into the buffer; concurrent callers share one read. */
  #fill(): Promise<void> {
    if (this.#reading !== null) return this.#reading;
    if (this.#eof || this.#closed) {
      this.#eof = true;
      return DONE;
    }
    // #readOnce clears #reading itself as it ends, so a read costs no
    // `.finally` (two more promises and turns). One that ended before it
    // returned (the socket threw at once) is not pending.
    this.#readEnded = false;
    const p = this.#readOnce();
    if (!this.#readEnded) this.#reading = p;
    return p;
  }

  /** One socket read into the buffer; only from #fill, which saw the connection open and idle. */
  async #readOnce(): Promise<void> {
    try {
      const reuse = this.#scratch !== null && this.#scratch.length === this.#readSize;
      const scratch = reuse ? this.#scratch! : new Uint8Array(this.#readSize);
      this.#scratch = null;
      let n: number | null;
      try {
        n = await this.#conn.read(scratch);
      } catch {
        n = null;
      }
      if (n === null) {
        this.#eof = true;
        this.#current?.peerLeft();
        return;
      }
      this.#keep(scratch, n);
    } finally {
      this.#reading = null;
      this.#readEnded = true;
      if (this.#watching) this.#watchStep();
    }
  }

  /** Appends the `n` bytes read into `scratch` to the unread ones. */
  #keep(scratch: Uint8Array, n: number): void {
    // Keep small reads compact: thousands of connections may each hold one.
    // A compacted read leaves the scratch unreferenced, so the next read
    // takes it instead of a fresh allocation; only head-size ones are kept,
    // so an idle connection holds no more than its pending read did. Not
    // from the shared slab (core/slab.ts): a view pins its whole slab, and
    // these bytes may wait through a whole streamed answer, be handed to a
    // handler as body chunks, or stay behind as the next request's start.
    const compact = n * 4 < scratch.length;
    const fresh = compact ? scratch.slice(0, n) : scratch.subarray(0, n);
    if (compact && scratch.length === HEAD_READ) this.#scratch = scratch;
    if (this.#available() === 0) {
      this.#buf = fresh;
      this.#pos = 0;
    } else {
      const joined = new Uint8Array(this.#available() + n);
      joined.set(this.#buf.subarray(this.#pos));
      joined.set(fresh, this.#available());
      this.#buf = joined;
      this.#pos = 0;
    }
  }

  // --- timers ----------------------------------------------------------------

  /**
   * Calls `onExpire` in `ms` unless disarmed (or re-armed) first. Arming and
   * disarming happen a few times per request, so they only move a deadline:
   * a timer already due no later than it is kept, and when it fires early
   * (the deadline moved on) it waits for the rest.
   */
  #arm(ms: number, onExpire: () => void): void {
    const at = performance.now() + ms;
    this.#deadline = at;
    this.#onExpire = onExpire;
    if (this.#timer !== undefined) {
      if (this.#timerAt <= at) return;
      clearTimeout(this.#timer);
    }
    this.#timerAt = at;
    this.#timer = setTimeout(this.#tick, ms);
  }

  #disarm(): void {
    this.#deadline = Infinity;
    this.#onExpire = null;
  }

  #tick = (): void => {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const onExpire = this.#onExpire;
    if (onExpire === null || this.#closed) return;
    const left = this.#deadline - performance.now();
    if (left > 0) {
      this.#timerAt = this.#deadline;
      this.#timer = setTimeout(this.#tick, Math.ceil(left));
      return;
    }
    this.#disarm();
    onExpire();
  };

  /** Header timeout: a best-effort 408, then close. */
  #headerTimedOut = (): void => {
    if (this.#closed) return;
    const conn = this.#conn;
    conn.write(simpleResponse(408)).catch(() => {}).finally(() => this.close());
  };

  #idleTimedOut = (): void => this.close();

  // --- one exchange ------------------------------------------------------------

  /** Stray CRLFs between requests (after a body, some clients add one) are skipped. */
  #skipBlank(): void {
    while (
      this.#available() > 0 && (this.#buf[this.#pos] === 13 || this.#buf[this.#pos] === 10)
    ) {
      this.#pos++;
    }
  }

  /** Starts on the next head: the wait's timer when nothing of it is buffered yet. */
  #beginHead(first: boolean): void {
    this.#readSize = HEAD_READ;
    this.#headFrom = 0;
    this.#skipBlank();
    if (this.#available() === 0) {
      // The first head must arrive within the header timeout of the accept;
      // a kept-alive connection may be idle for the idle timeout first.
      this.#phase = first ? "head" : "idle";
      if (first) this.#arm(this.#opts.headerTimeoutMs, this.#headerTimedOut);
      else this.#arm(this.#opts.idleTimeoutMs, this.#idleTimedOut);
    }
  }

  /**
   * The head, when the buffer holds all of it (and consumes it); MORE when
   * it needs another read; TOO_LARGE past the head limit. Blank lines before
   * a head are skipped (once the head started, its first byte is not blank).
   */
  #scanHead(): Uint8Array | typeof MORE | typeof TOO_LARGE {
    this.#skipBlank();
    if (this.#available() === 0) return MORE;
    const view = this.#buf.subarray(this.#pos);
    const end = findHeadEnd(view, this.#headFrom);
    if (end !== -1 && end <= this.#opts.maxHeadBytes) {
      this.#pos += end;
      return view.subarray(0, end);
    }
    if (end !== -1 || view.length > this.#opts.maxHeadBytes) return TOO_LARGE;
    // The header timeout runs from the first byte of the head, but is armed
    // only once the head needs another read: a head that came whole (the
    // usual case) is served before any timer could see the phase, so
    // arming and disarming it would be a clock read for nothing.
    if (this.#phase !== "head") {
      this.#phase = "head";
      this.#arm(this.#opts.headerTimeoutMs, this.#headerTimedOut);
    }
    this.#headFrom = resumeFrom(view.length);
    return MORE;
  }

  /** Serves one request; false when the connection must close afterwards. */
  async #serveOne(first: boolean): Promise<boolean> {
    // The head is awaited here, not in an async helper of its own: that
    // was one more promise and turn between the bytes and the handler.
    this.#beginHead(first);
    let headBytes = this.#scanHead();
    while (headBytes === MORE) {
      await this.#fill();
      if (this.#eof) return false;
      headBytes = this.#scanHead();
    }
    this.#disarm();
    this.#phase = "active";
    if (headBytes === TOO_LARGE) {
      await this.#writeQuietly(simpleResponse(431));
      return false;
    }
    let head: RequestHead;
    let framing: RequestFraming;
    try {
      head = parseRequestHead(headBytes);
      framing = requestFraming(head);
    } catch (err) {
      const status = err instanceof BadRequestError ? err.status : 400;
      await this.#writeQuietly(simpleResponse(status));
      return false;
    }

    // fetch refuses a GET or HEAD with a body; such a body stays unread and
    // the connection closes after the answer. `get` and `head` in any case
    // are the Request's GET and HEAD (it upper-cases them), so they too.
    const method = head.method;
    const bodyless = framing.kind === "none" ||
      ((method.length === 3 || method.length === 4) && GET_OR_HEAD.test(method));
    const ex = new Exchange(
      head.headers,
      framing.kind === "none",
      framing.kind === "length" && !bodyless ? framing.length : -1,
      this.#takeBody,
    );
    this.#current = ex;

    const req = this.#buildRequest(head, framing, bodyless, ex);
    if (req === null) {
      this.#current = null;
      await this.#writeQuietly(simpleResponse(400));
      return false;
    }
    const completion = new Completion(this.#reportListenerError);
    this.#watchPeer();

    let res: Response;
    try {
      res = await this.#opts.handler(req, new HandlerInfo(this.#remoteAddr, completion, this.#id));
    } catch (err) {
      res = await this.#fallback(err);
    }
    const plan = upgradePlanOf(res);
    if (plan) {
      ex.finished = true;
      if (ex.peerGone) {
        plan.onAbandon();
        this.#current = null;
        return false;
      }
      return await this.#switchProtocols(plan);
    }
    if (ex.peerGone) {
      ex.finished = true;
      res.body?.cancel().catch(() => {});
      completion.fail(new Deno.errors.Interrupted("client disconnected"));
      this.#current = null;
      return false;
    }
    // A body the handler did not read (an early 401 or 413, or a refused
    // 100-continue) leaves the connection out of step: close after answering.
    const keepAlive = head.keepAlive && ex.done && !this.#opts.stopping();
    let ok: boolean;
    let close = true;
    try {
      const out = await this.#writeResponse(res, head, keepAlive, ex);
      ok = out.ok && !ex.peerGone;
      close = out.close;
    } catch {
      ok = false;
    }
    ex.finished = true;
    this.#current = null;
    if (ok) completion.succeed();
    else {
      if (!ex.peerGone) ex.abort.abort(new DOMException("response not delivered", "AbortError"));
      completion.fail(new Deno.errors.Interrupted("response not delivered"));
    }
    return ok && !close && ex.done;
  }

  /**
   * Writes the 101 head of `plan` and hands the socket over to it: from
   * here the connection is a byte pipe the relay owns (it closes it), and
   * this object lets go of it. A read already pending (the disconnect
   * watch) delivers the client's first bytes as `initial`.
   */
  async #switchProtocols(plan: UpgradePlan): Promise<boolean> {
    this.#current = null;
    let head = `HTTP/1.1 101 ${plan.statusText || "Switching Protocols"}\r\n`;
    for (const [n, v] of plan.headers) head += `${n}: ${v}\r\n`;
    try {
      await this.#writeAll(latin1ToBytes(`${head}\r\n`));
    } catch {
      plan.onAbandon();
      return false;
    }
    this.#disarm();
    this.#closed = true; // ours no more: close() must not touch the socket
    // What came after the head belongs to the new owner: the bytes already
    // here, at once (a client may send its first frame with the request),
    // and those of a read still under way (the disconnect watch's), which
    // it takes before reading the socket itself.
    const initial = this.#buf.slice(this.#pos);
    this.#buf = EMPTY;
    this.#pos = 0;
    const pending = this.#reading;
    const inFlight = pending === null
      ? Promise.resolve(EMPTY)
      : pending.then(() => this.#buf.slice(this.#pos), () => EMPTY);
    plan.onUpgrade({ conn: this.#conn, initial: Promise.resolve(initial), inFlight });
    return false;
  }

  /** A completion listener threw: the server's report hears of it. */
  #reportListenerError = (err: unknown): void => {
    try {
      this.#opts.onListenerError(err);
    } catch { /* the report itself failed: nothing left to tell */ }
  };

  /** The handler's error response, or a plain 500 when that fails too. */
  async #fallback(err: unknown): Promise<Response> {
    try {
      return await this.#opts.onError(err);
    } catch {
      return new Response("Internal Server Error\n", { status: 500 });
    }
  }

  /**
   * The `Request` for `head`. `req.url` is the raw target after the Host (or
   * listen address): the URL parser would re-encode `'`, `"` and more, and
   * the relay forwards the target exactly as the client sent it.
   */
  #buildRequest(
    head: RequestHead,
    framing: RequestFraming,
    bodyless: boolean,
    ex: Exchange,
  ): Request | null {
    let url: string;
    if (head.target.startsWith("/")) {
      url = `http://${headerValue(head.headers, "host") ?? this.#opts.listenHost}${head.target}`;
    } else if (/^https?:\/\/[^/?#]/i.test(head.target)) {
      url = head.target; // absolute-form
    } else {
      return null;
    }
    try {
      // No fields and no stream here: `req.headers` and `req.body` are made
      // only when someone uses them (raw.ts); the relay takes the parsed
      // pairs and, when it is already buffered, the body itself.
      return serverRequest({
        url,
        method: head.method,
        body: bodyless ? null : () => this.#bodyStream(framing, head.expectContinue, ex),
        abort: ex.abort,
      }, ex);
    } catch {
      return null;
    }
  }

  /**
   * The whole declared-length body when it is already buffered and the
   * stream was not read, consumed from the buffer. Else null. A field, so
   * each Exchange holds it bound without a closure of its own.
   */
  #takeBody = (body: Exchange, length: number): Uint8Array | null => {
    if (length <= 0 || body.started || body.done || this.#available() < length) return null;
    body.started = true;
    body.done = true;
    // #buf is never written, so a view of it stays the body for good; a copy
    // (a fresh buffer: the costliest allocation of a small request) only when
    // the view would keep much more than the body alive.
    const buf = this.#buf;
    const end = this.#pos + length;
    const bytes = buf.buffer.byteLength - length <= VIEW_SPARE
      ? buf.subarray(this.#pos, end)
      : buf.slice(this.#pos, end);
    this.#pos = end;
    this.#readSize = HEAD_READ;
    this.#watchPeer(); // room in the buffer again
    return bytes;
  };

  /** The request body as a stream read from the socket only when the handler pulls. */
  #bodyStream(
    framing: RequestFraming,
    expectContinue: boolean,
    body: Exchange,
  ): ReadableStream<Uint8Array> {
    let remaining = framing.kind === "length" ? framing.length : 0;
    const decoder = framing.kind === "chunked" ? new ChunkedDecoder() : null;
    return new ReadableStream<Uint8Array>({
      pull: async (ctrl) => {
        if (body.done) {
          // Taken whole through the side channel (`#takeBody`).
          ctrl.close();
          return;
        }
        if (!body.started) {
          body.started = true;
          // The client waits for this before sending the body (RFC 9110 §10.1.1).
          if (expectContinue) await this.#writeAll(CONTINUE);
        }
        for (;;) {
          if (this.#available() === 0) {
            await this.#fillBody();
            if (this.#available() === 0) {
              ctrl.error(new Error("client closed the connection mid-body"));
              return;
            }
          }
          this.#watchPeer(); // room in the buffer again
          if (decoder === null) {
            const take = Math.min(remaining, this.#available());
            const chunk = this.#buf.subarray(this.#pos, this.#pos + take);
            this.#pos += take;
            remaining -= take;
            ctrl.enqueue(chunk);
            if (remaining === 0) this.#bodyDone(body, ctrl);
            return;
          }
          const input = this.#buf.subarray(this.#pos);
          const pieces: Uint8Array[] = [];
          try {
            decoder.push(input, (p) => pieces.push(p));
          } catch (err) {
            ctrl.error(err);
            this.close(); // the framing is lost: nothing after this can be read
            return;
          }
          this.#pos = decoder.done ? this.#buf.length - decoder.rest.length : this.#buf.length;
          for (const p of pieces) ctrl.enqueue(p);
          if (decoder.done) this.#bodyDone(body, ctrl);
          if (pieces.length > 0 || decoder.done) return;
        }
      },
    }, { highWaterMark: 0 });
  }

  #bodyDone(body: Exchange, ctrl: ReadableStreamDefaultController<Uint8Array>): void {
    body.done = true;
    this.#readSize = HEAD_READ;
    ctrl.close();
  }

  /** One socket read inside a body; a client silent for the idle timeout is dropped. */
  async #fillBody(): Promise<void> {
    this.#readSize = BODY_READ;
    this.#arm(this.#opts.idleTimeoutMs, this.#idleTimedOut);
    try {
      await this.#fill();
    } finally {
      this.#disarm();
    }
  }

  /**
   * Keeps one read pending while a request is served, so a client that
   * disconnects aborts the request at once (the relay then cancels the
   * engine's work), even before the handler reads the body. What arrives
   * meanwhile (body bytes, pipelined requests) is buffered up to the head
   * limit only: beyond it the socket is left unread, which is the
   * back-pressure; the body stream restarts the watch as it consumes.
   */
  #watchPeer(): void {
    if (this.#watching) return;
    this.#watching = true;
    this.#watchStep();
  }

  /**
   * The watch goes on with another read (or the one pending) while a
   * request is served and the buffer has room, else it ends. It runs when
   * the watch starts and again as each read ends (#readOnce), rather than
   * as an async loop woken after every read.
   */
  #watchStep(): void {
    if (
      this.#current !== null && !this.#eof && !this.#closed &&
      this.#available() < this.#opts.maxHeadBytes
    ) {
      void this.#fill();
      return;
    }
    this.#watching = false;
  }

  // --- writing -----------------------------------------------------------------

  /**
   * `head` (if any) and `chunks` framed, in one write. Its own function so
   * the framing bytes (slab views: chunk-size lines, the joined buffer)
   * end with it, not in a streaming loop's frame until its next write.
   */
  async #writeFramed(
    head: Uint8Array | null,
    framer: Framer,
    chunks: Uint8Array[],
    last: boolean,
  ): Promise<void> {
    const parts = framer.frame(chunks, last);
    if (head !== null) parts.unshift(head);
    if (parts.length > 0) await this.#writeAll(concatBytes(parts));
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  async #writeQuietly(bytes: Uint8Array): Promise<void> {
    try {
      await this.#writeAll(bytes);
    } catch { /* the client left */ }
  }

  /**
   * Writes `res`. Body chunks that are ready together leave in one write;
   * otherwise each chunk is written as soon as it arrives (SSE streams). A
   * body complete before the head is written (bytes beside the response,
   * or a stream that ended at once) gets a `content-length`.
   */
  async #writeResponse(
    res: Response,
    head: RequestHead,
    keepAlive: boolean,
    ex: Exchange,
  ): Promise<{ ok: boolean; close: boolean }> {
    const noBody = head.method === "HEAD" || res.status === 204 || res.status === 304;
    // Before `res.body`, whose first read makes the stream this avoids.
    const whole = noBody ? undefined : responseBytesOf(res);
    if (whole !== undefined) {
      // The relay's small answer: head and body leave in one write, and
      // Response never builds a stream for it.
      let enc;
      try {
        enc = encodeResponseHead(res, {
          method: head.method,
          minor: head.minor,
          keepAlive,
          knownLength: whole.byteLength,
          tail: whole,
        });
      } catch (err) {
        const fallback = await this.#fallback(err);
        return await this.#writeResponse(fallback, head, keepAlive, ex);
      }
      // The first write inline: it nearly always takes everything, and an
      // async #writeAll per response is a promise and a turn more.
      const bytes = enc.bytes;
      const n = await this.#conn.write(bytes);
      if (n < bytes.length) await this.#writeAll(bytes.subarray(n));
      return { ok: true, close: enc.close };
    }
    if (noBody || res.body === null) {
      res.body?.cancel().catch(() => {});
      const enc = encodeResponseHead(res, {
        method: head.method,
        minor: head.minor,
        keepAlive,
        knownLength: noBody ? null : 0,
      });
      await this.#writeAll(enc.bytes);
      return { ok: true, close: enc.close };
    }
    const source = responseSourceOf(res);
    if (source !== undefined) return await this.#writeSourced(source, res, head, keepAlive, ex);
    const reader = res.body.getReader();
    ex.cancelResponse = () => void reader.cancel().catch(() => {});
    try {
      let next = reader.read();
      const ready: Uint8Array[] = [];
      let readyBytes = 0;
      let ended = false;
      while (readyBytes < WRITE_BATCH) {
        const r = await settledSoon(next);
        if (r === PENDING) break;
        if (r.done) {
          ended = true;
          break;
        }
        ready.push(r.value);
        readyBytes += r.value.byteLength;
        next = reader.read();
      }
      let enc;
      try {
        enc = encodeResponseHead(res, {
          method: head.method,
          minor: head.minor,
          keepAlive,
          knownLength: ended ? readyBytes : null,
        });
      } catch (err) {
        // A header value that is not a byte string: nothing was sent yet.
        reader.cancel().catch(() => {});
        const fallback = await this.#fallback(err);
        return await this.#writeResponse(fallback, head, keepAlive, ex);
      }
      const framer = new Framer(enc.framing);
      // Only the flag outlives the first write: the head's bytes (a view of
      // a shared slab, core/slab.ts) must not stay alive as long as the
      // stream, and a suspended async function keeps every variable it set.
      const close = enc.close;
      const writing = this.#writeFramed(enc.bytes, framer, ready, ended);
      enc = undefined;
      await writing;
      if (ended) return { ok: framer.complete, close };
      for (;;) {
        const batch: Uint8Array[] = [];
        let bytes = 0;
        let r = await next;
        while (!r.done) {
          batch.push(r.value);
          bytes += r.value.byteLength;
          next = reader.read();
          if (bytes >= WRITE_BATCH) break;
          const soon = await settledSoon(next);
          if (soon === PENDING) break;
          r = soon;
        }
        await this.#writeFramed(null, framer, batch, r.done);
        if (framer.overflow) {
          reader.cancel().catch(() => {});
          return { ok: false, close: true };
        }
        if (r.done) return { ok: framer.complete, close: close || !framer.complete };
      }
    } catch {
      // The body failed mid-stream or the client left: the framing cannot be
      // finished, so the connection ends here.
      reader.cancel().catch(() => {});
      return { ok: false, close: true };
    }
  }

  /**
   * `#writeResponse` for a body given as a source (body_source.ts): what is
   * here already leaves with the head, and each later batch is what one
   * read brought plus whatever else is ready at that moment, with no
   * microtask turns spent to find out. One read is always in flight while
   * a batch is written, as the stream path's was: the body's end (which
   * releases the backend and pools the channel) or an engine's failure
   * (a transport error) is seen when it happens, not once a slow client
   * has taken the batch.
   */
  async #writeSourced(
    source: BodySource,
    res: Response,
    head: RequestHead,
    keepAlive: boolean,
    ex: Exchange,
  ): Promise<{ ok: boolean; close: boolean }> {
    ex.cancelResponse = () => source.cancel();
    try {
      const ready: Uint8Array[] = [];
      let readyBytes = 0;
      let ended = false;
      while (readyBytes < WRITE_BATCH) {
        const chunk = source.readNow();
        if (chunk === undefined) break;
        if (chunk === null) {
          ended = true;
          break;
        }
        ready.push(chunk);
        readyBytes += chunk.byteLength;
      }
      let enc;
      try {
        enc = encodeResponseHead(res, {
          method: head.method,
          minor: head.minor,
          keepAlive,
          knownLength: ended ? readyBytes : null,
        });
      } catch (err) {
        // A header value that is not a byte string: nothing was sent yet.
        source.cancel();
        const fallback = await this.#fallback(err);
        return await this.#writeResponse(fallback, head, keepAlive, ex);
      }
      const framer = new Framer(enc.framing);
      // As in #writeResponse: only the flag outlives the first write.
      const close = enc.close;
      let ahead = ended ? null : readAhead(source);
      const writing = this.#writeFramed(enc.bytes, framer, ready, ended);
      enc = undefined;
      await writing;
      while (ahead !== null) {
        const batch: Uint8Array[] = [];
        let bytes = 0;
        let last = false;
        let chunk: Uint8Array | null | undefined = await ahead;
        for (;;) {
          if (chunk === null) {
            last = true;
            break;
          }
          batch.push(chunk);
          bytes += chunk.byteLength;
          if (bytes >= WRITE_BATCH) break;
          chunk = source.readNow();
          if (chunk === undefined) break;
        }
        ahead = last ? null : readAhead(source);
        await this.#writeFramed(null, framer, batch, last);
        if (framer.overflow) {
          source.cancel();
          return { ok: false, close: true };
        }
      }
      return { ok: framer.complete, close: close || !framer.complete };
    } catch {
      // The body failed mid-stream or the client left: the framing cannot be
      // finished, so the connection ends here.
      source.cancel();
      return { ok: false, close: true };
    }
  }
}

/**
 * `source.read()`, with its rejection marked as seen: it is awaited only
 * after the write in progress, and a write that fails first leaves it
 * unawaited (the failure is the source's own business by then).
 */
function readAhead(source: BodySource): Promise<Uint8Array | null> {
  const p = source.read();
  p.catch(() => {});
  return p;
}
