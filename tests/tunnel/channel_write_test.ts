/**
 * `tryWriteNow` (lib/tunnel/channel_write.ts) against a stand-in with the
 * ssh2 1.17 Channel fields it reads: it declines, touching nothing, in every
 * state where `write()` would not send the bytes at once as one packet, and
 * otherwise sends them as one `channelData` call over the same memory and
 * lowers the window. Plus `Conn.write` choosing between it and `write()`.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Duplex } from "node:stream";
import { attachTryWriteNow, tryWriteNow } from "../../lib/tunnel/channel_write.ts";
import { Conn } from "../../lib/http1/conn.ts";

/** A fake ssh2 channel in the state where the shortcut applies, recording `channelData`. */
function fakeChannel() {
  const sent: { id: number; data: Uint8Array }[] = [];
  const ch: Record<string, unknown> & {
    outgoing: Record<string, unknown>;
    _client: { _protocol: Record<string, unknown> };
  } = {
    outgoing: { id: 7, state: "open", window: 100, packetSize: 50 },
    _client: {
      _protocol: {
        channelData(id: number, data: Uint8Array) {
          assert.ok(Buffer.isBuffer(data), "ssh2 gets a Buffer");
          sent.push({ id, data });
        },
      },
    },
    _waitWindow: false,
    _chunk: undefined,
    _chunkcb: undefined,
    writable: true,
    writableLength: 0,
    writableEnded: false,
    writableCorked: 0,
    destroyed: false,
  };
  return { ch, sent };
}

Deno.test("tryWriteNow sends one packet over the same memory and lowers the window", () => {
  const { ch, sent } = fakeChannel();
  const backing = new Uint8Array([9, 1, 2, 3, 4, 9]);
  const bytes = backing.subarray(1, 5);
  assert.equal(tryWriteNow(ch, bytes), true);
  assert.equal(sent.length, 1);
  assert.equal(sent[0].id, 7);
  assert.deepEqual([...sent[0].data], [1, 2, 3, 4]);
  // A view, not a copy.
  assert.equal(sent[0].data.buffer, backing.buffer);
  assert.equal(sent[0].data.byteOffset, 1);
  assert.equal(sent[0].data.byteLength, 4);
  assert.equal(ch.outgoing.window, 96);

  // Exactly the window and exactly the packet size still fit.
  ch.outgoing.window = 50;
  assert.equal(tryWriteNow(ch, new Uint8Array(50).fill(5)), true);
  assert.equal(sent.length, 2);
  assert.equal(sent[1].data.byteLength, 50);
  assert.equal(ch.outgoing.window, 0);

  // A Buffer goes through as it is.
  ch.outgoing.window = 10;
  const b = Buffer.from("hi");
  assert.equal(tryWriteNow(ch, b), true);
  assert.equal(sent[2].data, b);
  assert.equal(ch.outgoing.window, 8);
});

/** Each state in which the shortcut must decline (and leave the channel alone). */
const refusals: [string, (ch: ReturnType<typeof fakeChannel>["ch"]) => void, number?][] = [
  ["bytes buffered in the Writable", (ch) => (ch.writableLength = 3)],
  ["a write in progress (held for window)", (ch) => {
    ch.writableLength = 10;
    ch._waitWindow = true;
    ch._chunk = new Uint8Array(10);
  }],
  ["waiting for window", (ch) => (ch._waitWindow = true)],
  ["ended", (ch) => {
    ch.writableEnded = true;
    ch.writable = false;
  }],
  ["ended (writable still reported)", (ch) => (ch.writableEnded = true)],
  ["destroyed", (ch) => {
    ch.destroyed = true;
    ch.writable = false;
  }],
  ["destroyed (writable still reported)", (ch) => (ch.destroyed = true)],
  ["not writable", (ch) => (ch.writable = false)],
  ["corked", (ch) => (ch.writableCorked = 1)],
  ["outgoing eof", (ch) => (ch.outgoing.state = "eof")],
  ["outgoing closing", (ch) => (ch.outgoing.state = "closing")],
  ["outgoing closed", (ch) => (ch.outgoing.state = "closed")],
  ["empty write", () => {}, 0],
  ["larger than the window", (ch) => (ch.outgoing.window = 3)],
  ["window exhausted", (ch) => (ch.outgoing.window = 0)],
  ["larger than a packet", (ch) => (ch.outgoing.packetSize = 3)],
  ["larger than both", (ch) => (ch.outgoing.window = 20), 60],
  // A future ssh2 without these fields: decline rather than guess.
  ["no outgoing", (ch) => delete (ch as Record<string, unknown>).outgoing],
  ["no protocol", (ch) => (ch._client = {} as never)],
  ["no client", (ch) => delete (ch as Record<string, unknown>)._client],
  ["no channelData", (ch) => delete ch._client._protocol.channelData],
  ["no _waitWindow", (ch) => delete ch._waitWindow],
  ["no _chunk", (ch) => delete ch._chunk],
  ["window not a number", (ch) => (ch.outgoing.window = "100")],
  ["packetSize missing", (ch) => delete ch.outgoing.packetSize],
  ["id missing", (ch) => delete ch.outgoing.id],
  ["no writableLength", (ch) => delete ch.writableLength],
  ["no writableCorked", (ch) => delete ch.writableCorked],
];

for (const [what, setUp, len = 4] of refusals) {
  Deno.test(`tryWriteNow declines: ${what}`, () => {
    const { ch, sent } = fakeChannel();
    setUp(ch);
    const before = structuredClone({ ...ch, _client: undefined });
    assert.equal(tryWriteNow(ch, new Uint8Array(len).fill(1)), false);
    assert.equal(sent.length, 0, "nothing sent");
    assert.deepEqual({ ...ch, _client: undefined }, before, "channel untouched");
  });
}

Deno.test("tryWriteNow accepts again once a held write has gone out", () => {
  // ssh2 never clears `_chunk` after sending it: a stale one must not
  // disable the shortcut for the rest of the channel's life.
  const { ch, sent } = fakeChannel();
  ch._chunk = new Uint8Array(10);
  ch._chunkcb = () => {};
  assert.equal(tryWriteNow(ch, new Uint8Array(4)), true);
  assert.equal(sent.length, 1);
});

/** A Duplex that records what reaches `_write`, optionally with a `tryWriteNow`. */
function recordingStream(fast?: (bytes: Uint8Array) => boolean) {
  const slow: Uint8Array[] = [];
  const s = new Duplex({
    read() {},
    write(chunk, _enc, cb) {
      slow.push(new Uint8Array(chunk));
      cb();
    },
  });
  if (fast) attachFast(s, fast);
  return { s, slow };
}

function attachFast(s: Duplex, fast: (bytes: Uint8Array) => boolean) {
  (s as Duplex & { tryWriteNow?: (b: Uint8Array) => boolean }).tryWriteNow = fast;
}

Deno.test("Conn.write takes tryWriteNow when it accepts, else write(); written counts both", () => {
  const fastGot: Uint8Array[] = [];
  let accept = true;
  const { s, slow } = recordingStream((b) => {
    if (!accept) return false;
    fastGot.push(b);
    return true;
  });
  const conn = new Conn(s);
  const a = new Uint8Array([1, 2, 3]);
  conn.write(a);
  assert.deepEqual(fastGot, [a]);
  assert.equal(slow.length, 0);
  assert.equal(conn.written, 3);
  accept = false;
  conn.write(new Uint8Array([4, 5]));
  assert.equal(fastGot.length, 1);
  assert.deepEqual(slow.map((b) => [...b]), [[4, 5]]);
  assert.equal(conn.written, 5);
  s.destroy();
});

Deno.test("Conn.write without tryWriteNow writes through the stream as before", () => {
  const { s, slow } = recordingStream();
  const conn = new Conn(s);
  conn.write(new Uint8Array([1, 2]));
  conn.write(new Uint8Array([3]));
  assert.deepEqual(slow.map((b) => [...b]), [[1, 2], [3]]);
  assert.equal(conn.written, 3);
  s.destroy();
});

Deno.test("attachTryWriteNow gives the channel a method that reads the channel itself", () => {
  const { ch, sent } = fakeChannel();
  const c = attachTryWriteNow(ch);
  assert.equal(c, ch);
  assert.equal(c.tryWriteNow(new Uint8Array([1])), true);
  assert.equal(sent.length, 1);
  c.outgoing.state = "eof";
  assert.equal(c.tryWriteNow(new Uint8Array([1])), false);
  assert.equal(sent.length, 1);
});
