/**
 * A write shortcut for ssh2 `direct-tcpip` channels carrying HTTP requests.
 *
 * Why: nearly every request the proxy sends is one small write (head and
 * body in one buffer, lib/http1/client.ts). Through the channel's Node
 * Writable that write costs Writable.write → _write → writeOrBuffer →
 * Channel._write → Protocol.channelData, plus a process.nextTick
 * `afterWrite` per write, on every request. When the Writable is idle and
 * the SSH window and packet size admit the whole write, Channel._write would
 * do nothing but call `channelData` once and lower the window; this does
 * exactly that, directly.
 *
 * What it relies on (ssh2 1.17.0, lib/Channel.js and lib/client.js):
 * - `channel.outgoing`: `{ id, state, window, packetSize }`, the peer's
 *   channel id, `'open'` while data may be sent, and the bytes the peer
 *   currently accepts (window) and per packet (packetSize). Channel._write
 *   sends nothing unless `state === 'open'` and lowers `window` by what it
 *   sends; CHANNEL_WINDOW_ADJUST raises it.
 * - `channel._client._protocol.channelData(id, buffer)`: frames and sends
 *   one CHANNEL_DATA packet synchronously (queued in order behind a rekey).
 * - `channel._waitWindow` / `_chunk`: when a write does not fit the window,
 *   Channel._write keeps the rest in `_chunk`, sets `_waitWindow` and holds
 *   the Writable's callback, so `writableLength` stays above 0 until the
 *   rest is sent. (`_chunk` is never cleared after it is sent, so a stale
 *   one is no sign of pending data; `_waitWindow` and `writableLength` are.)
 *
 * Ordering: the shortcut is taken only when nothing sits in or before the
 * Writable (no buffered or in-progress write, not corked, not waiting for
 * window), so its bytes can never overtake bytes written earlier; anything
 * else goes through `write()` as before. When a field it needs is missing or
 * has another type (a future ssh2), it declines and `write()` is used.
 */
import { Buffer } from "node:buffer";

/** The ssh2 1.17 Channel fields `tryWriteNow` reads, all optional: a future ssh2 may lack them. */
interface Ssh2ChannelInternals {
  outgoing?: { id?: unknown; state?: unknown; window?: unknown; packetSize?: unknown };
  _client?: { _protocol?: { channelData?: unknown } };
  _waitWindow?: unknown;
  writable?: unknown;
  writableLength?: unknown;
  writableEnded?: unknown;
  writableCorked?: unknown;
  destroyed?: unknown;
}

/**
 * Sends `bytes` on ssh2 channel `ch` at once, as one CHANNEL_DATA packet,
 * when that is exactly what `ch.write(bytes)` would do and nothing written
 * before is still waiting; returns false (having done nothing) otherwise,
 * and the caller writes through the stream.
 */
export function tryWriteNow(ch: object, bytes: Uint8Array): boolean {
  const c = ch as Ssh2ChannelInternals;
  // The Writable side: nothing buffered or in progress, still open, not corked.
  if (
    c.writableLength !== 0 || c.writableEnded !== false || c.destroyed !== false ||
    c.writable !== true || c.writableCorked !== 0
  ) return false;
  // ssh2's own write state: not holding the rest of an earlier write for window.
  if (c._waitWindow !== false || !("_chunk" in c)) return false;
  const out = c.outgoing;
  const protocol = c._client?._protocol;
  if (typeof out !== "object" || out === null || typeof protocol !== "object") return false;
  const { id, window, packetSize } = out;
  if (
    out.state !== "open" || typeof id !== "number" || typeof window !== "number" ||
    typeof packetSize !== "number" || typeof protocol.channelData !== "function"
  ) return false;
  const n = bytes.byteLength;
  if (n === 0 || n > window || n > packetSize) return false;
  // ssh2 expects a Buffer; Node's Writable turns a Uint8Array into one the
  // same way: a view over the same memory, no copy.
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, n);
  protocol.channelData.call(protocol, id, buf);
  out.window = window - n;
  return true;
}

/** The optional fast write lib/http1's `Conn.write` tries before `write()`. */
export interface TryWriteNow {
  tryWriteNow(bytes: Uint8Array): boolean;
}

function tryWriteNowMethod(this: object, bytes: Uint8Array): boolean {
  return tryWriteNow(this, bytes);
}

/** Gives channel `ch` a `tryWriteNow(bytes)` method (see `tryWriteNow`); returns it. */
export function attachTryWriteNow<T extends object>(ch: T): T & TryWriteNow {
  const c = ch as T & TryWriteNow;
  c.tryWriteNow = tryWriteNowMethod;
  return c;
}
