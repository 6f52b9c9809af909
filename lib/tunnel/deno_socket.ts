/**
 * The socket ssh2 talks through: a `Deno.TcpConn` behind the small part of
 * `net.Socket` ssh2 uses, instead of Node's `net.Socket` emulation.
 *
 * Why: every SSH packet crossed Node's stream machinery twice under Deno
 * (Writable buffering and cork, then the libuv-style handle writing with
 * `writev`; reads ending in an extra `recvfrom` that returns EAGAIN). Here
 * writes made in one turn leave in one `write` at the end of it, reads are
 * one `read` each, and nothing else is in between.
 *
 * What ssh2 (1.x client) relies on, and this provides:
 * - `write(bytes)`; `end()` (half-close after pending bytes); `destroy()`;
 * - 'data', 'end', 'close' (once, last) and 'error' events;
 * - `pause()`/`resume()` (ssh2 pauses until its crypto is initialised);
 * - `writable`, `readable`, `_readableState.ended` (ssh2's `isWritable`),
 *   `connecting === false` (already connected: ssh2 starts at once);
 * - `setNoDelay` (once ready). ssh2 sets a timeout and a listener limit
 *   only on sockets it made itself; timeouts here are ssh2's and the
 *   tunnel's own.
 */
import { EventEmitter } from "node:events";
import { Buffer } from "node:buffer";
import { type PacketSource, readingFrom } from "./open_queue.ts";
import { concatBytes } from "../core/slab.ts";

/** Read buffer size: one SSH packet is at most 35,000 bytes in ssh2. */
const READ_SIZE = 64 * 1024;
/** Less room than this left in the read buffer: the next read gets a fresh one. */
const MIN_READ = 16 * 1024;

/** Node-style error codes for what Deno throws, so callers classify them as before. */
function nodeCode(err: unknown): string | undefined {
  if (err instanceof Deno.errors.ConnectionRefused) return "ECONNREFUSED";
  if (err instanceof Deno.errors.ConnectionReset) return "ECONNRESET";
  if (err instanceof Deno.errors.ConnectionAborted) return "ECONNABORTED";
  if (err instanceof Deno.errors.BrokenPipe) return "EPIPE";
  if (err instanceof Deno.errors.TimedOut) return "ETIMEDOUT";
  if (err instanceof Deno.errors.NotConnected) return "ENOTCONN";
  if (err instanceof Deno.errors.AddrNotAvailable) return "EADDRNOTAVAIL";
  if (err instanceof Deno.errors.NotFound) return "ENOTFOUND";
  return undefined;
}

/** `err` as an Error carrying a Node-style `code` where one applies. */
export function socketError(err: unknown): Error & { code?: string } {
  const e = (err instanceof Error ? err : new Error(String(err))) as Error & { code?: string };
  const code = nodeCode(err);
  if (code && e.code === undefined) {
    try {
      e.code = code;
    } catch { /* a frozen error keeps its own fields */ }
  }
  return e;
}

/** A connected TCP socket with the `net.Socket` surface ssh2 uses. */
export class DenoSocket extends EventEmitter implements PacketSource {
  readonly connecting = false;
  writable = true;
  readable = true;
  destroyed = false;
  /** ssh2 checks `_readableState.ended` before every write. */
  readonly _readableState = { ended: false };
  readonly remoteAddress: string;
  readonly remotePort: number;

  #conn: Deno.TcpConn;
  #pending: Uint8Array[] = [];
  #flushQueued = false;
  /** A write is in flight: later bytes wait for it, so they stay in order. */
  #inFlight = false;
  #halfClosed = false;
  // Paused until ssh2 resumes it, after it listens for 'data' (net.Socket
  // in paused mode does the same): the server's banner must not be missed.
  #paused = true;
  #resume: (() => void) | null = null;
  #endRequested = false;
  #closeEmitted = false;
  /** Reads wait for these (open_queue.ts: too many bytes still opening). */
  #readHolds = new Set<Promise<void>>();
  /** The end of input is reported after these (open_queue.ts: packets still opening). */
  #endHolds = new Set<Promise<void>>();

  constructor(conn: Deno.TcpConn) {
    super();
    this.#conn = conn;
    const addr = conn.remoteAddr;
    this.remoteAddress = addr.hostname;
    this.remotePort = addr.port;
    void this.#readLoop();
  }

  /**
   * Queues `data`. Everything queued in this turn leaves in one write at its
   * end; while a write is in flight, what is queued meanwhile leaves in one
   * write after it.
   */
  write(data: Uint8Array | string, ..._rest: unknown[]): boolean {
    if (!this.writable) return false;
    const bytes = typeof data === "string" ? Buffer.from(data, "latin1") : data;
    if (bytes.byteLength === 0) return true;
    this.#pending.push(bytes);
    if (!this.#flushQueued && !this.#inFlight) {
      this.#flushQueued = true;
      queueMicrotask(this.#flush);
    }
    return true;
  }

  #flush = (): void => {
    this.#flushQueued = false;
    if (this.#inFlight || this.destroyed) return;
    if (this.#pending.length === 0) {
      if (this.#endRequested) this.#finishEnd();
      return;
    }
    // Written, then dropped: small joins come from the slab (core/slab.ts).
    const out = concatBytes(this.#pending);
    this.#pending = [];
    this.#inFlight = true;
    void this.#writeAll(out);
  };

  async #writeAll(bytes: Uint8Array): Promise<void> {
    try {
      let at = 0;
      while (at < bytes.byteLength) at += await this.#conn.write(bytes.subarray(at));
    } catch (err) {
      this.#inFlight = false;
      // Nothing more can be sent; what was read may still be opening
      // (holdEnd), and reaches ssh2 before the error ends the connection.
      this.writable = false;
      this.#pending = [];
      await DenoSocket.#waitFor(this.#endHolds);
      this.#fail(err);
      return;
    }
    this.#inFlight = false;
    this.#flush();
  }

  /** Half-closes after the queued bytes are written, as `net.Socket.end()`. */
  end(): this {
    if (!this.writable) return this;
    this.writable = false;
    this.#endRequested = true;
    if (!this.#flushQueued) this.#flush();
    return this;
  }

  #finishEnd(): void {
    if (this.#halfClosed || this.destroyed) return;
    this.#halfClosed = true;
    this.#conn.closeWrite().catch(() => {});
    // Our side is done; when the peer is done too the socket is closed.
    if (this._readableState.ended) this.destroy();
  }

  /** Closes at once; 'close' follows (once). */
  destroy(err?: unknown): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.writable = false;
    this.readable = false;
    this.#pending = [];
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#resume?.();
    queueMicrotask(() => {
      // An 'error' nobody listens for would throw out of this microtask.
      if (err !== undefined && this.listenerCount("error") > 0) {
        this.emit("error", socketError(err));
      }
      this.#emitClose();
    });
    return this;
  }

  pause(): this {
    this.#paused = true;
    return this;
  }

  resume(): this {
    this.#paused = false;
    const wake = this.#resume;
    this.#resume = null;
    wake?.();
    return this;
  }

  /** The read loop makes no read until `until` settles. */
  holdReads(until: Promise<void>): void {
    DenoSocket.#addHold(this.#readHolds, until);
  }

  /** 'end', or the error of a failed read or write, waits until `until` settles. */
  holdEnd(until: Promise<void>): void {
    DenoSocket.#addHold(this.#endHolds, until);
  }

  /** Holds count as settled either way: a rejected one must not go unhandled. */
  static #addHold(holds: Set<Promise<void>>, until: Promise<void>): void {
    const settled = until.then(() => {}, () => {});
    holds.add(settled);
    void settled.then(() => holds.delete(settled));
  }

  static async #waitFor(holds: Set<Promise<void>>): Promise<void> {
    while (holds.size > 0) await Promise.all(holds);
  }

  /**
   * Hands `bytes` to the 'data' listeners now, as if just read (open_queue.ts:
   * the bytes after a key change, once ssh2 has its new decipher).
   */
  redeliver(bytes: Buffer): void {
    if (this.destroyed) return;
    try {
      this.#emitData(bytes);
    } catch (err) {
      this.destroy(err);
    }
  }

  /** Emits read bytes, saying where they came from (open_queue.ts). */
  #emitData(chunk: Buffer): void {
    readingFrom(this, chunk, () => this.emit("data", chunk));
  }

  setNoDelay(noDelay = true): this {
    try {
      this.#conn.setNoDelay(noDelay);
    } catch { /* closed */ }
    return this;
  }

  async #readLoop(): Promise<void> {
    // Reads land one after another in a buffer that is never reused, and
    // each is handed on as a view of it: ssh2 may keep slices of what it
    // parses, and a view costs a tenth of a copy (~60 vs ~700 ns).
    let buf = new Uint8Array(READ_SIZE);
    let at = 0;
    for (;;) {
      if (this.#paused) {
        await new Promise<void>((r) => (this.#resume = r));
      }
      // Checked first: an async call and its await on every read cost a turn.
      if (this.#readHolds.size > 0) await DenoSocket.#waitFor(this.#readHolds);
      if (this.destroyed) return;
      let n: number | null;
      if (buf.length - at < MIN_READ) {
        buf = new Uint8Array(READ_SIZE);
        at = 0;
      }
      try {
        n = await this.#conn.read(buf.subarray(at));
      } catch (err) {
        await DenoSocket.#waitFor(this.#endHolds);
        if (!this.destroyed) this.#fail(err);
        return;
      }
      if (n === null) await DenoSocket.#waitFor(this.#endHolds);
      if (this.destroyed) return;
      if (n === null) {
        this._readableState.ended = true;
        this.readable = false;
        this.emit("end");
        // The peer is done; close once our side is done too (or at once
        // when nobody asked to end it: net.Socket's allowHalfOpen=false).
        if (!this.#endRequested) this.end();
        else if (this.#halfClosed) this.destroy();
        return;
      }
      try {
        const chunk = Buffer.from(buf.buffer, at, n);
        at += n;
        this.#emitData(chunk);
      } catch (err) {
        // A listener that throws must end this connection, not the process
        // (this loop's rejection would be unhandled).
        this.destroy(err);
        return;
      }
    }
  }

  #fail(err: unknown): void {
    if (this.destroyed) return;
    this.destroy(err);
  }

  #emitClose(): void {
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this._readableState.ended = true;
    this.emit("close", false);
  }
}
