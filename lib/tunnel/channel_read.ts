/**
 * A read shortcut for ssh2 `direct-tcpip` channels carrying HTTP responses.
 *
 * Why: every CHANNEL_DATA payload ssh2 receives goes through the channel's
 * Node Readable: Readable.push → readableAddChunk → addChunk →
 * emit('data'), plus a process.nextTick `maybeReadMore` per chunk (and in
 * Deno each nextTick drain also runs pending-rejection and microtask ops).
 * lib/http1's `Conn` keeps its own queue anyway, so the Readable only copies
 * the chunk from one hand to the other. `readDirect` lets ssh2 hand each
 * payload straight to `Conn`, synchronously, in arrival order.
 *
 * What it relies on (ssh2 1.17.0, lib/client.js and lib/Channel.js):
 * - ssh2 delivers incoming data only by calling `channel.push(data)`: the
 *   CHANNEL_DATA handler lowers `channel.incoming.window`, calls
 *   `channel.push(data)`, and when that returns false sets
 *   `channel._waitChanDrain = true` and grants no more window; otherwise it
 *   tops the window up (windowAdjust) once it is at or below
 *   WINDOW_THRESHOLD. So replacing `push` on the channel instance (an own
 *   property shadowing Readable.prototype.push) moves every payload, and a
 *   false return keeps ssh2's back-pressure exactly as before.
 * - End of data is `channel.push(null)` (CHANNEL_EOF, and onCHANNEL_CLOSE
 *   on CHANNEL_CLOSE or when the connection is lost): that still goes to
 *   the Readable, so 'end' and then ssh2's 'close' come as before. Without
 *   a 'data' listener the Readable is not flowing and would never emit
 *   'end' (and ssh2 emits 'close' only after 'end'), so at EOF the stream is
 *   resumed; it holds no data, so that only lets 'end' through.
 * - Restarting the window: Readable would call `_read` when its reader
 *   drained; Channel._read does only "if `_waitChanDrain`: clear it, and
 *   windowAdjust if `incoming.window <= WINDOW_THRESHOLD`". The `more()`
 *   returned here calls that same `_read`, and nothing else ever does
 *   (the Readable never sees a chunk, so it never asks for more).
 * - `incoming.state === 'open'`: no CHANNEL_EOF or CHANNEL_CLOSE has been
 *   received, so ssh2 has not pushed null; Node's `_readableState.ended`
 *   (false until push(null)) says nobody else has either.
 *
 * Ordering: the switch is made only while the Readable holds no byte, has
 * not ended and nobody listens for 'data' or 'readable', so nothing that
 * arrived earlier is left behind in it and nobody else expects its chunks.
 * A chunk ssh2 pushes after EOF (a peer breaking the protocol) goes to the
 * original push, which fails the stream as before. When a field it needs is
 * missing or has another type (a future ssh2), `readDirect` declines,
 * changes nothing, and the caller listens for 'data' as before.
 */

/** The ssh2 1.17 Channel (and Node Readable) fields `readDirect` reads, all optional. */
interface Ssh2ChannelReadInternals {
  incoming?: { window?: unknown; state?: unknown };
  _waitChanDrain?: unknown;
  _read?: unknown;
  push?: unknown;
  resume?: unknown;
  listenerCount?: unknown;
  readable?: unknown;
  readableLength?: unknown;
  readableEnded?: unknown;
  readableFlowing?: unknown;
  destroyed?: unknown;
  _readableState?: { ended?: unknown };
}

/**
 * Receives each chunk; returns false when its reader is behind (the channel
 * then stops granting window until `more()` is called).
 */
export type DataSink = (bytes: Uint8Array) => boolean;

type Push = (chunk: unknown, encoding?: unknown) => boolean;

/**
 * From now on, hands every payload ssh2 receives on channel `ch` to
 * `onData`, synchronously and in order, instead of pushing it through the
 * Readable. Returns `more()`, to call once the reader has caught up after
 * `onData` returned false; or null, having changed nothing, when the
 * channel is not in a state (or not of a shape) where that is safe.
 */
export function readDirect(ch: object, onData: DataSink): (() => void) | null {
  const c = ch as Ssh2ChannelReadInternals;
  // The Readable side: open, empty, not ended, not already consumed.
  if (
    c.readable !== true || c.destroyed !== false || c.readableEnded !== false ||
    c.readableLength !== 0 || c.readableFlowing === true || c._readableState?.ended !== false
  ) return null;
  if (typeof c.listenerCount !== "function" || typeof c.resume !== "function") return null;
  if (c.listenerCount("data") !== 0 || c.listenerCount("readable") !== 0) return null;
  // ssh2's side: no EOF or close yet, its back-pressure fields present, and
  // `push` still the prototype's (not taken already).
  const incoming = c.incoming;
  if (
    typeof incoming !== "object" || incoming === null || incoming.state !== "open" ||
    typeof incoming.window !== "number"
  ) return null;
  const push = c.push;
  const read = c._read;
  if (
    typeof c._waitChanDrain !== "boolean" || typeof read !== "function" ||
    typeof push !== "function" || Object.hasOwn(ch, "push")
  ) return null;

  let ended = false;
  const direct: Push = function (this: Ssh2ChannelReadInternals, chunk, encoding) {
    if (chunk !== null && !ended) return onData(chunk as Uint8Array);
    // EOF (or a chunk after it): the Readable's business, as before.
    const first = chunk === null && !ended;
    ended = true;
    const r = (push as Push).call(this, chunk, encoding);
    if (first && this.readableFlowing !== true) (this.resume as () => void)();
    return r;
  };
  (c as { push: Push }).push = direct;
  return () => {
    (read as (n: number) => void).call(ch, 0);
  };
}

/** The optional direct read lib/http1's `Conn` tries before listening for 'data'. */
export interface ReadDirect {
  readDirect(onData: DataSink): (() => void) | null;
}

function readDirectMethod(this: object, onData: DataSink): (() => void) | null {
  return readDirect(this, onData);
}

/** Gives channel `ch` a `readDirect(onData)` method (see `readDirect`); returns it. */
export function attachReadDirect<T extends object>(ch: T): T & ReadDirect {
  const c = ch as T & ReadDirect;
  c.readDirect = readDirectMethod;
  return c;
}
