/**
 * The one HTTP/1.1 client the proxy uses to talk to an engine: relayed
 * traffic, health checks, model lists, abort-all and upgrade checks all go
 * through it, over streams from an `OpenStream` (ssh2 `direct-tcpip`
 * channels in production, TCP sockets to a local engine double in tests).
 *
 * Why hand-written rather than undici: see docs/TUNNEL.md. In short, the
 * proxy needs header bytes passed through exactly, a precise "did the
 * request reach the engine" answer for the retry rule, and control over when
 * a channel is reused; those are the three things a general client hides.
 *
 * Reuse rules (each one closes a way for one client's answer to reach
 * another client):
 * - a channel returns to the pool only when its response ended exactly at a
 *   message boundary, with nothing after it; HEAD, 1xx, 204, 205, 304,
 *   close-delimited bodies and framing conflicts close it instead;
 * - an idle channel that received any byte is discarded before reuse;
 * - an idle channel is reused only for the same `affinity` (one client
 *   connection), so an engine writing past the end of a response can at
 *   worst corrupt that same client's next answer;
 * - idle channels expire before common engines' keep-alive timeout (uvicorn
 *   and llama.cpp: 5 s) or the engine's own `Keep-Alive: timeout` hint, so
 *   the race with an engine closing an idle connection is avoided, not retried.
 */
import type { Duplex } from "node:stream";
import { errorText } from "../core/errors.ts";
import { Conn } from "./conn.ts";
import {
  ChunkedDecoder,
  closeAfter,
  encodeRequest,
  findHeadEnd,
  type Framing,
  framingOf,
  MAX_HEAD_BYTES,
  parseHead,
  type ResponseHead,
  resumeFrom,
} from "./parse.ts";
import { abortOf, type AbortView } from "./request_abort.ts";
import { type BodySource, streamOfSource } from "./body_source.ts";
import { Http1Error, type Http1Request, type Http1Response } from "./types.ts";
import type { Upgraded } from "./upgrade.ts";

/** Opens a fresh byte stream to the engine's HTTP port. */
export type OpenStream = () => Promise<Duplex>;

/** Options of `Http1Client`; defaults in brackets. */
export interface Http1ClientOptions {
  /** `Host` sent when the request has none (e.g. `127.0.0.1:8000`). */
  host: string;
  /** Idle channels kept in all [64]. */
  maxIdle?: number;
  /** Idle channels kept for one affinity [8]. */
  maxIdlePerAffinity?: number;
  /**
   * How long an idle channel is kept [3000 ms]: below the 5 s keep-alive
   * timeout of uvicorn and llama.cpp with room for a slow link, and short
   * enough that idle channels do not hold llama.cpp's few server threads.
   */
  idleTtlMs?: number;
  /** Time source for idle expiry [Date.now]. */
  now?: () => number;
}

/** Affinity of requests that name none (the proxy's own checks). */
const NO_AFFINITY = "";
/** Margin kept below an engine's announced keep-alive timeout. */
const KEEP_ALIVE_MARGIN_MS = 1000;
const EMPTY = new Uint8Array(0);
/**
 * Largest body handed over whole when it already arrived with the head.
 * Below the server's 64 KiB first write (_server_conn.ts), which already
 * gave such a body a `content-length`, so the client sees the same framing.
 */
const MAX_WHOLE_BODY = 32 * 1024;

/** Counters for tests and status. */
export interface Http1ClientStats {
  /** Streams opened since creation. */
  opened: number;
  /** Requests sent since creation. */
  requests: number;
  /** Idle streams now. */
  idle: number;
  /** Streams carrying a request or an unread body now. */
  busy: number;
  /** Affinities with a list in the idle pool (some may be empty while their channel is out). */
  idleKeys: number;
}

/** A keep-alive HTTP/1.1 client over streams from `open`; see the module doc. */
export class Http1Client {
  #open: OpenStream;
  #host: string;
  #maxIdle: number;
  #maxPerKey: number;
  #ttl: number;
  #now: () => number;
  // Idle streams by affinity, most recent last.
  #idle = new Map<string, Conn[]>();
  #idleCount = 0;
  #busy = new Set<Conn>();
  #opened = 0;
  #requests = 0;
  #closing = false;
  #drained: (() => void) | null = null;
  #sweep: ReturnType<typeof setTimeout> | undefined;

  /** `open` is called for each new stream; nothing opens until the first request. */
  constructor(open: OpenStream, opts: Http1ClientOptions) {
    this.#open = open;
    this.#host = opts.host;
    this.#maxIdle = opts.maxIdle ?? 64;
    this.#maxPerKey = opts.maxIdlePerAffinity ?? 8;
    this.#ttl = opts.idleTtlMs ?? 3000;
    this.#now = opts.now ?? Date.now;
  }

  /** A snapshot of the counters. */
  stats(): Http1ClientStats {
    return {
      opened: this.#opened,
      requests: this.#requests,
      idle: this.#idleCount,
      busy: this.#busy.size,
      idleKeys: this.#idle.size,
    };
  }

  /**
   * Sends `req` and resolves once the final response head arrived, with a
   * body read from the stream only as it is consumed (back-pressure), or,
   * when a small `Content-Length` body had already arrived with the head,
   * with that body as bytes (the channel is then already released).
   * Rejects with `Http1Error` (its `sent` says whether the engine may have
   * seen the request) or, on abort (`signal` or `abort`), with its reason.
   */
  request(req: Http1Request): Promise<Http1Response> {
    // Not `async`: on an idle channel (the usual case) the caller gets
    // `#exchange`'s own promise. An async function returning it would
    // resolve its own promise with it: three more microtask turns between
    // the engine's answer and the relay. Whatever is thrown here still
    // reaches the caller as a rejection, as from an async function.
    try {
      if (this.#closing) throw new Http1Error("SSH connection is closing", { sent: false });
      const abort = abortOf(req.signal, req.abort);
      if (abort?.aborted) throw abort.reason;
      const payload = encodeRequest(req.method, req.target, req.headers, req.body, this.#host);
      const key = req.affinity ?? NO_AFFINITY;
      const idle = this.#takeIdle(key);
      if (idle !== null) {
        return this.#exchange(idle, key, req, payload, false, abort) as Promise<Http1Response>;
      }
      return this.#connect(abort).then((conn) =>
        this.#exchange(conn, key, req, payload, false, abort) as Promise<Http1Response>
      );
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Sends an upgrade request (e.g. a WebSocket handshake) on a fresh
   * channel. On `101 Switching Protocols` the channel leaves the client and
   * comes back raw, as `Upgraded`; any other answer is an ordinary response
   * (and its channel is never reused). Errors as for `request()`.
   */
  async upgrade(req: Http1Request): Promise<Upgraded | Http1Response> {
    if (this.#closing) throw new Http1Error("SSH connection is closing", { sent: false });
    const abort = abortOf(req.signal, req.abort);
    if (abort?.aborted) throw abort.reason;
    const payload = encodeRequest(req.method, req.target, req.headers, req.body, this.#host, true);
    // Never a pooled channel: an upgraded one is never given back.
    const conn = await this.#connect(abort);
    return this.#exchange(conn, NO_AFFINITY, req, payload, true, abort);
  }

  /**
   * Stops pooling and waits (up to `timeoutMs`) for requests in flight to
   * finish, then closes every stream. For a connection being retired.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.#closing = true;
    this.#dropIdle();
    if (this.#busy.size > 0) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#drained = r;
        timer = setTimeout(r, timeoutMs);
      });
      clearTimeout(timer);
    }
    this.close();
  }

  /** Closes every stream now, idle or busy; later requests fail. */
  close(): void {
    this.#closing = true;
    this.#drained?.();
    this.#dropIdle();
    for (const c of this.#busy) c.destroy(new Http1Error("SSH connection closed", { sent: true }));
    this.#busy.clear();
  }

  #dropIdle(): void {
    for (const list of this.#idle.values()) for (const c of list) c.destroy();
    this.#idle.clear();
    this.#idleCount = 0;
    clearTimeout(this.#sweep);
    this.#sweep = undefined;
  }

  /** The most recent usable idle stream for `key`; stale or dirty ones are closed on the way. */
  #takeIdle(key: string): Conn | null {
    const list = this.#idle.get(key);
    if (!list) return null;
    const now = this.#now();
    for (let c = list.pop(); c; c = list.pop()) {
      this.#idleCount--;
      c.onDead = null;
      c.idle = false;
      if (c.clean && now - c.idleSince < c.idleTtlMs) {
        // An emptied list stays for `#release` to put `c` back in (it
        // removes the list if it does not): at one request at a time per
        // client connection, deleting and re-adding it cost a Map delete,
        // a new array and a Map set per request.
        return c;
      }
      c.destroy();
    }
    this.#idle.delete(key);
    return null;
  }

  #release(conn: Conn, key: string, reuse: boolean): void {
    this.#busy.delete(conn);
    if (this.#busy.size === 0) this.#drained?.();
    const kept = this.#idle.get(key);
    if (
      !reuse || this.#closing || !conn.clean || conn.idleTtlMs <= 0 ||
      this.#idleCount >= this.#maxIdle || (kept?.length ?? 0) >= this.#maxPerKey
    ) {
      conn.destroy();
      // No empty list outlives the request that left it (see #takeIdle).
      if (kept !== undefined && kept.length === 0) this.#idle.delete(key);
      return;
    }
    const list = kept ?? [];
    conn.idleSince = this.#now();
    conn.idle = true;
    conn.onDead = () => {
      const at = list.indexOf(conn);
      if (at !== -1) {
        list.splice(at, 1);
        this.#idleCount--;
        if (list.length === 0 && this.#idle.get(key) === list) this.#idle.delete(key);
      }
    };
    list.push(conn);
    if (kept === undefined) this.#idle.set(key, list);
    this.#idleCount++;
    this.#scheduleSweep();
  }

  /** Closes expired idle streams in the background, so engines get their connections back. */
  #scheduleSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setTimeout(() => {
      this.#sweep = undefined;
      const now = this.#now();
      for (const [key, list] of this.#idle) {
        for (const c of list.filter((c) => now - c.idleSince >= c.idleTtlMs || !c.clean)) {
          c.destroy(); // its onDead takes it out of `list`
        }
        if (list.length === 0) this.#idle.delete(key);
      }
      if (this.#idleCount > 0) this.#scheduleSweep();
    }, Math.max(50, Math.min(this.#ttl, 1000)));
    Deno.unrefTimer(this.#sweep as unknown as number);
  }

  async #connect(abort: AbortView | null): Promise<Conn> {
    let stream: Duplex;
    try {
      const opening = this.#open();
      if (!abort) stream = await opening;
      else {
        // Abort the wait, not the open: a stream that arrives late is closed.
        const aborted = new Promise<never>((_, reject) => {
          const onAbort = () => reject(abort.reason);
          if (abort.aborted) onAbort();
          else abort.onAbort(onAbort);
          opening.finally(() => abort.offAbort(onAbort)).catch(() => {});
        });
        opening.then((c) => abort.aborted && c.destroy(), () => {});
        stream = await Promise.race([opening, aborted]);
      }
    } catch (err) {
      if (abort?.aborted) throw abort.reason;
      throw new Http1Error(`cannot open SSH channel: ${errorText(err)}`, {
        sent: false,
        cause: err,
      });
    }
    this.#opened++;
    const conn = new Conn(stream);
    conn.idleTtlMs = this.#ttl;
    return conn;
  }

  async #exchange(
    conn: Conn,
    key: string,
    req: Http1Request,
    payload: Uint8Array,
    upgrade: boolean,
    abort: AbortView | null,
  ): Promise<Http1Response | Upgraded> {
    this.#busy.add(conn);
    let finished = false;
    const finish = (reuse: boolean) => {
      if (finished) return;
      finished = true;
      abort?.offAbort(onAbort);
      this.#release(conn, key, reuse);
    };
    // Destroying the stream is what makes sshd close the engine's socket.
    const onAbort = () => {
      conn.destroy(abort?.reason);
      finish(false);
    };
    if (abort?.aborted) onAbort();
    else abort?.onAbort(onAbort);

    let head: ResponseHead;
    let framing: Framing;
    let interim: boolean;
    try {
      if (conn.dead) {
        // Closed before a byte was written: provably never reached the engine.
        throw new Http1Error("SSH channel closed before the request was sent", { sent: false });
      }
      conn.write(payload);
      // Sent (ssh2 copied it into packets): not kept while the engine
      // thinks, since a small payload is a view that pins a slab (core/slab.ts).
      payload = EMPTY;
      conn.uses++;
      this.#requests++;
      ({ head, interim } = await readHead(conn, upgrade));
      framing = head.status === 101 ? { kind: "none" } : framingOf(req.method, head);
    } catch (err) {
      finish(false);
      throw abort?.aborted ? abort.reason : err;
    }
    if (head.status === 101) {
      // The channel now belongs to the caller: out of the pool's books.
      abort?.offAbort(onAbort);
      finished = true;
      this.#busy.delete(conn);
      if (this.#busy.size === 0) this.#drained?.();
      return {
        status: 101,
        statusText: head.statusText,
        headers: head.headers,
        read: () => conn.read().catch(() => null),
        write: (bytes) => conn.writeAndDrain(bytes),
        close: () => conn.destroy(),
      };
    }
    if (head.keepAliveTimeout !== null) {
      conn.idleTtlMs = Math.min(
        conn.idleTtlMs,
        head.keepAliveTimeout * 1000 - KEEP_ALIVE_MARGIN_MS,
      );
    }
    // Only a cleanly delimited answer to a plain request leaves the stream
    // at a message boundary we can trust.
    const reusable = !upgrade && head.keepAlive && !interim && !closeAfter(head) &&
      (framing.kind === "length" || framing.kind === "chunked");
    const headers = framing.kind === "length" || framing.kind === "none"
      ? head.headers
      : head.headers.filter(([n]) => n !== "content-length"); // the body is not that long
    const res = (body: Http1Response["body"]): Http1Response => ({
      status: head.status,
      statusText: head.statusText,
      headers,
      body,
    });
    if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
      finish(reusable);
      return res(null);
    }
    if (framing.kind === "length" && framing.length <= MAX_WHOLE_BODY) {
      // A small answer usually arrives in the packet that carried its head:
      // handing it over as bytes spares the caller a stream, and the
      // channel goes back to the pool now instead of after a read.
      const whole = conn.takeNow(framing.length);
      if (whole !== null) {
        // Bytes past the body (still queued) break the framing: never reuse then.
        finish(reusable && conn.buffered === 0);
        return res(whole);
      }
    }
    const source = new EngineBody(conn, framing, reusable, finish, abort);
    return { ...res(streamOfSource(source)), source };
  }
}

/**
 * Reads up to the final (non-1xx) response head; bytes past it go back to
 * `conn`. `interim` tells whether 1xx answers came first.
 */
async function readHead(
  conn: Conn,
  allowUpgrade: boolean,
): Promise<{ head: ResponseHead; interim: boolean }> {
  const acc = new HeadBuffer();
  let from = 0;
  let interim = false;
  for (;;) {
    const end = acc.length > 0 ? findHeadEnd(acc.bytes, from) : -1;
    if (end === -1) {
      if (acc.length > MAX_HEAD_BYTES) {
        throw new Http1Error(`response head over ${MAX_HEAD_BYTES} bytes`, { sent: true });
      }
      const chunk = await conn.read();
      if (chunk === null) {
        throw new Http1Error("engine closed the connection before response headers", {
          sent: true,
        });
      }
      from = resumeFrom(acc.length);
      acc.append(chunk);
      continue;
    }
    if (end > MAX_HEAD_BYTES) {
      throw new Http1Error(`response head over ${MAX_HEAD_BYTES} bytes`, { sent: true });
    }
    const head = parseHead(acc.bytes.subarray(0, end));
    acc.consume(end);
    from = 0;
    if (head.status >= 200 || (head.status === 101 && allowUpgrade)) {
      // After a 101 these are the new protocol's first bytes: kept for the caller.
      if (acc.length > 0) conn.unshift(acc.bytes);
      return { head, interim };
    }
    // 101 would hand the stream to another protocol; the relay asked for none.
    if (head.status === 101) {
      throw new Http1Error("engine switched protocols unasked", { sent: true });
    }
    interim = true; // 100 Continue, 103 Early Hints: the real answer follows
  }
}

/**
 * The pull-based body of one answer; `finish(reuse)` runs once, at the end,
 * on error or on cancel. Chunks are handed on as the channel delivered them
 * (a chunked body's framing taken out), never copied.
 */
class EngineBody implements BodySource {
  readonly #conn: Conn;
  readonly #framing: Framing;
  readonly #reusable: boolean;
  readonly #finish: (reuse: boolean) => void;
  readonly #abort: AbortView | null;
  #remaining: number;
  readonly #chunked: ChunkedDecoder | null;
  // Decoded pieces not handed out yet: one channel chunk can hold several.
  #pieces: Uint8Array[] = [];
  #ended = false;
  #failed = false;
  #error: unknown = undefined;

  constructor(
    conn: Conn,
    framing: Framing,
    reusable: boolean,
    finish: (reuse: boolean) => void,
    abort: AbortView | null,
  ) {
    this.#conn = conn;
    this.#framing = framing;
    this.#reusable = reusable;
    this.#finish = finish;
    this.#abort = abort;
    this.#remaining = framing.kind === "length" ? framing.length : 0;
    this.#chunked = framing.kind === "chunked" ? new ChunkedDecoder() : null;
  }

  async read(): Promise<Uint8Array | null> {
    for (;;) {
      const now = this.readNow();
      if (now !== undefined) return now;
      if (this.#failed) throw this.#error;
      let chunk: Uint8Array | null;
      try {
        chunk = await this.#conn.read();
      } catch (err) {
        if (this.#ended) return null; // cancelled while waiting: the channel's end is ours
        this.#fail(err);
        throw this.#error;
      }
      if (this.#ended) return null; // cancelled while waiting
      this.#take(chunk);
    }
  }

  readNow(): Uint8Array | null | undefined {
    for (;;) {
      if (this.#pieces.length > 0) return this.#pieces.shift()!;
      if (this.#ended) return null;
      if (this.#failed) return undefined;
      const chunk = this.#conn.readNow();
      if (chunk === undefined) return undefined;
      this.#take(chunk);
    }
  }

  cancel(): void {
    if (this.#ended || this.#failed) return;
    this.#ended = true;
    this.#pieces = [];
    this.#conn.destroy();
    this.#finish(false);
  }

  /** Takes one channel chunk (null: the channel ended) into pieces, the end or a failure. */
  #take(chunk: Uint8Array | null): void {
    if (this.#ended || this.#failed) return;
    const framing = this.#framing;
    try {
      if (chunk === null) {
        if (framing.kind !== "close") {
          throw new Http1Error("engine closed the connection mid-body", { sent: true });
        }
        this.#end(false);
        return;
      }
      if (framing.kind === "close") {
        this.#pieces.push(chunk);
        return;
      }
      const chunked = this.#chunked;
      if (chunked) {
        chunked.push(chunk, (d) => this.#pieces.push(d));
        // Bytes after the last chunk: the engine said more than one answer.
        if (chunked.done) this.#end(this.#reusable && chunked.rest.length === 0);
        return;
      }
      const take = Math.min(this.#remaining, chunk.byteLength);
      this.#remaining -= take;
      this.#pieces.push(take === chunk.byteLength ? chunk : chunk.subarray(0, take));
      // Extra bytes after the body break the framing: never reuse then.
      if (this.#remaining === 0) this.#end(this.#reusable && take === chunk.byteLength);
    } catch (err) {
      this.#fail(err);
    }
  }

  #end(reuse: boolean): void {
    this.#ended = true;
    this.#finish(reuse);
  }

  #fail(err: unknown): void {
    if (this.#failed || this.#ended) return;
    this.#failed = true;
    // Pieces decoded before the failure are still the body's: handed out first.
    this.#error = this.#abort?.aborted ? this.#abort.reason : err;
    this.#finish(false);
  }
}

/**
 * The bytes of a head being read. Appends grow the buffer geometrically, so
 * an engine dribbling a 64 KiB head one byte per packet costs linear time;
 * copying the whole head on every packet was quadratic (seconds of blocked
 * event loop, i.e. every client stalled, per such response).
 */
class HeadBuffer {
  #buf: Uint8Array = EMPTY;
  #start = 0;
  #end = 0;
  // False while #buf is a chunk borrowed from the stream (never written into).
  #owned = false;

  get length(): number {
    return this.#end - this.#start;
  }

  /** The unconsumed bytes (a view, valid until the next append). */
  get bytes(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  append(chunk: Uint8Array): void {
    if (this.length === 0) {
      // The common case, a whole head in one packet, is kept without a copy.
      this.#buf = chunk;
      this.#start = 0;
      this.#end = chunk.byteLength;
      this.#owned = false;
      return;
    }
    if (!this.#owned || this.#end + chunk.byteLength > this.#buf.byteLength) {
      const next = new Uint8Array(Math.max(2 * (this.length + chunk.byteLength), 4096));
      next.set(this.bytes);
      this.#end = this.length;
      this.#start = 0;
      this.#buf = next;
      this.#owned = true;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.byteLength;
  }

  /** Drops the first `n` bytes (a head just parsed). */
  consume(n: number): void {
    this.#start += n;
  }
}
