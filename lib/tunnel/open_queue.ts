/**
 * Large inbound SSH packets opened off the JavaScript thread, delivered in
 * order (issue #14, bulk).
 *
 * Why: Deno's `node:crypto` AES-GCM runs in software on the calling thread
 * at ~130–200 MB/s, so a bulk download through the proxy spent over half of
 * its one thread opening 32 KiB packets (docs/BENCHMARKS.md, "eleventh
 * pass"). WebCrypto's AES-GCM (`crypto.subtle.decrypt`) runs on Deno's
 * blocking-task threads: ~35 µs of this thread per 32 KiB packet instead of
 * ~185, and faster in total. It is asynchronous, and ssh2's decipher
 * contract is not: each packet's payload must reach `onPayload` in order,
 * and a NEWKEYS payload switches ssh2 to a new decipher for the bytes after
 * it.
 *
 * So one `OpenQueue` per ssh2 decipher object holds, in wire order, every
 * packet that arrives while an asynchronous open is under way: large ones
 * opening in WebCrypto, small ones already opened in JavaScript. The head
 * is delivered as soon as it is done, and the rest follow. After a small
 * packet of the key-exchange range (SSH message types 20–49; NEWKEYS is
 * 21), nothing more is parsed: the bytes after it are held and, once it is
 * delivered (and ssh2 has switched deciphers), handed back to ssh2 through
 * the socket as if just read. A failure (tag, length, a throwing handler)
 * is delivered in order too: the packets before it arrive, then the
 * connection is destroyed with the error, as a throw from a synchronous
 * decipher would end it. While more than `MAX_QUEUED_BYTES` wait, the
 * socket stops reading.
 *
 * Only a socket that says where its bytes came from (`readingFrom`, our
 * DenoSocket) gets the asynchronous path; anything else opens every packet
 * synchronously as before.
 */
import { Buffer } from "node:buffer";

/** What the queue needs from the connection its bytes were read from. */
export interface PacketSource {
  readonly destroyed: boolean;
  /** Hands `bytes` to the socket's 'data' listeners (ssh2), as if just read. */
  redeliver(bytes: Buffer): void;
  /** The socket reads nothing more until `until` settles. */
  holdReads(until: Promise<void>): void;
  /**
   * The socket reports no end of input ('end', or a read error) until
   * `until` settles: ssh2 frees its decipher on 'end', and what was read
   * before it must reach ssh2 first.
   */
  holdEnd(until: Promise<void>): void;
  destroy(err?: unknown): unknown;
}

// The chunk a socket is handing on right now, and that socket (two
// variables, not an object: this runs for every read).
let readingSource: PacketSource | null = null;
let readingChunk: Uint8Array | null = null;

/**
 * Runs `emit` (a socket handing `chunk` to ssh2) with `source` as the place
 * that chunk came from; a decipher parsing exactly that chunk may then open
 * packets asynchronously.
 */
export function readingFrom(source: PacketSource, chunk: Uint8Array, emit: () => void): void {
  const outerSource = readingSource, outerChunk = readingChunk;
  readingSource = source;
  readingChunk = chunk;
  try {
    emit();
  } finally {
    readingSource = outerSource;
    readingChunk = outerChunk;
  }
}

/**
 * The source of `data` if it is the chunk a socket is handing on right now.
 * Bytes that reach a decipher any other way (an SSH connection carried over
 * another's channel, a test calling it directly) get no source.
 */
export function sourceOf(data: Uint8Array): PacketSource | null {
  return readingChunk === data ? readingSource : null;
}

/**
 * Packets whose encrypted part is at least this large open asynchronously.
 * Measured (bench/packet_open.ts): WebCrypto costs this thread ~20 µs plus
 * ~0.4 µs per KiB and adds ~40 µs of latency; node:crypto costs ~14 µs plus
 * ~5.3 µs per KiB, all on this thread. At 8 KiB both take ~45 µs end to
 * end, and WebCrypto already costs this thread less than half.
 */
export const ASYNC_OPEN_MIN_BYTES = 8192;

/** Above this many bytes waiting to be delivered, the socket stops reading. */
export const MAX_QUEUED_BYTES = 1024 * 1024;

/** Packets this module has opened asynchronously since load (tests check the path ran). */
export const openQueueStats = { openedAsync: 0, redelivered: 0, held: 0 };

/** A tag did not verify (the same message node:crypto gives). */
export class GcmAuthError extends Error {
  constructor() {
    super("Unsupported state or unable to authenticate data");
    this.name = "GcmAuthError";
  }
}

interface Entry {
  /** Bytes this entry counts against `MAX_QUEUED_BYTES`. */
  size: number;
  done: boolean;
  /** Padding length, payload, padding (as opened), once done. */
  plain: Buffer | null;
  err: unknown;
  /** Nothing after this packet was parsed: its bytes are in `rest`. */
  stop: boolean;
}

/** SSH_MSG_NEWKEYS: the bytes after it are under new keys. */
const NEWKEYS = 21;

/** True for SSH message types of the transport's key exchange (RFC 4250: 20–49). */
function isKexMessage(type: number): boolean {
  return type >= 20 && type <= 49;
}

/**
 * The payload of an opened packet (`plain`: padding length, payload,
 * padding), as a view: what ssh2's `onPayload` receives.
 */
export function payloadOf(plain: Buffer): Buffer {
  return Buffer.from(plain.buffer, plain.byteOffset + 1, plain.length - plain[0] - 1);
}

/**
 * The ordered queue of one decipher. `deliver` hands one payload to ssh2
 * (the decipher's sequence number and `onPayload`, as read at that moment)
 * and returns what `onPayload` returned.
 */
export class OpenQueue {
  readonly #source: PacketSource;
  readonly #deliver: (payload: Buffer) => unknown;
  readonly #keyBytes: Uint8Array<ArrayBuffer>;
  #key: CryptoKey | null = null;
  #keyPromise: Promise<CryptoKey> | null = null;
  #entries: Entry[] = [];
  #bytes = 0;
  #rest: Buffer[] = [];
  #stopped = false;
  #dead = false;
  #release: (() => void) | null = null;
  #idle: (() => void) | null = null;

  constructor(source: PacketSource, keyBytes: Uint8Array, deliver: (payload: Buffer) => unknown) {
    this.#source = source;
    this.#keyBytes = Uint8Array.from(keyBytes);
    this.#deliver = deliver;
  }

  /** Packets (or held bytes) are waiting: new packets must queue behind them. */
  get active(): boolean {
    return this.#entries.length > 0 || this.#stopped;
  }

  /** Parsing has stopped after a key-exchange packet or a failure: new bytes are held. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Keeps bytes that arrived after the stop point, for ssh2 once the queue drains. */
  hold(data: Buffer, p: number, end: number): void {
    if (this.#dead || p >= end) return;
    this.#rest.push(Buffer.from(data.subarray(p, end)));
    this.#count(end - p);
    openQueueStats.held++;
  }

  /**
   * Opens one packet asynchronously: `ctAndTag` is the cipher text followed
   * by the tag, `iv` this packet's IV (the caller then advances its own),
   * `len` the packet length (the additional data).
   */
  openAsync(ctAndTag: Uint8Array<ArrayBuffer>, iv: Uint8Array, len: number): void {
    const e = this.#push(len, false);
    const aad = new Uint8Array(4);
    aad[0] = len >>> 24, aad[1] = len >>> 16, aad[2] = len >>> 8, aad[3] = len;
    const params = { name: "AES-GCM", iv: Uint8Array.from(iv), additionalData: aad };
    // WebCrypto copies its input when called; until the key is imported the
    // bytes are copied here, since the caller's buffer may be reused.
    let opened: Promise<ArrayBuffer>;
    if (this.#key) opened = crypto.subtle.decrypt(params, this.#key, ctAndTag);
    else {
      const copy = ctAndTag.slice();
      opened = this.#importedKey().then((k) => crypto.subtle.decrypt(params, k, copy));
    }
    opened.then(
      (ab) => {
        e.plain = Buffer.from(ab);
        openQueueStats.openedAsync++;
      },
      (err) => {
        // WebCrypto reports a tag that does not verify as an OperationError.
        e.err = err instanceof DOMException && err.name === "OperationError"
          ? new GcmAuthError()
          : err;
      },
    ).then(() => {
      e.done = true;
      this.#drain();
    });
  }

  /** Queues a packet already opened (or a failure to open it), in order. */
  push(plain: Buffer | null, err: unknown): void {
    const e = this.#push(plain?.length ?? 0, true);
    e.plain = plain;
    e.err = err;
    // A payload's first byte is its message type.
    if (err !== undefined) this.#stopped = e.stop = true;
    else if (plain && payloadOf(plain).length > 0 && isKexMessage(plain[1])) {
      this.#stopped = e.stop = true;
    }
  }

  /** ssh2 retired the decipher (connection closed, or a key change). */
  free(): void {
    this.#dead = true;
  }

  #push(size: number, done: boolean): Entry {
    const e: Entry = { size, done, plain: null, err: undefined, stop: false };
    this.#entries.push(e);
    if (!this.#idle) this.#source.holdEnd(new Promise<void>((r) => (this.#idle = r)));
    this.#count(size);
    return e;
  }

  /** Counts `size` more bytes waiting; past the bound the socket stops reading. */
  #count(size: number): void {
    this.#bytes += size;
    if (this.#bytes > MAX_QUEUED_BYTES && !this.#release) {
      this.#source.holdReads(new Promise<void>((r) => (this.#release = r)));
    }
  }

  #importedKey(): Promise<CryptoKey> {
    return this.#keyPromise ??= crypto.subtle.importKey(
      "raw",
      this.#keyBytes,
      "AES-GCM",
      false,
      ["decrypt"],
    ).then((k) => (this.#key = k));
  }

  #drain(): void {
    const q = this.#entries;
    let stopDelivered = false;
    while (q.length > 0 && q[0].done) {
      const e = q.shift()!;
      this.#bytes -= e.size;
      // Retired by a closing connection: nothing more reaches ssh2.
      if (this.#dead) continue;
      if (e.err !== undefined) return this.#fail(e.err);
      const plain = e.plain!;
      if (!e.stop && plain[1] === NEWKEYS && (q.length > 0 || this.#rest.length > 0)) {
        // A real NEWKEYS is one byte in a 16-byte packet; this one was large
        // enough to open asynchronously, so what follows it was parsed
        // under the old keys.
        return this.#fail(
          new Error(`SSH peer sent a ${plain.length}-byte NEWKEYS packet; closing the connection`),
        );
      }
      let ret: unknown;
      try {
        ret = this.#deliver(payloadOf(plain));
      } catch (err) {
        return this.#fail(err);
      }
      // doFatalError returns Infinity: the protocol has given up.
      if (ret !== undefined && ret !== false) return this.#fail(undefined);
      // Delivering NEWKEYS makes ssh2 free this decipher; what followed is the new one's.
      stopDelivered = e.stop;
    }
    if (q.length > 0) return this.#unholdBelowHalf();
    if (this.#stopped) {
      if (this.#dead && !stopDelivered) return this.#fail(undefined);
      // The key-exchange packet is delivered: ssh2 parses what followed it
      // with whatever decipher it now has (this one again, unless NEWKEYS).
      this.#stopped = false;
      const rest = this.#rest.length === 1 ? this.#rest[0] : Buffer.concat(this.#rest);
      this.#bytes -= rest.length;
      this.#rest = [];
      this.#unholdBelowHalf();
      if (rest.length > 0 && !this.#source.destroyed) {
        openQueueStats.redelivered++;
        this.#source.redeliver(rest);
      }
      if (q.length > 0 || this.#stopped) return;
    }
    this.#unholdBelowHalf();
    this.#settle();
  }

  #unholdBelowHalf(): void {
    if (this.#release && this.#bytes <= MAX_QUEUED_BYTES / 2) this.#unhold();
  }

  /** Nothing waits any more: the socket may report its end. */
  #settle(): void {
    const r = this.#idle;
    this.#idle = null;
    r?.();
  }

  #unhold(): void {
    const r = this.#release;
    this.#release = null;
    r?.();
  }

  #fail(err: unknown): void {
    this.#dead = true;
    this.#entries = [];
    this.#rest = [];
    this.#bytes = 0;
    this.#unhold();
    if (err !== undefined) this.#source.destroy(err);
    this.#settle();
  }
}
