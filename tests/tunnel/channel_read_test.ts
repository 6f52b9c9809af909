/**
 * `readDirect` (lib/tunnel/channel_read.ts) against a stand-in for an ssh2
 * 1.17 client Channel: a real Node Duplex with ssh2's `_read`,
 * `windowAdjust`, and its CHANNEL_DATA / CHANNEL_EOF / CHANNEL_CLOSE
 * handling copied from lib/client.js and lib/utils.js. It declines, changing
 * nothing, whenever the Readable may hold or owe data or a field is missing;
 * otherwise chunks reach the callback in order and synchronously, a false
 * return stops the window until `more()`, and EOF / close still end the
 * stream. Plus `Conn` over it: direct delivery, HIGH_WATER back-pressure,
 * the idle rule, EOF.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import { attachReadDirect, readDirect } from "../../lib/tunnel/channel_read.ts";
import { Conn } from "../../lib/http1/conn.ts";

const MAX_WINDOW = 2 * 1024 * 1024;
const WINDOW_THRESHOLD = MAX_WINDOW / 2;
const HIGH_WATER = 256 * 1024; // lib/http1/conn.ts

/** The read side of an ssh2 1.17 client `direct-tcpip` Channel, driven by hand. */
class FakeChannel extends Duplex {
  incoming: Record<string, unknown> & { window: number; state: string } = {
    id: 1,
    window: MAX_WINDOW,
    packetSize: 32 * 1024,
    state: "open",
  };
  outgoing = { id: 2, state: "open" };
  _waitChanDrain = false;
  /** Window adjusts sent to the peer. */
  adjusts: number[] = [];
  closedByUs = false;

  constructor() {
    super({ highWaterMark: MAX_WINDOW, allowHalfOpen: true, emitClose: false });
    const onEnd = () => (this.readable = false);
    this.on("end", onEnd).on("close", onEnd);
  }

  // Channel.prototype._read
  override _read(): void {
    if (this._waitChanDrain) {
      this._waitChanDrain = false;
      if (this.incoming.window <= WINDOW_THRESHOLD) this.windowAdjust();
    }
  }

  override _write(_chunk: unknown, _enc: unknown, cb: () => void): void {
    cb();
  }

  // Channel.prototype.destroy: end() and close(), never Readable's destroy.
  override destroy(): this {
    this.end();
    this.closedByUs = true;
    return this;
  }

  windowAdjust(): void {
    const amt = MAX_WINDOW - this.incoming.window;
    if (amt <= 0) return;
    this.incoming.window += amt;
    this.adjusts.push(amt);
  }

  /** client.js CHANNEL_DATA. */
  deliver(data: Uint8Array): void {
    if (this.incoming.window === 0) return;
    this.incoming.window -= data.length;
    if (this.push(data) === false) {
      this._waitChanDrain = true;
      return;
    }
    if (this.incoming.window <= WINDOW_THRESHOLD) this.windowAdjust();
  }

  /** client.js CHANNEL_EOF. */
  eofIn(): void {
    if (this.incoming.state !== "open") return;
    this.incoming.state = "eof";
    if (this.readable) this.push(null);
  }

  /** utils.js onCHANNEL_CLOSE (CHANNEL_CLOSE, or the connection lost), read side. */
  closeIn(): void {
    if (this.incoming.state === "closed") return;
    this.incoming.state = "closed";
    if (this.readable) this.push(null);
    if (!this.readable || this.readableEnded) this.emit("close");
    else this.once("end", () => this.emit("close"));
  }
}

function bytes(seq: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seq * 31 + i * 7) & 0xff;
  return b;
}

const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("readDirect hands chunks over synchronously and in order, never as 'data'", () => {
  const ch = new FakeChannel();
  const got: Uint8Array[] = [];
  const more = readDirect(ch, (b) => {
    got.push(b);
    return true;
  });
  assert.equal(typeof more, "function");
  assert.ok(Object.hasOwn(ch, "push"));
  let events = 0;
  // Attached after the switch only to prove nothing reaches the Readable.
  ch.on("data", () => events++);
  const sent = [bytes(1, 10), bytes(2, 1), bytes(3, 32768)];
  for (const b of sent) {
    ch.deliver(b);
    assert.equal(got.at(-1), b, "delivered at once, the same chunk");
  }
  assert.deepEqual(got, sent);
  assert.equal(events, 0);
  assert.equal(ch.readableLength, 0);
  assert.equal(ch.incoming.window, MAX_WINDOW - 10 - 1 - 32768);
});

Deno.test("readDirect: false stops the window until more(); more() adjusts as _read would", () => {
  const ch = new FakeChannel();
  let accept = true;
  const more = readDirect(ch, () => accept)!;
  // Accepted chunks: ssh2 tops the window up once it is at the threshold.
  ch.deliver(Buffer.alloc(WINDOW_THRESHOLD));
  assert.deepEqual(ch.adjusts, [WINDOW_THRESHOLD]);
  assert.equal(ch.incoming.window, MAX_WINDOW);
  // Refused: no adjust, even far below the threshold.
  accept = false;
  ch.deliver(Buffer.alloc(WINDOW_THRESHOLD + 5));
  assert.equal(ch._waitChanDrain, true);
  ch.deliver(Buffer.alloc(100));
  assert.deepEqual(ch.adjusts, [WINDOW_THRESHOLD]);
  assert.equal(ch.incoming.window, WINDOW_THRESHOLD - 105);
  // The Readable itself never asks for more (it saw no chunk).
  assert.equal(ch.readableLength, 0);
  accept = true;
  more();
  assert.equal(ch._waitChanDrain, false);
  assert.deepEqual(ch.adjusts, [WINDOW_THRESHOLD, WINDOW_THRESHOLD + 105]);
  assert.equal(ch.incoming.window, MAX_WINDOW);
  // more() with the window still above the threshold: flag cleared, no adjust.
  accept = false;
  ch.deliver(Buffer.alloc(10));
  assert.equal(ch._waitChanDrain, true);
  more();
  assert.equal(ch._waitChanDrain, false);
  assert.equal(ch.adjusts.length, 2);
  // more() when not waiting: nothing.
  more();
  assert.equal(ch.adjusts.length, 2);
});

Deno.test("readDirect: EOF then close still emit 'end' and 'close' without a reader", async () => {
  const ch = new FakeChannel();
  readDirect(ch, () => true);
  const seen: string[] = [];
  ch.on("end", () => seen.push("end"));
  ch.on("close", () => seen.push("close"));
  ch.deliver(bytes(1, 5));
  ch.eofIn();
  await tick();
  assert.deepEqual(seen, ["end"]);
  ch.closeIn();
  await tick();
  assert.deepEqual(seen, ["end", "close"]);
});

Deno.test("readDirect: close without EOF (connection lost) emits 'end' then 'close'", async () => {
  const ch = new FakeChannel();
  readDirect(ch, () => true);
  const seen: string[] = [];
  ch.on("end", () => seen.push("end"));
  ch.on("close", () => seen.push("close"));
  ch.closeIn();
  await tick();
  assert.deepEqual(seen, ["end", "close"]);
});

Deno.test("readDirect: a chunk after EOF goes to Readable.push, as without readDirect", async () => {
  // Readable.push after EOF destroys the stream; ssh2's Channel.destroy
  // closes the channel. Whatever it does, readDirect must do the same.
  const outcome = async (direct: boolean) => {
    const ch = new FakeChannel();
    const got: Uint8Array[] = [];
    if (direct) assert.ok(readDirect(ch, (b) => got.push(b) > 0));
    const errors: unknown[] = [];
    ch.on("error", (e) => errors.push(e));
    ch.eofIn();
    ch.deliver(bytes(1, 3)); // a peer breaking the protocol
    await tick();
    return { got: got.length, errors: errors.length, closed: ch.closedByUs };
  };
  const plain = await outcome(false);
  assert.equal(plain.closed, true, "(ssh2 closes the channel)");
  assert.deepEqual(await outcome(true), plain);
});

/** Each state or shape in which readDirect must decline and change nothing. */
const refusals: [string, (ch: FakeChannel) => void][] = [
  ["bytes buffered in the Readable", (ch) => ch.deliver(bytes(1, 4))],
  ["EOF received (ssh2 state)", (ch) => ch.eofIn()],
  ["EOF pushed, not yet emitted", (ch) => {
    ch.push(null);
  }],
  ["closed (ssh2 state)", (ch) => (ch.incoming.state = "closed")],
  ["ended and emitted", (ch) => {
    ch.push(null);
    ch.resume();
    ch.emit("end"); // stands in for the emitted end; readable is false after
  }],
  ["destroyed", (ch) => Duplex.prototype.destroy.call(ch)],
  ["not readable", (ch) => (ch.readable = false)],
  ["flowing", (ch) => ch.resume()],
  ["a 'data' listener", (ch) => ch.on("data", () => {})],
  ["a 'readable' listener", (ch) => ch.on("readable", () => {})],
  ["push already taken", (ch) => readDirect(ch, () => true)],
  // A future ssh2 without these fields: decline rather than guess.
  ["no incoming", (ch) => delete (ch as unknown as Record<string, unknown>).incoming],
  ["window not a number", (ch) => (ch.incoming.window = "1" as unknown as number)],
  ["no _waitChanDrain", (ch) => delete (ch as unknown as Record<string, unknown>)._waitChanDrain],
  ["no _read", (ch) => ((ch as unknown as Record<string, unknown>)._read = undefined)],
];

for (const [what, setUp] of refusals) {
  Deno.test(`readDirect declines: ${what}`, () => {
    const ch = new FakeChannel();
    setUp(ch);
    ch.on("error", () => {});
    const push = ch.push;
    let called = 0;
    assert.equal(readDirect(ch, () => called++ > 0), null);
    assert.equal(ch.push, push, "push untouched");
    const ended = (ch as unknown as { _readableState: { ended: boolean } })._readableState.ended;
    if (ch.incoming?.state === "open" && typeof ch.incoming.window === "number" && !ended) {
      const before = ch.readableLength;
      ch.deliver(bytes(2, 3));
      assert.equal(called, 0, "nothing handed over");
      if (!ch.destroyed && !Object.hasOwn(ch, "push")) {
        // Either buffered in the Readable or emitted as 'data', as before.
        assert.ok(ch.readableLength === before + 3 || ch.readableFlowing === true);
      }
    }
  });
}

Deno.test("attachReadDirect gives the channel a method that works on the channel itself", () => {
  const ch = new FakeChannel();
  const c = attachReadDirect(ch);
  assert.equal(c, ch);
  const got: Uint8Array[] = [];
  assert.equal(typeof c.readDirect((b) => got.push(b) > 0), "function");
  ch.deliver(bytes(1, 2));
  assert.equal(got.length, 1);
  assert.equal(c.readDirect(() => true), null, "only once");
});

// --- Conn over a channel with readDirect ---

function directConn() {
  const ch = attachReadDirect(new FakeChannel());
  const conn = new Conn(ch);
  return { ch, conn };
}

/** Reads `n` bytes; fails (rather than hangs) when they do not come within 5 s. */
async function readN(conn: Conn, n: number): Promise<Buffer> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`only part of ${n} bytes arrived`)), 5_000);
  });
  try {
    return await Promise.race([readAll(conn, n), late]);
  } finally {
    clearTimeout(timer);
  }
}

async function readAll(conn: Conn, n: number): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  let have = 0;
  while (have < n) {
    const b = await conn.read();
    assert.ok(b !== null, `EOF after ${have} of ${n}`);
    parts.push(b);
    have += b.byteLength;
  }
  return Buffer.concat(parts);
}

Deno.test("Conn takes readDirect: no 'data' listener, chunks read in order", async () => {
  const { ch, conn } = directConn();
  assert.equal(ch.listenerCount("data"), 0, "never listens for 'data' when direct");
  assert.ok(Object.hasOwn(ch, "push"));
  const sent: Buffer[] = [];
  for (let i = 0; i < 50; i++) {
    const b = bytes(i, 1 + (i * 97) % 5000);
    sent.push(b);
    ch.deliver(b);
  }
  const want = Buffer.concat(sent);
  assert.equal(conn.buffered, want.length);
  // A mix of takeNow and read, as the client does.
  const head = conn.takeNow(7)!;
  const rest = await readN(conn, want.length - 7);
  assert.ok(Buffer.concat([head, rest]).equals(want));
  assert.equal(conn.buffered, 0);
  assert.ok(conn.clean);
  conn.destroy();
});

Deno.test("Conn over readDirect: back-pressure at HIGH_WATER, window restarted on drain", async () => {
  const { ch, conn } = directConn();
  const sent: Buffer[] = [];
  let seq = 0;
  const send = (n: number) => {
    const b = bytes(seq++, n);
    sent.push(b);
    ch.deliver(b);
  };
  // Fill to just under HIGH_WATER: accepted, window flowing.
  for (let i = 0; conn.buffered + 32768 < HIGH_WATER && i < 100; i++) send(32768);
  assert.equal(ch._waitChanDrain, false);
  send(32768); // crosses HIGH_WATER
  assert.equal(ch._waitChanDrain, true, "over HIGH_WATER: no more window");
  // The peer may still use what the window allows: all accepted, no adjust.
  const adjustsBefore = ch.adjusts.length;
  // (Bounded: a broken shortcut that keeps granting window must fail, not spin.)
  for (let i = 0; ch.incoming.window > 0 && i < 2 * MAX_WINDOW / 32768; i++) {
    send(Math.min(32768, ch.incoming.window));
  }
  assert.equal(ch.incoming.window, 0, "the peer used the whole window");
  assert.equal(ch.adjusts.length, adjustsBefore, "no window granted while over");
  assert.equal(ch._waitChanDrain, true);
  const peak = conn.buffered;
  assert.ok(peak <= HIGH_WATER + MAX_WINDOW, `bounded (${peak})`);
  // Once the window is gone, ssh2 drops what the peer may not send.
  ch.deliver(Buffer.alloc(1));
  assert.equal(conn.buffered, peak);
  // Reading down to just above HIGH_WATER restarts nothing...
  const want = Buffer.concat(sent);
  const first = await readN(conn, peak - HIGH_WATER - 1);
  assert.ok(conn.buffered > HIGH_WATER - 32768);
  if (conn.buffered >= HIGH_WATER) {
    assert.equal(ch.adjusts.length, adjustsBefore);
  }
  // ...draining below it does, exactly once, to a full window.
  const rest = await readN(conn, conn.buffered);
  assert.equal(ch._waitChanDrain, false);
  assert.equal(ch.adjusts.length, adjustsBefore + 1);
  assert.equal(ch.incoming.window, MAX_WINDOW);
  assert.ok(Buffer.concat([first, rest]).equals(want), "every byte, in order");
  // Flowing again.
  send(10);
  assert.equal(ch._waitChanDrain, false);
  assert.ok((await readN(conn, 10)).equals(sent.at(-1)!));
  conn.destroy();
});

Deno.test("Conn over readDirect: a byte arriving while idle destroys it", () => {
  const { ch, conn } = directConn();
  let dead = 0;
  conn.onDead = () => dead++;
  conn.idle = true;
  ch.deliver(Buffer.from("x"));
  assert.equal(conn.dead, true);
  assert.equal(dead, 1);
  assert.equal(ch.closedByUs, true, "the channel is closed");
  assert.equal(conn.buffered, 0);
  assert.equal(conn.clean, false);
});

Deno.test("Conn over readDirect: EOF gives the bytes then null; close without EOF ends it too", async () => {
  {
    const { ch, conn } = directConn();
    ch.deliver(bytes(1, 100));
    ch.eofIn();
    assert.ok((await readN(conn, 100)).equals(bytes(1, 100)));
    assert.equal(await conn.read(), null);
    assert.equal(conn.dead, true);
    ch.closeIn();
  }
  {
    const { ch, conn } = directConn();
    const reading = conn.read();
    ch.closeIn(); // connection lost: no EOF first
    assert.equal(await reading, null);
    assert.equal(conn.dead, true);
  }
});

Deno.test("Conn falls back to 'data' when readDirect declines, keeping earlier bytes first", async () => {
  const ch = attachReadDirect(new FakeChannel());
  ch.deliver(bytes(1, 10)); // already in the Readable: direct would skip it
  const conn = new Conn(ch);
  assert.equal(Object.hasOwn(ch, "push"), false, "declined");
  assert.equal(ch.listenerCount("data"), 1);
  ch.deliver(bytes(2, 20));
  const got = await readN(conn, 30);
  assert.ok(got.equals(Buffer.concat([bytes(1, 10), bytes(2, 20)])));
  conn.destroy();
});
