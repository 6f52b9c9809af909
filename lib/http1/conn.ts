/**
 * One byte stream to an engine (an ssh2 `direct-tcpip` channel, or a TCP
 * socket in tests) with a pull-style reader over its 'data' events, or over
 * the chunks its `readDirect` hands over. The client (client.ts) owns each
 * `Conn` and decides when it is reused.
 */
import type { Duplex } from "node:stream";
import { Http1Error } from "./types.ts";

// Above this much unread data a channel is paused, so ssh2 stops granting
// window and a slow client throttles the engine instead of filling memory.
const HIGH_WATER = 256 * 1024;

/** A stream that may send a write without its Writable machinery; see `Conn.write`. */
type MaybeTryWriteNow = Duplex & { tryWriteNow?: (bytes: Uint8Array) => boolean };

/**
 * A stream that may deliver its incoming bytes without its Readable
 * machinery: `readDirect(onData)` either returns null having changed
 * nothing, or from then on calls `onData(chunk)` for every chunk, in order,
 * instead of emitting 'data' (which it then never does), and returns
 * `more()`. When `onData` returns false the stream stops asking its peer for
 * more (chunks already on their way still arrive) until `more()` is called.
 * 'end', 'close' and 'error' come as before. lib/tunnel/channel_read.ts
 * gives ssh2 channels one.
 */
type MaybeReadDirect = Duplex & {
  readDirect?: (onData: (bytes: Uint8Array) => boolean) => (() => void) | null;
};

/** A stream plus a pull-style reader. */
export class Conn {
  readonly stream: Duplex;
  /** True once the stream ended, failed or was destroyed. */
  dead = false;
  /** Bytes written so far: 0 means the engine cannot have seen a request on it. */
  written = 0;
  /** Requests this stream has carried. */
  uses = 0;
  /** When it was put back in the pool (ms), for idle expiry. */
  idleSince = 0;
  /** How long it may stay idle (ms); lowered by an engine's `Keep-Alive: timeout`. */
  idleTtlMs = 0;
  /** Called once when the stream ends or fails (the pool forgets it). */
  onDead: (() => void) | null = null;
  /**
   * Set while the stream sits idle in the pool: any byte that arrives then
   * is one nobody asked for, so the stream is closed at once (not at the
   * next sweep or reuse) and the engine cannot keep filling it.
   */
  idle = false;
  // Unread chunks from #head on. Array.prototype.shift is O(n) on a long
  // array, and an engine (or SSH packetization) can deliver a body in
  // 1-byte chunks: up to HIGH_WATER entries, so shifting would make draining
  // quadratic and stall the whole event loop for tens of seconds.
  #queue: (Uint8Array | undefined)[] = [];
  #head = 0;
  #queued = 0;
  #paused = false;
  // `more()` from the stream's `readDirect`, when it delivers that way.
  #more: (() => void) | null = null;
  #eof = false;
  #error: unknown = null;
  // The pending `read()`, settled by #notify with what it would have found.
  #waiter: {
    resolve: (b: Uint8Array | null) => void;
    reject: (err: unknown) => void;
  } | null = null;

  constructor(stream: Duplex) {
    this.stream = stream;
    // Returns false while over HIGH_WATER (for readDirect; 'data' ignores it).
    const onData = (b: Uint8Array): boolean => {
      if (this.idle) {
        this.destroy(); // dead, so never clean again: the pool drops it
        return false;
      }
      const w = this.#waiter;
      if (w !== null && this.#queued === 0) {
        // A waiting read would take this chunk first whatever else happens
        // in this turn: it gets it now (a waiting read means an empty queue).
        this.#waiter = null;
        w.resolve(b);
        return true;
      }
      this.#queue.push(b);
      this.#queued += b.byteLength;
      const low = this.#queued < HIGH_WATER;
      if (!low && !this.#paused) {
        this.#paused = true;
        if (this.#more === null) stream.pause();
      }
      this.#notify();
      return low;
    };
    this.#more = (stream as MaybeReadDirect).readDirect?.(onData) ?? null;
    if (this.#more === null) stream.on("data", onData);
    const ended = () => {
      this.#eof = true;
      this.#die();
    };
    stream.on("end", ended);
    stream.on("close", ended);
    stream.on("error", (err: unknown) => {
      this.#error ??= new Http1Error("SSH channel failed", { sent: this.written > 0, cause: err });
      this.#die();
    });
  }

  /**
   * True when the stream is open, holds no unread byte and has no request
   * byte still waiting to go out: the only state in which it may carry
   * another request. Bytes that arrived while idle mean the engine said
   * something nobody asked for; unsent bytes mean the engine answered
   * before reading the whole request (e.g. an early 413 over a full SSH
   * window), so the rest of that body would be read as the next request.
   * Either way the stream is discarded.
   */
  get clean(): boolean {
    return !this.dead && this.#queued === 0 && this.stream.writableLength === 0;
  }

  /**
   * Writes `bytes` (one write: one SSH packet for a small request). A stream
   * may offer `tryWriteNow(bytes)`: a cheaper send that either sends all of
   * `bytes` now, in order after everything written before, and returns true,
   * or does nothing and returns false (lib/tunnel/channel_write.ts gives
   * ssh2 channels one). Otherwise the bytes go through `write()`.
   */
  write(bytes: Uint8Array): void {
    this.written += bytes.byteLength;
    if ((this.stream as MaybeTryWriteNow).tryWriteNow?.(bytes) === true) return;
    this.stream.write(bytes);
  }

  /** Writes `bytes` and waits until the stream takes more (back-pressure for piped upgrades). */
  async writeAndDrain(bytes: Uint8Array): Promise<void> {
    if (this.dead) throw new Http1Error("channel closed", { sent: true });
    this.written += bytes.byteLength;
    if (this.stream.write(bytes)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.stream.off("drain", done);
        this.stream.off("close", done);
        resolve();
      };
      this.stream.on("drain", done);
      this.stream.on("close", done);
    });
  }

  /** Unread bytes that already arrived. */
  get buffered(): number {
    return this.#queued;
  }

  /**
   * Next chunk, or null at end of stream; throws the stream's error. A read
   * that has to wait is settled with the next chunk as it arrives: one
   * promise hop to the caller, where waking the read to look again took two
   * (~1 µs per waited-for chunk over SSH).
   */
  read(): Promise<Uint8Array | null> {
    const b = this.#shift();
    if (b) return Promise.resolve(b);
    if (this.#error !== null) return Promise.reject(this.#error);
    if (this.#eof) return Promise.resolve(null);
    return new Promise((resolve, reject) => (this.#waiter = { resolve, reject }));
  }

  /**
   * The next chunk when one already arrived, else undefined: the end and
   * errors are only ever told by `read()`, with its timing. Not while a
   * `read()` is pending.
   */
  readNow(): Uint8Array | undefined {
    return this.#shift();
  }

  /**
   * The next `n` bytes when all of them already arrived, else null and
   * nothing is consumed. Bytes past the `n` stay queued (so the stream is
   * not `clean`). A stream that failed or ended after delivering them still
   * gives them, as `read()` would.
   */
  takeNow(n: number): Uint8Array<ArrayBuffer> | null {
    if (this.#queued < n) return null;
    if (n === 0) return new Uint8Array(0);
    const first = this.#queue[this.#head]!;
    // Stream chunks are Buffers over ordinary ArrayBuffers, never shared memory.
    if (first.byteLength === n) return this.#shift() as Uint8Array<ArrayBuffer>;
    if (first.byteLength > n) {
      this.#queue[this.#head] = first.subarray(n);
      this.#queued -= n;
      this.#resumeIfLow();
      return first.subarray(0, n) as Uint8Array<ArrayBuffer>;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const b = this.#queue[this.#head]!;
      const want = n - at;
      if (b.byteLength <= want) {
        out.set(this.#shift()!, at);
        at += b.byteLength;
      } else {
        out.set(b.subarray(0, want), at);
        this.#queue[this.#head] = b.subarray(want);
        this.#queued -= want;
        at = n;
      }
    }
    this.#resumeIfLow();
    return out;
  }

  /** Removes and returns the first unread chunk, if any. */
  #shift(): Uint8Array | undefined {
    const b = this.#queue[this.#head];
    if (!b) return undefined;
    this.#queue[this.#head++] = undefined;
    if (this.#head === this.#queue.length) {
      this.#queue.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head); // amortized O(1) per chunk
      this.#head = 0;
    }
    this.#queued -= b.byteLength;
    this.#resumeIfLow();
    return b;
  }

  #resumeIfLow(): void {
    if (this.#paused && this.#queued < HIGH_WATER) {
      this.#paused = false;
      if (this.#more !== null) this.#more();
      else this.stream.resume();
    }
  }

  /** Puts bytes read too far back in front of the queue. */
  unshift(b: Uint8Array): void {
    if (this.#head > 0) this.#queue[--this.#head] = b;
    else this.#queue.unshift(b);
    this.#queued += b.byteLength;
  }

  /** Closes the stream; pending and later reads throw `reason` when given. */
  destroy(reason?: unknown): void {
    if (reason !== undefined) this.#error ??= reason;
    this.#die();
    try {
      this.stream.destroy();
    } catch {
      // The connection is already gone: nothing left to release.
    }
  }

  #die(): void {
    if (!this.dead) {
      this.dead = true;
      const cb = this.onDead;
      this.onDead = null;
      cb?.();
    }
    this.#notify();
  }

  #notify(): void {
    const w = this.#waiter;
    if (w === null) return;
    // The end or an error: settled a microtask later, where a woken read
    // used to look, so what else happens in this turn (an error after the
    // end, a destroy with a reason) still counts as it did.
    queueMicrotask(() => {
      if (this.#waiter !== w) return;
      const b = this.#shift();
      if (b) {
        this.#waiter = null;
        w.resolve(b);
      } else if (this.#error !== null) {
        this.#waiter = null;
        w.reject(this.#error);
      } else if (this.#eof) {
        this.#waiter = null;
        w.resolve(null);
      }
    });
  }
}
