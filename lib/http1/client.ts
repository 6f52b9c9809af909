/**
 * An HTTP/1.1 client that speaks straight over SSH `direct-tcpip` channels,
 * so the relay skips `fetch`, the loopback TCP hop and the `node:net` forward
 * (docs/BENCHMARKS.md). Each channel carries one request at a time and is
 * kept alive in a bounded idle pool for the next one, as fetch keeps its
 * sockets. Errors before response headers are `ChannelHttpError`s, a
 * `TypeError` like fetch's network errors, so the relay's retry rule treats
 * both alike; an abort rejects with the signal's reason, as fetch does.
 */
import type { Duplex } from "node:stream";
import {
  ChannelHttpError,
  ChunkedDecoder,
  encodeRequest,
  findHeadEnd,
  type Framing,
  framingOf,
  MAX_HEAD_BYTES,
  parseHead,
  type ResponseHead,
} from "./parse.ts";
import { errorText } from "../core/errors.ts";

export { ChannelHttpError } from "./parse.ts";

/** One request to the instance. The relay has the body buffered (it may replay it). */
export interface ChannelRequest {
  method: string;
  /** Path and query, e.g. `/v1/chat/completions`. */
  path: string;
  /** Already rewritten for the instance (no hop-by-hop fields). */
  headers: Headers;
  body: Uint8Array | null;
  /** Aborting destroys the channel, so the engine sees the close at once. */
  signal?: AbortSignal;
}

/** Opens a fresh byte stream to the instance's HTTP port (an ssh2 `forwardOut` channel). */
export type OpenChannel = () => Promise<Duplex>;

/** Options of `ChannelHttpClient`. */
export interface ChannelHttpOptions {
  /** `Host` header value sent when the request has none (e.g. `127.0.0.1:8000`). */
  host: string;
  /** Idle keep-alive channels kept for reuse; more are closed (default 64). */
  maxIdle?: number;
}

// Above this much unread data a channel is paused, so ssh2 stops granting
// window and a slow client throttles the engine instead of filling memory.
const HIGH_WATER = 256 * 1024;
const EMPTY = new Uint8Array(0);

/** A channel plus a pull-style reader over its 'data' events. */
class Conn {
  readonly ch: Duplex;
  dead = false;
  /** Called once when the channel ends or fails (the pool forgets it). */
  onDead: (() => void) | null = null;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #eof = false;
  #error: unknown = null;
  #wake: (() => void) | null = null;

  constructor(ch: Duplex) {
    this.ch = ch;
    ch.on("data", (b: Uint8Array) => {
      this.#queue.push(b);
      this.#queued += b.byteLength;
      if (this.#queued >= HIGH_WATER && !this.#paused) {
        this.#paused = true;
        ch.pause();
      }
      this.#notify();
    });
    const ended = () => {
      this.#eof = true;
      this.#die();
    };
    ch.on("end", ended);
    ch.on("close", ended);
    ch.on("error", (err: unknown) => {
      this.#error ??= new ChannelHttpError("SSH channel failed", { cause: err });
      this.#die();
    });
  }

  /** True when nothing is buffered and the channel is still open (safe to reuse). */
  get clean(): boolean {
    return !this.dead && this.#queued === 0;
  }

  /** Next chunk, or null at end of stream; throws the channel's error. */
  async read(): Promise<Uint8Array | null> {
    for (;;) {
      const b = this.#queue.shift();
      if (b) {
        this.#queued -= b.byteLength;
        if (this.#paused && this.#queued < HIGH_WATER) {
          this.#paused = false;
          this.ch.resume();
        }
        return b;
      }
      if (this.#error !== null) throw this.#error;
      if (this.#eof) return null;
      await new Promise<void>((r) => (this.#wake = r));
    }
  }

  /** Puts bytes read too far back in front of the queue. */
  unshift(b: Uint8Array): void {
    this.#queue.unshift(b);
    this.#queued += b.byteLength;
  }

  /** Closes the channel; pending and later reads throw `reason` when given. */
  destroy(reason?: unknown): void {
    if (reason !== undefined) this.#error ??= reason;
    this.#die();
    try {
      this.ch.destroy();
    } catch {
      // The connection is already gone: nothing left to release.
    }
  }

  #die(): void {
    if (!this.dead) {
      this.dead = true;
      this.onDead?.();
    }
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }
}

/** Thrown when a reused channel turned out closed before answering: retried once, fresh. */
class StaleChannel extends ChannelHttpError {}

/** A keep-alive HTTP/1.1 client over channels from `open`; see the module doc. */
export class ChannelHttpClient {
  #open: OpenChannel;
  #host: string;
  #maxIdle: number;
  #idle: Conn[] = [];
  #busy = new Set<Conn>();
  #closing = false;
  #drained: (() => void) | null = null;

  /** `open` is called for each new channel; nothing opens until the first request. */
  constructor(open: OpenChannel, opts: ChannelHttpOptions) {
    this.#open = open;
    this.#host = opts.host;
    this.#maxIdle = opts.maxIdle ?? 64;
  }

  /** Channels waiting in the pool. */
  get idleCount(): number {
    return this.#idle.length;
  }

  /** Channels carrying a request or an unread response body. */
  get busyCount(): number {
    return this.#busy.size;
  }

  /**
   * Sends `req` and resolves once response headers arrived, with a body
   * stream that reads from the channel only as it is consumed (back-pressure).
   */
  async request(req: ChannelRequest): Promise<Response> {
    if (this.#closing) throw new ChannelHttpError("SSH connection is closing");
    req.signal?.throwIfAborted();
    const payload = encodeRequest(req.method, req.path, req.headers, req.body, this.#host);
    const pooled = this.#takeIdle();
    if (pooled) {
      try {
        return await this.#exchange(pooled, req, payload, true);
      } catch (err) {
        // The engine may close an idle keep-alive connection just as we reuse
        // it; like fetch, retry such a request once on a fresh channel.
        if (!(err instanceof StaleChannel) || req.signal?.aborted) throw err;
      }
    }
    return this.#exchange(await this.#connect(req.signal), req, payload, false);
  }

  /**
   * Stops pooling and waits (up to `timeoutMs`) for requests in flight to
   * finish, then closes every channel. For a connection being retired.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.#closing = true;
    for (const c of this.#idle.splice(0)) c.destroy();
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

  /** Closes every channel now, idle or busy; later requests fail. */
  close(): void {
    this.#closing = true;
    this.#drained?.();
    for (const c of this.#idle.splice(0)) c.destroy();
    for (const c of this.#busy) {
      c.destroy(new ChannelHttpError("SSH connection closed"));
    }
    this.#busy.clear();
  }

  #takeIdle(): Conn | null {
    for (let c = this.#idle.pop(); c; c = this.#idle.pop()) {
      if (c.clean) return c;
      c.destroy();
    }
    return null;
  }

  #release(conn: Conn, reuse: boolean): void {
    this.#busy.delete(conn);
    if (reuse && !this.#closing && conn.clean && this.#idle.length < this.#maxIdle) {
      conn.onDead = () => {
        const i = this.#idle.indexOf(conn);
        if (i !== -1) this.#idle.splice(i, 1);
      };
      this.#idle.push(conn);
    } else {
      conn.destroy();
    }
    if (this.#busy.size === 0) this.#drained?.();
  }

  async #connect(signal: AbortSignal | undefined): Promise<Conn> {
    let ch: Duplex;
    try {
      const opening = this.#open();
      if (!signal) ch = await opening;
      else {
        // Abort the wait, not the open: a channel that arrives late is closed.
        const aborted = new Promise<never>((_, reject) => {
          const onAbort = () => reject(signal.reason);
          if (signal.aborted) onAbort();
          signal.addEventListener("abort", onAbort, { once: true });
          opening.finally(() => signal.removeEventListener("abort", onAbort)).catch(() => {});
        });
        opening.then((c) => signal.aborted && c.destroy(), () => {});
        ch = await Promise.race([opening, aborted]);
      }
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      throw new ChannelHttpError(`cannot open SSH channel: ${errorText(err)}`, { cause: err });
    }
    return new Conn(ch);
  }

  async #exchange(
    conn: Conn,
    req: ChannelRequest,
    payload: Uint8Array,
    reused: boolean,
  ): Promise<Response> {
    conn.onDead = null;
    this.#busy.add(conn);
    const { signal } = req;
    let finished = false;
    const finish = (reuse: boolean) => {
      if (finished) return;
      finished = true;
      signal?.removeEventListener("abort", onAbort);
      this.#release(conn, reuse);
    };
    // Destroying the channel is what makes sshd close the engine's socket.
    const onAbort = () => {
      conn.destroy(signal?.reason);
      finish(false);
    };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort);

    let head: ResponseHead;
    let framing: Framing;
    try {
      conn.ch.write(payload);
      head = await readHead(conn, reused);
      framing = framingOf(req.method, head);
    } catch (err) {
      finish(false);
      throw signal?.aborted ? signal.reason : err;
    }
    const init = responseInit(head);
    if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
      finish(head.keepAlive);
      return new Response(null, init);
    }
    return new Response(bodyStream(conn, framing, head.keepAlive, finish, signal), init);
  }
}

/** Reads up to the final (non-1xx) response head; leftover bytes go back to `conn`. */
async function readHead(conn: Conn, reused: boolean): Promise<ResponseHead> {
  let acc: Uint8Array = EMPTY;
  let from = 0;
  let gotAny = false;
  for (;;) {
    const end = acc.length > 0 ? findHeadEnd(acc, from) : -1;
    if (end === -1) {
      if (acc.length > MAX_HEAD_BYTES) throw new ChannelHttpError("response head too large");
      const chunk = await conn.read();
      if (chunk === null) {
        const msg = "connection closed before response headers";
        throw reused && !gotAny ? new StaleChannel(msg) : new ChannelHttpError(msg);
      }
      gotAny = true;
      from = Math.max(0, acc.length - 3);
      acc = acc.length === 0 ? chunk : concat(acc, chunk);
      continue;
    }
    const head = parseHead(acc.subarray(0, end - 4));
    acc = acc.subarray(end);
    from = 0;
    if (head.status >= 200) {
      if (acc.length > 0) conn.unshift(acc);
      return head;
    }
    // 100 Continue, 103 Early Hints: interim, the real answer follows.
    if (head.status === 101) throw new ChannelHttpError("unexpected protocol switch");
  }
}

/** The pull-based body; `finish(reuse)` runs once, at the end, on error or on cancel. */
function bodyStream(
  conn: Conn,
  framing: Framing,
  keepAlive: boolean,
  finish: (reuse: boolean) => void,
  signal: AbortSignal | undefined,
): ReadableStream<Uint8Array> {
  let remaining = framing.kind === "length" ? framing.length : 0;
  const chunked = framing.kind === "chunked" ? new ChunkedDecoder() : null;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        for (;;) {
          const chunk = await conn.read();
          if (chunk === null) {
            if (framing.kind !== "close") throw new ChannelHttpError("connection closed mid-body");
            finish(false);
            controller.close();
            return;
          }
          if (framing.kind === "close") return controller.enqueue(chunk);
          if (chunked) {
            let emitted = false;
            chunked.push(chunk, (d) => {
              emitted = true;
              controller.enqueue(d);
            });
            if (chunked.done) {
              finish(keepAlive && chunked.rest.length === 0);
              controller.close();
              return;
            }
            if (emitted) return;
            continue; // only framing bytes so far
          }
          const take = Math.min(remaining, chunk.byteLength);
          remaining -= take;
          controller.enqueue(take === chunk.byteLength ? chunk : chunk.subarray(0, take));
          if (remaining === 0) {
            // Extra bytes after the body break the framing: never reuse then.
            finish(keepAlive && take === chunk.byteLength);
            controller.close();
          }
          return;
        }
      } catch (err) {
        finish(false);
        controller.error(signal?.aborted ? signal.reason : err);
      }
    },
    cancel() {
      finish(false);
    },
  }, { highWaterMark: 0 });
}

function responseInit(head: ResponseHead): ResponseInit {
  // Response rejects reason phrases with odd bytes; the status is what matters.
  const ok = /^[\t\x20-\x7e]*$/.test(head.statusText);
  return { status: head.status, statusText: ok ? head.statusText : "", headers: head.headers };
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
