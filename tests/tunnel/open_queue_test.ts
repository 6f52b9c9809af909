/**
 * lib/tunnel/open_queue.ts through the real decipher (packet_cipher.ts on
 * ssh2's AES-GCM class), driven the way ssh2's Protocol drives it: a parse
 * loop over each chunk a source hands on, and a NEWKEYS payload that swaps
 * in a new decipher (new key and IV) for the bytes after it. Large packets
 * open in WebCrypto asynchronously; what is checked is what ssh2 sees:
 * every payload once, in wire order, the same as ssh2's own synchronous
 * decipher on the same bytes; failures after exactly the packets before
 * them; and reads held while too much waits.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import {
  ASYNC_OPEN_MIN_BYTES,
  GcmAuthError,
  MAX_QUEUED_BYTES,
  openQueueStats,
  type PacketSource,
  readingFrom,
} from "../../lib/tunnel/open_queue.ts";
import { OWN_GCM, SSH2_GCM, ssh2Crypto } from "../../lib/tunnel/packet_cipher.ts";
import { DenoSocket } from "../../lib/tunnel/deno_socket.ts";

const NAME = "aes128-gcm@openssh.com";
const NEWKEYS = 21;

interface Decipher {
  inSeqno: number;
  decrypt(d: Buffer, p: number, n: number): unknown;
  free(): void;
}

interface Keys {
  key: Buffer;
  iv: Buffer;
}

const newKeys = (): Keys => ({ key: randomBytes(16), iv: randomBytes(12) });

/** Seals `payloads` with our encrypt under `k` (one cipher object: one key period). */
function seal(k: Keys, seqno: number, payloads: Buffer[]): Buffer {
  const c = ssh2Crypto();
  const writes: Buffer[] = [];
  const obj = c.createCipher({
    outbound: {
      onWrite: (b: Buffer) => writes.push(Buffer.from(b)),
      cipherInfo: c.CIPHER_INFO[NAME],
      cipherKey: k.key,
      cipherIV: Buffer.from(k.iv),
      seqno,
    },
  }) as unknown as { allocPacket(n: number): Buffer; encrypt(p: Buffer): void };
  for (const p of payloads) {
    const pkt = OWN_GCM.allocPacket.call(obj, p.length);
    pkt.set(p, 5);
    OWN_GCM.encrypt.call(obj, pkt);
  }
  return Buffer.concat(writes);
}

/**
 * ssh2's Protocol as far as the decipher can tell: `parse` loops like
 * `Protocol.parse`, payloads are recorded, and a NEWKEYS payload frees the
 * current decipher and swaps in the next key period's, returning false.
 */
class SimProtocol {
  payloads: Buffer[] = [];
  decipher: Decipher;
  #periods: Keys[];
  #period = 0;
  #own: boolean;
  onPayload: (p: Buffer) => unknown = (p) => this.record(p);

  constructor(periods: Keys[], own: boolean) {
    this.#periods = periods;
    this.#own = own;
    this.decipher = this.#make(0, 0);
  }

  #make(period: number, seqno: number): Decipher {
    const c = ssh2Crypto();
    const k = this.#periods[period];
    const d = c.createDecipher({
      inbound: {
        onPayload: (p: Buffer) => this.onPayload(p),
        decipherInfo: c.CIPHER_INFO[NAME],
        decipherKey: k.key,
        decipherIV: Buffer.from(k.iv),
        seqno,
      },
    }) as unknown as Decipher;
    const m = this.#own ? OWN_GCM : SSH2_GCM;
    d.decrypt = m.decrypt as Decipher["decrypt"];
    d.free = m.free as Decipher["free"];
    return d;
  }

  record(p: Buffer): unknown {
    this.payloads.push(Buffer.from(p));
    if (p[0] !== NEWKEYS) return;
    const seq = this.decipher.inSeqno;
    this.decipher.free();
    this.decipher = this.#make(++this.#period, seq);
    return false;
  }

  parse(chunk: Buffer): void {
    let i: unknown = 0;
    // Exactly ssh2's loop: `while (i < len) i = this._parse(chunk, i, len);`
    while ((i as number) < chunk.length) {
      i = this.decipher.decrypt(chunk, i as number, chunk.length);
    }
  }
}

/** A socket as the queue sees it, feeding a SimProtocol. */
class SimSource implements PacketSource {
  destroyed = false;
  destroyedWith: unknown = undefined;
  holds: Promise<void>[] = [];
  endHolds: Promise<void>[] = [];
  redelivered: number[] = [];
  proto: SimProtocol;

  constructor(proto: SimProtocol) {
    this.proto = proto;
  }

  feed(chunk: Buffer): void {
    if (this.destroyed) return;
    readingFrom(this, chunk, () => this.proto.parse(chunk));
  }

  redeliver(bytes: Buffer): void {
    this.redelivered.push(bytes.length);
    this.feed(bytes);
  }

  holdReads(until: Promise<void>): void {
    this.holds.push(until);
  }

  holdEnd(until: Promise<void>): void {
    this.endHolds.push(until);
  }

  destroy(err?: unknown): void {
    this.destroyed = true;
    this.destroyedWith = err;
  }
}

/** Waits until `done()` (or `turns` timer turns), then a few turns more. */
async function settle(done: () => boolean, turns = 2000): Promise<void> {
  for (let i = 0; i < turns && !done(); i++) await new Promise((r) => setTimeout(r, 1));
  // A few more turns: nothing else may arrive after the expected end.
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 1));
}

/** A stream of key periods: payloads, each period but the last ending in NEWKEYS. */
function stream(sizes: number[][]): { periods: Keys[]; payloads: Buffer[]; wire: Buffer } {
  const periods = sizes.map(() => newKeys());
  const payloads: Buffer[] = [];
  const wires: Buffer[] = [];
  let seq = 0;
  sizes.forEach((period, i) => {
    const ps = period.map((n) => {
      const b = randomBytes(Math.max(1, n));
      if (b[0] === NEWKEYS) b[0] = 94; // CHANNEL_DATA, not a key change
      return b;
    });
    if (i < sizes.length - 1) ps.push(Buffer.from([NEWKEYS]));
    payloads.push(...ps);
    wires.push(seal(periods[i], seq, ps));
    seq += ps.length;
  });
  return { periods, payloads, wire: Buffer.concat(wires) };
}

function split(wire: Buffer, pieces: number[]): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < wire.length; i++) {
    const n = Math.max(1, pieces.length ? pieces[i % pieces.length] : wire.length);
    out.push(Buffer.from(wire.subarray(off, off + n)));
    off += n;
  }
  return out;
}

const hex = (bs: Buffer[]) => bs.map((b) => b.toString("hex"));

const sizeArb = fc.oneof(
  fc.integer({ min: 1, max: 300 }),
  fc.integer({ min: ASYNC_OPEN_MIN_BYTES - 40, max: ASYNC_OPEN_MIN_BYTES + 40 }),
  fc.integer({ min: 1, max: 32_700 }),
);

Deno.test("async opens: every payload once, in order, as ssh2's own decipher, across key changes", async () => {
  const before = { ...openQueueStats };
  let packets = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(sizeArb, { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 4 }),
      fc.array(fc.integer({ min: 1, max: 70_000 }), { maxLength: 6 }),
      async (sizes, pieces) => {
        const { periods, payloads, wire } = stream(sizes);
        packets += payloads.length;
        // ssh2's own decipher, synchronous, is the reference.
        const ref = new SimProtocol(periods, false);
        ref.parse(wire);
        assert.deepEqual(hex(ref.payloads), hex(payloads));

        const proto = new SimProtocol(periods, true);
        const src = new SimSource(proto);
        for (const chunk of split(wire, pieces)) src.feed(chunk);
        await settle(() => proto.payloads.length >= payloads.length);
        assert.equal(src.destroyed, false, `destroyed: ${src.destroyedWith}`);
        assert.deepEqual(hex(proto.payloads), hex(payloads));
        assert.equal(proto.decipher.inSeqno, ref.decipher.inSeqno);
      },
    ),
    { numRuns: 60 },
  );
  assert.ok(packets > 200, `only ${packets} packets`);
  // The asynchronous path ran, and bytes after a queued NEWKEYS went back through the source.
  assert.ok(openQueueStats.openedAsync - before.openedAsync > 20, "no async opens");
  assert.ok(openQueueStats.redelivered - before.redelivered > 0, "no redelivery after NEWKEYS");
});

Deno.test("without a source that says where bytes came from, everything opens synchronously", () => {
  const { periods, payloads, wire } = stream([[20_000, 30, 9_000], [32_000]]);
  const proto = new SimProtocol(periods, true);
  const before = openQueueStats.openedAsync;
  proto.parse(wire); // no readingFrom around it
  assert.deepEqual(hex(proto.payloads), hex(payloads));
  assert.equal(openQueueStats.openedAsync, before);
});

/** Flips one bit of packet `index` of `wire` (whole packets, as sealed). */
function corrupt(wire: Buffer, index: number, at = 40): Buffer {
  const out = Buffer.from(wire);
  let off = 0;
  for (let i = 0; i < index; i++) off += out.readUInt32BE(off) + 20;
  out[off + 4 + at] ^= 0x04;
  return out;
}

Deno.test("a failed tag, large or small, ends the connection after exactly the packets before it", async () => {
  // Packets: small, LARGE, small, LARGE, small; corrupt each in turn.
  const sizes = [100, 20_000, 200, 16_000, 50];
  for (let bad = 0; bad < sizes.length; bad++) {
    for (const pieces of [[], [1000], [7]]) {
      const { periods, payloads, wire } = stream([sizes]);
      const proto = new SimProtocol(periods, true);
      const src = new SimSource(proto);
      let threw: unknown;
      try {
        for (const chunk of split(corrupt(wire, bad), pieces)) src.feed(chunk);
      } catch (err) {
        threw = err; // a failure with nothing queued before it throws, as ssh2's would
      }
      await settle(() => src.destroyed || threw !== undefined);
      const failure = threw ?? src.destroyedWith;
      assert.ok(failure instanceof GcmAuthError, `packet ${bad}, pieces ${pieces}: ${failure}`);
      assert.deepEqual(hex(proto.payloads), hex(payloads.slice(0, bad)), `packet ${bad}`);
    }
  }
});

Deno.test("a bad length behind a pending large packet: that one arrives, then the connection ends", async () => {
  const { periods, payloads, wire } = stream([[20_000, 10]]);
  const first = wire.readUInt32BE(0) + 20;
  const bad = Buffer.from(wire);
  bad.writeUInt32BE(13, first); // not a multiple of 16
  const proto = new SimProtocol(periods, true);
  const src = new SimSource(proto);
  src.feed(bad);
  await settle(() => src.destroyed);
  assert.match(String(src.destroyedWith), /Bad packet length/);
  assert.deepEqual(hex(proto.payloads), hex(payloads.slice(0, 1)));
});

Deno.test("a handler that throws or gives up stops delivery there", async () => {
  for (const mode of ["throw", "infinity"] as const) {
    const { periods, payloads, wire } = stream([[20_000, 30, 20_000, 40]]);
    const proto = new SimProtocol(periods, true);
    const seen: Buffer[] = [];
    proto.onPayload = (p) => {
      seen.push(Buffer.from(p));
      if (seen.length === 2) {
        if (mode === "throw") throw new Error("handler failed");
        return Infinity; // ssh2's doFatalError
      }
    };
    const src = new SimSource(proto);
    src.feed(wire);
    await settle(() => false, 100);
    assert.deepEqual(hex(seen), hex(payloads.slice(0, 2)), mode);
    if (mode === "throw") assert.match(String(src.destroyedWith), /handler failed/);
    else assert.equal(src.destroyed, false, "ssh2 ends the connection itself");
  }
});

Deno.test("a decipher freed while packets open delivers nothing more", async () => {
  const { periods, wire } = stream([[20_000, 30, 20_000]]);
  const proto = new SimProtocol(periods, true);
  const src = new SimSource(proto);
  src.feed(wire);
  proto.decipher.free(); // the connection closes
  await settle(() => false, 100);
  assert.equal(proto.payloads.length, 0);
  assert.equal(src.destroyed, false);
});

Deno.test("reads are held while more than MAX_QUEUED_BYTES wait, and released as they drain", async () => {
  const n = Math.ceil((MAX_QUEUED_BYTES * 1.5) / 32_000);
  const { periods, payloads, wire } = stream([Array(n).fill(32_000)]);
  const proto = new SimProtocol(periods, true);
  const src = new SimSource(proto);
  src.feed(wire);
  assert.equal(src.holds.length, 1, "one hold for the burst");
  let released = false;
  src.holds[0].then(() => (released = true));
  await settle(() => proto.payloads.length === payloads.length);
  assert.equal(released, true);
  assert.deepEqual(hex(proto.payloads), hex(payloads));
});

/** A payload of channel data (type 94) of `n` bytes. */
const data = (n: number) => {
  const b = randomBytes(n);
  b[0] = 94;
  return b;
};
const tick = (ms = 1) => new Promise((r) => setTimeout(r, ms));

Deno.test("NEWKEYS amid large packets, the wire cut in two at many points and in three around it", async () => {
  const periods = [newKeys(), newKeys(), newKeys()];
  const p0 = [data(20_000), data(50), Buffer.from([NEWKEYS])];
  const p1 = [data(9_000), Buffer.from([NEWKEYS])];
  const p2 = [data(16_000), data(10), data(8_200)];
  const w0 = seal(periods[0], 0, p0);
  const wire = Buffer.concat([w0, seal(periods[1], 3, p1), seal(periods[2], 5, p2)]);
  const want = [...p0, ...p1, ...p2];
  const cuts: number[][] = [];
  for (let c = 1; c < wire.length; c += 97) cuts.push([c]);
  const nkAt = w0.length - 36; // the first NEWKEYS packet: 4 + 16 + 16 bytes
  for (let a = nkAt - 6; a < nkAt + 42; a++) {
    for (let b = a + 1; b < w0.length + 60; b += 5) cuts.push([a, b]);
  }
  for (const cut of cuts) {
    const proto = new SimProtocol(periods, true);
    const src = new SimSource(proto);
    let at = 0;
    for (const c of [...cut, wire.length]) {
      src.feed(Buffer.from(wire.subarray(at, c)));
      at = c;
      if (cut.length > 1) await tick(0); // sometimes opens finish between chunks
    }
    await settle(() => src.destroyed || proto.payloads.length >= want.length);
    assert.equal(src.destroyed, false, `cut ${cut}: ${src.destroyedWith}`);
    assert.deepEqual(hex(proto.payloads), hex(want), `cut ${cut}`);
    assert.equal(proto.decipher.inSeqno, 8, `cut ${cut}`);
  }
});

Deno.test("a large KEXINIT opened asynchronously: ssh2's handler swap reaches the packets behind it", async () => {
  const k = newKeys();
  const kexinit = data(12_000);
  kexinit[0] = 20;
  const ps = [data(10), kexinit, data(30), data(9_000), data(40)];
  const proto = new SimProtocol([k], true);
  const after: number[] = [];
  const d = proto.decipher as unknown as { _onPayload: (p: Buffer) => unknown };
  proto.onPayload = (p) => {
    // ssh2 points the decipher's onPayload at its key-exchange handler on KEXINIT.
    if (p[0] === 20) d._onPayload = (q: Buffer) => void after.push(q.length);
    return proto.record(p);
  };
  const src = new SimSource(proto);
  src.feed(seal(k, 0, ps));
  await settle(() => after.length >= 3);
  assert.deepEqual(after, [30, 9_000, 40]);
  assert.equal(proto.payloads.length, 2);
});

Deno.test("a NEWKEYS large enough to open asynchronously, with data after it: the connection ends with a clear error", async () => {
  // ssh2 looks only at NEWKEYS' type byte; what follows was parsed under the old key.
  const periods = [newKeys(), newKeys()];
  const nk = Buffer.alloc(ASYNC_OPEN_MIN_BYTES + 100);
  nk[0] = NEWKEYS;
  const p0 = [data(100), nk];
  const wire = Buffer.concat([seal(periods[0], 0, p0), seal(periods[1], 2, [data(200)])]);
  const proto = new SimProtocol(periods, true);
  const src = new SimSource(proto);
  src.feed(wire);
  await settle(() => src.destroyed);
  assert.match(String(src.destroyedWith), /NEWKEYS packet; closing the connection/);
  assert.deepEqual(hex(proto.payloads), hex(p0.slice(0, 1)));
});

Deno.test("bytes held behind a key-exchange packet count against MAX_QUEUED_BYTES", async () => {
  // 29 large packets (under the bound), a small packet of the key-exchange
  // range (parsing stops there), then 8 MB more, while opens are slowed.
  const subtle = crypto.subtle as unknown as { decrypt: (...a: unknown[]) => Promise<ArrayBuffer> };
  const orig = subtle.decrypt;
  subtle.decrypt = async function (this: unknown, ...a: unknown[]) {
    const r = await orig.apply(this, a);
    await tick(100);
    return r;
  };
  try {
    const k = newKeys();
    const head = Array.from({ length: 29 }, () => data(32_000));
    const flood = Array.from({ length: 36_000 }, () => data(220));
    const ps = [...head, Buffer.from([30, 1, 2, 3]), ...flood];
    const wire = seal(k, 0, ps);
    const proto = new SimProtocol([k], true);
    const src = new SimSource(proto);
    let fed = 0;
    let held = false;
    for (const chunk of split(wire, [65_536])) {
      if (src.holds.length > 0) {
        held = true;
        await Promise.all(src.holds.splice(0)); // a socket waits before reading on
      }
      src.feed(chunk);
      fed += chunk.length;
    }
    await settle(() => proto.payloads.length >= ps.length, 10_000);
    assert.ok(held, "reads were never held");
    assert.ok(src.redelivered.length > 0, "the stop point was never reached");
    const biggest = Math.max(...src.redelivered);
    assert.ok(biggest <= MAX_QUEUED_BYTES + 65_536, `${biggest} bytes held at once`);
    assert.equal(fed, wire.length);
    assert.deepEqual(hex(proto.payloads), hex(ps));
  } finally {
    subtle.decrypt = orig;
  }
});

Deno.test("packets then the peer's FIN (real DenoSocket): all delivered before 'end' frees the decipher", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    let lost = 0;
    for (let round = 0; round < 10; round++) {
      const k = newKeys();
      const accepted = listener.accept();
      const sock = new DenoSocket(
        await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
      );
      const peer = await accepted;
      const proto = new SimProtocol([k], true);
      // As ssh2's client.js: 'data' → parse (errors caught), 'end' → cleanup → free().
      sock.on("data", (c: Buffer) => {
        try {
          proto.parse(c);
        } catch { /* ssh2 emits 'error' */ }
      });
      let ended = false;
      sock.on("end", () => {
        ended = true;
        proto.decipher.free();
      });
      sock.on("error", () => {});
      sock.resume();
      const ps = [data(30_000), data(30_000), data(20), data(30_000), data(10)];
      const wire = seal(k, 0, ps);
      for (let at = 0; at < wire.length;) at += await peer.write(wire.subarray(at));
      peer.close();
      await settle(() => ended && proto.payloads.length >= ps.length, 300);
      assert.equal(ended, true, "no 'end'");
      lost += ps.length - proto.payloads.length;
      sock.destroy();
    }
    assert.equal(lost, 0, `${lost} payloads that arrived before the FIN never reached ssh2`);
  } finally {
    listener.close();
  }
});
