/**
 * ssh2's `Channel.destroy()` without a needless error per closed channel.
 *
 * ssh2 1.17's `Channel.destroy()` is `this.end(); this.close();`, and Node's
 * stream machinery calls it for every channel whose both sides have finished
 * (autoDestroy, from `endReadableNT`). By then the writable side has
 * usually finished too, and `Writable.end()` on a finished stream does
 * nothing but build an `ERR_STREAM_ALREADY_FINISHED` error that nobody
 * receives (no callback is passed). Under Deno's Node compatibility that
 * error captures a stack trace through ssh2's and the stream's frames:
 * ~0.5 ms of the JavaScript thread per channel in a CPU profile of 200
 * concurrent SSE streams (docs/BENCHMARKS.md, "eleventh pass"), ~45 µs in
 * isolation.
 *
 * The replacement skips `end()` exactly when it would only build that
 * error (`writableFinished`), and otherwise does what ssh2's does.
 */
import * as ssh2ChannelModule from "ssh2/lib/Channel.js";

interface ChannelLike {
  writableFinished: boolean;
  end(): unknown;
  close(): unknown;
}

interface ChannelClass {
  prototype: { destroy: (this: ChannelLike) => unknown };
}

const CHANNEL = ((ssh2ChannelModule as { default?: { Channel: ChannelClass } }).default ??
  ssh2ChannelModule as unknown as { Channel: ChannelClass }).Channel;

/** ssh2's own `destroy`, as it was when this module loaded. */
export const SSH2_DESTROY = CHANNEL.prototype.destroy;

function destroy(this: ChannelLike): unknown {
  if (!this.writableFinished) this.end();
  this.close();
  return this;
}

/** Puts the replacement on ssh2's Channel class (idempotent). */
export function installChannelDestroy(): void {
  CHANNEL.prototype.destroy = destroy;
}

/** True while the replacement is installed. */
export function channelDestroyInstalled(): boolean {
  return CHANNEL.prototype.destroy === destroy;
}
