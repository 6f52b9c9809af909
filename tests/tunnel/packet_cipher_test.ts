/**
 * lib/tunnel/packet_cipher.ts against ssh2's own AES-GCM classes and against
 * node:crypto as the reference AES-GCM: byte-for-byte equal packets for
 * random keys, IVs and packet sizes (both the JavaScript path and the
 * node:crypto one for large packets), decryption of arbitrarily split
 * input, tag failures rejected before anything is delivered, and the
 * ssh2 contract (`_dead`, sequence numbers, IV counter, onPayload's return).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import fc from "fast-check";
import {
  aesBlock,
  expandKey,
  gcmKey,
  installPacketCipher,
  JS_MAX_BYTES,
  OWN_GCM,
  packetCipherInstalled,
  sealPacket,
  SSH2_GCM,
  ssh2Crypto,
  uninstallPacketCipher,
} from "../../lib/tunnel/packet_cipher.ts";

const NAMES = { 16: "aes128-gcm@openssh.com", 32: "aes256-gcm@openssh.com" } as const;

interface Cipher {
  outSeqno: number;
  _encIV: Buffer;
  _dead: boolean;
  allocPacket(n: number): Buffer;
  encrypt(p: Buffer): void;
  free(): void;
}
interface Decipher {
  inSeqno: number;
  _decipherIV: Buffer;
  decrypt(d: Buffer, p: number, n: number): unknown;
}

/** An ssh2 AES-GCM cipher object (ssh2's own class) with the given methods. */
function cipherOf(
  keyLen: 16 | 32,
  key: Buffer,
  iv: Buffer,
  seqno: number,
  own: boolean,
  writes: Buffer[],
): Cipher {
  const c = ssh2Crypto();
  const obj = c.createCipher({
    outbound: {
      onWrite: (b: Buffer) => writes.push(Buffer.from(b)),
      cipherInfo: c.CIPHER_INFO[NAMES[keyLen]],
      cipherKey: key,
      cipherIV: Buffer.from(iv),
      seqno,
    },
  }) as unknown as Cipher;
  obj.encrypt = (own ? OWN_GCM : SSH2_GCM).encrypt as Cipher["encrypt"];
  return obj;
}

function decipherOf(
  keyLen: 16 | 32,
  key: Buffer,
  iv: Buffer,
  seqno: number,
  own: boolean,
  onPayload: (p: Buffer) => unknown,
): Decipher {
  const c = ssh2Crypto();
  const obj = c.createDecipher({
    inbound: {
      onPayload,
      decipherInfo: c.CIPHER_INFO[NAMES[keyLen]],
      decipherKey: key,
      decipherIV: Buffer.from(iv),
      seqno,
    },
  }) as unknown as Decipher;
  obj.decrypt = (own ? OWN_GCM : SSH2_GCM).decrypt as Decipher["decrypt"];
  return obj;
}

function ivAdd(iv: Buffer, n: number): Buffer {
  const out = Buffer.from(iv);
  out.writeBigUInt64BE((out.readBigUInt64BE(4) + BigInt(n)) & 0xffffffffffffffffn, 4);
  return out;
}

/** Encrypts `payloads` with ssh2's and with our encrypt; returns both wires. */
function sealBoth(keyLen: 16 | 32, key: Buffer, iv: Buffer, seqno: number, payloads: Buffer[]) {
  const w1: Buffer[] = [], w2: Buffer[] = [];
  const a = cipherOf(keyLen, key, iv, seqno, false, w1);
  const b = cipherOf(keyLen, key, iv, seqno, true, w2);
  const ownWrites: number[] = [];
  for (const payload of payloads) {
    const pkt = a.allocPacket(payload.length); // random padding, used by both
    pkt.set(payload, 5);
    a.encrypt(Buffer.from(pkt));
    const before = w2.length;
    b.encrypt(Buffer.from(pkt));
    ownWrites.push(w2.length - before);
  }
  assert.equal(b.outSeqno, a.outSeqno);
  assert.ok(b._encIV.equals(a._encIV), "IV counters differ");
  return { ssh2: Buffer.concat(w1), own: Buffer.concat(w2), ownWrites };
}

/** Feeds `wire` to a decipher in pieces of the given sizes (cycled). */
function feed(d: Decipher, wire: Buffer, pieces: number[]): void {
  let off = 0;
  for (let i = 0; off < wire.length; i++) {
    const n = Math.max(1, pieces.length ? pieces[i % pieces.length] : wire.length);
    const chunk = Buffer.from(wire.subarray(off, off + n));
    d.decrypt(chunk, 0, chunk.length);
    off += n;
  }
}

/** node:crypto as the reference: opens each packet of `wire` directly. */
function referenceOpen(keyLen: 16 | 32, key: Buffer, iv: Buffer, wire: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0, i = 0; off < wire.length; i++) {
    const len = wire.readUInt32BE(off);
    const d = createDecipheriv(keyLen === 16 ? "aes-128-gcm" : "aes-256-gcm", key, ivAdd(iv, i));
    d.setAAD(wire.subarray(off, off + 4));
    d.setAuthTag(wire.subarray(off + 4 + len, off + 20 + len));
    const plain = Buffer.concat([d.update(wire.subarray(off + 4, off + 4 + len)), d.final()]);
    out.push(plain.subarray(1, plain.length - plain[0]));
    off += len + 20;
  }
  return out;
}

const keyLenArb = fc.constantFrom<16 | 32>(16, 32);
/** IVs, some with the invocation counter about to carry over. */
const ivArb = fc.tuple(fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.nat(9)).map(
  ([b, ff]) => {
    const iv = Buffer.from(b);
    for (let i = 0; i < ff && i < 8; i++) iv[11 - i] = 0xff;
    return iv;
  },
);
/** Payload sizes around the interesting boundaries: tiny, the JS/node:crypto switch, bulk. */
const sizeArb = fc.oneof(
  fc.integer({ min: 0, max: 64 }),
  fc.integer({ min: 0, max: 400 }),
  fc.integer({ min: JS_MAX_BYTES - 40, max: JS_MAX_BYTES + 40 }),
  fc.integer({ min: 0, max: 34_000 }),
);

Deno.test("AES block function equals node:crypto AES-128/256-ECB", () => {
  fc.assert(
    fc.property(
      keyLenArb,
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.uint8Array({ minLength: 16, maxLength: 16 }),
      (kl, k, b) => {
        const key = Buffer.from(k.subarray(0, kl)), blk = Buffer.from(b);
        const ecb = createCipheriv(kl === 16 ? "aes-128-ecb" : "aes-256-ecb", key, null);
        ecb.setAutoPadding(false);
        const ref = ecb.update(blk);
        const out = new Int32Array(4);
        const view = aesBlock(
          expandKey(key),
          blk.readInt32BE(0),
          blk.readInt32BE(4),
          blk.readInt32BE(8),
          blk.readInt32BE(12),
        );
        out.set(view);
        for (let i = 0; i < 4; i++) assert.equal(out[i], ref.readInt32BE(4 * i));
      },
    ),
    { numRuns: 500 },
  );
});

/**
 * The four-T-table AES block function `aesBlock` used before it was
 * rewritten over one table and rotations: the oracle for the rewrite.
 */
const OLD_T = (() => {
  const sbox = new Uint8Array(256);
  const t = [0, 1, 2, 3].map(() => new Int32Array(256));
  const xtime = (x: number) => ((x << 1) ^ (x & 0x80 ? 0x1b : 0)) & 0xff;
  const exp = new Uint8Array(256), log = new Uint8Array(256);
  for (let i = 0, x = 1; i < 255; i++) {
    exp[i] = x;
    log[x] = i;
    x ^= xtime(x);
  }
  const rotl8 = (x: number, n: number) => ((x << n) | (x >>> (8 - n))) & 0xff;
  for (let a = 0; a < 256; a++) {
    const inv = a === 0 ? 0 : exp[(255 - log[a]) % 255];
    const s = inv ^ rotl8(inv, 1) ^ rotl8(inv, 2) ^ rotl8(inv, 3) ^ rotl8(inv, 4) ^ 0x63;
    sbox[a] = s;
    const s2 = xtime(s), s3 = s2 ^ s;
    const w = (s2 << 24) | (s << 16) | (s << 8) | s3;
    t[0][a] = w;
    t[1][a] = (w >>> 8) | (w << 24);
    t[2][a] = (w >>> 16) | (w << 16);
    t[3][a] = (w >>> 24) | (w << 8);
  }
  return { sbox, t };
})();

function oldAesBlock(rk: Int32Array, a0: number, a1: number, a2: number, a3: number): number[] {
  const { sbox: S, t: [T0, T1, T2, T3] } = OLD_T;
  let s0 = a0 ^ rk[0], s1 = a1 ^ rk[1], s2 = a2 ^ rk[2], s3 = a3 ^ rk[3];
  const last = rk.length - 4;
  let k = 4;
  for (; k < last; k += 4) {
    const t0 = T0[s0 >>> 24] ^ T1[(s1 >>> 16) & 255] ^ T2[(s2 >>> 8) & 255] ^ T3[s3 & 255] ^ rk[k];
    const t1 = T0[s1 >>> 24] ^ T1[(s2 >>> 16) & 255] ^ T2[(s3 >>> 8) & 255] ^ T3[s0 & 255] ^
      rk[k + 1];
    const t2 = T0[s2 >>> 24] ^ T1[(s3 >>> 16) & 255] ^ T2[(s0 >>> 8) & 255] ^ T3[s1 & 255] ^
      rk[k + 2];
    s3 = T0[s3 >>> 24] ^ T1[(s0 >>> 16) & 255] ^ T2[(s1 >>> 8) & 255] ^ T3[s2 & 255] ^ rk[k + 3];
    s0 = t0;
    s1 = t1;
    s2 = t2;
  }
  return [
    ((S[s0 >>> 24] << 24) | (S[(s1 >>> 16) & 255] << 16) | (S[(s2 >>> 8) & 255] << 8) |
      S[s3 & 255]) ^ rk[k],
    ((S[s1 >>> 24] << 24) | (S[(s2 >>> 16) & 255] << 16) | (S[(s3 >>> 8) & 255] << 8) |
      S[s0 & 255]) ^ rk[k + 1],
    ((S[s2 >>> 24] << 24) | (S[(s3 >>> 16) & 255] << 16) | (S[(s0 >>> 8) & 255] << 8) |
      S[s1 & 255]) ^ rk[k + 2],
    ((S[s3 >>> 24] << 24) | (S[(s0 >>> 16) & 255] << 16) | (S[(s1 >>> 8) & 255] << 8) |
      S[s2 & 255]) ^ rk[k + 3],
  ];
}

Deno.test("AES block function equals the four-table version it replaced", () => {
  // Words from anywhere in the int32 range, and blocks that are mostly 0x00
  // or 0xff bytes (the table ends), for both key sizes.
  const word = fc.oneof(
    fc.integer({ min: -0x80000000, max: 0x7fffffff }),
    fc.constantFrom(0, -1, 0x7fffffff, -0x80000000, 0xff, 0xff000000 | 0),
  );
  fc.assert(
    fc.property(
      keyLenArb,
      fc.uint8Array({ minLength: 32, maxLength: 32 }),
      fc.tuple(word, word, word, word),
      (kl, k, [a0, a1, a2, a3]) => {
        const rk = expandKey(k.subarray(0, kl));
        const got = [...aesBlock(rk, a0, a1, a2, a3)];
        assert.deepEqual(got, oldAesBlock(rk, a0, a1, a2, a3));
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("sealPacket equals node:crypto AES-GCM with the length as AAD", () => {
  for (const kl of [16, 32] as const) {
    for (const n of [16, 32, 48, 336, JS_MAX_BYTES, JS_MAX_BYTES + 16, 16_384]) {
      const key = randomBytes(kl), iv = randomBytes(12);
      const pkt = Buffer.concat([Buffer.alloc(4), randomBytes(n)]);
      pkt.writeUInt32BE(n, 0);
      const ours = sealPacket(gcmKey(key), `aes-${kl * 8}-gcm`, key, iv, pkt);
      const c = createCipheriv(kl === 16 ? "aes-128-gcm" : "aes-256-gcm", key, iv);
      c.setAAD(pkt.subarray(0, 4));
      const ref = Buffer.concat([pkt.subarray(0, 4), c.update(pkt.subarray(4)), c.final()]);
      assert.ok(ours.equals(Buffer.concat([ref, c.getAuthTag()])), `${kl * 8} bit, ${n} B`);
    }
  }
});

Deno.test("own encrypt/decrypt equal ssh2's byte for byte and agree with node:crypto", () => {
  let packets = 0;
  fc.assert(
    fc.property(
      keyLenArb,
      ivArb,
      fc.nat(),
      fc.array(sizeArb, { minLength: 4, maxLength: 24 }),
      fc.array(fc.integer({ min: 1, max: 5000 }), { maxLength: 8 }),
      (keyLen, iv, seqno, sizes, pieces) => {
        const key = randomBytes(keyLen);
        const payloads = sizes.map((n) => randomBytes(n));
        packets += payloads.length;
        const { ssh2, own, ownWrites } = sealBoth(keyLen, key, iv, seqno >>> 0, payloads);
        assert.ok(own.equals(ssh2), "encrypted bytes differ from ssh2's");
        assert.ok(ownWrites.every((w) => w === 1), `writes per packet: ${ownWrites}`);
        // The reference library opens our packets.
        const ref = referenceOpen(keyLen, key, iv, own);
        assert.deepEqual(ref.map((b) => b.toString("hex")), payloads.map((b) => b.toString("hex")));
        // Our decrypt, input split arbitrarily, equals ssh2's on the same input.
        for (const ownDec of [true, false]) {
          const got: Buffer[] = [];
          const d = decipherOf(keyLen, key, iv, seqno >>> 0, ownDec, (p) => {
            got.push(Buffer.from(p));
          });
          feed(d, ssh2, pieces);
          assert.equal(got.length, payloads.length);
          got.forEach((g, i) => assert.ok(g.equals(payloads[i]), `payload ${i} differs`));
          assert.equal(d.inSeqno, (seqno + payloads.length) >>> 0);
          assert.ok(d._decipherIV.equals(ivAdd(iv, payloads.length)), "decipher IV counter");
        }
      },
    ),
    { numRuns: 400 },
  );
  assert.ok(packets > 2_000, `only ${packets} packets`);
});

Deno.test("many small packets (the JavaScript path) equal ssh2's across key changes", () => {
  // A new key per batch, as after each rekey ssh2 builds new cipher objects.
  for (let batch = 0; batch < 20; batch++) {
    const keyLen = batch % 2 ? 32 : 16;
    const key = randomBytes(keyLen), iv = randomBytes(12);
    const payloads = Array.from({ length: 200 }, (_, i) => randomBytes((i * 37 + batch) % 700));
    const { ssh2, own } = sealBoth(keyLen, key, iv, batch, payloads);
    assert.ok(own.equals(ssh2), `batch ${batch}`);
  }
});

Deno.test("a flipped bit anywhere in a packet is rejected before any payload is delivered", () => {
  fc.assert(
    fc.property(keyLenArb, ivArb, sizeArb, fc.nat(), (keyLen, iv, size, where) => {
      const key = randomBytes(keyLen);
      const { own } = sealBoth(keyLen, key, iv, 0, [randomBytes(size)]);
      const bad = Buffer.from(own);
      const bit = where % (bad.length * 8);
      bad[bit >> 3] ^= 1 << (bit & 7);
      // A longer (still valid) length just waits for more bytes: give it some.
      const input = Buffer.concat([bad, randomBytes(36_000)]);
      for (const ownDec of [true, false]) {
        let delivered = 0;
        const d = decipherOf(keyLen, key, iv, 0, ownDec, () => {
          delivered++;
        });
        assert.throws(
          () => d.decrypt(input, 0, input.length),
          (e: Error) => /Bad packet length|authenticate/.test(e.message),
        );
        assert.equal(delivered, 0);
      }
    }),
    { numRuns: 400 },
  );
});

Deno.test("split at every byte boundary, intact or with a flipped bit: whole packets only, verified first", () => {
  for (const keyLen of [16, 32] as const) {
    const key = randomBytes(keyLen), iv = randomBytes(12);
    // Both paths: tiny and small packets in JavaScript, one over JS_MAX_BYTES by node:crypto.
    const payloads = [randomBytes(3), randomBytes(JS_MAX_BYTES + 100), randomBytes(40)];
    const { own } = sealBoth(keyLen, key, iv, 9, payloads);
    const ends: number[] = [];
    for (let off = 0; off < own.length;) {
      off += own.readUInt32BE(off) + 20;
      ends.push(off);
    }
    for (let cut = 1; cut < own.length; cut++) {
      for (const flip of [-1, cut - 1, cut]) {
        const wire = Buffer.from(own);
        if (flip >= 0 && flip < wire.length) wire[flip] ^= 0x10;
        // The packet holding the flipped byte; the ones before it must arrive intact.
        const bad = flip < 0 ? payloads.length : ends.findIndex((e) => flip < e);
        const got: Buffer[] = [];
        const d = decipherOf(keyLen, key, iv, 9, true, (p) => {
          got.push(Buffer.from(p));
        });
        let threw = false;
        try {
          d.decrypt(wire.subarray(0, cut), 0, cut);
          // A prefix in front: ssh2 continues a chunk from an offset after NEWKEYS.
          const rest = Buffer.concat([randomBytes(7), wire.subarray(cut)]);
          d.decrypt(rest, 7, rest.length);
        } catch {
          threw = true;
        }
        // A flip in a length field may give another valid length: that packet then
        // waits for bytes that never come; either way nothing of it is delivered.
        if (flip < 0) assert.equal(threw, false, `cut ${cut}`);
        assert.equal(got.length, bad, `cut ${cut} flip ${flip}: ${got.length} delivered`);
        got.forEach((g, i) => assert.ok(g.equals(payloads[i]), `cut ${cut}: payload ${i}`));
      }
    }
    // One byte at a time.
    const got: Buffer[] = [];
    const d = decipherOf(keyLen, key, iv, 9, true, (p) => {
      got.push(Buffer.from(p));
    });
    feed(d, own, [1]);
    assert.deepEqual(got.map((b) => b.toString("hex")), payloads.map((b) => b.toString("hex")));
  }
});

Deno.test("free() stops encrypt; onPayload's return value stops decrypt like ssh2's", () => {
  const key = randomBytes(16), iv = randomBytes(12);
  const writes: Buffer[] = [];
  const c = cipherOf(16, key, iv, 5, true, writes);
  c.free();
  c.encrypt(c.allocPacket(10));
  assert.equal(writes.length, 0);
  assert.equal(c.outSeqno, 5);

  const { own } = sealBoth(16, key, iv, 0, [randomBytes(10), randomBytes(20), randomBytes(30)]);
  for (const ret of [false, 7]) {
    const results = [true, false].map((ownDec) => {
      let n = 0;
      const d = decipherOf(16, key, iv, 0, ownDec, () => (++n === 1 ? ret : undefined));
      const r1 = d.decrypt(own, 0, own.length);
      return { r1, n, seq: d.inSeqno };
    });
    assert.deepEqual(results[0], results[1]);
  }
});

Deno.test("allocPacket lays packets out as ssh2's does, with padding from the pool", () => {
  const c = cipherOf(16, Buffer.alloc(16), Buffer.alloc(12), 0, true, []);
  const own = (n: number) => OWN_GCM.allocPacket.call(c, n);
  const theirs = (n: number) => SSH2_GCM.allocPacket.call(c, n);
  fc.assert(
    fc.property(
      fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 35_000 })),
      (n) => {
        const a = own(n), b = theirs(n);
        // Same length, same length field and padding length; the payload room
        // is left for the caller in both.
        assert.equal(a.length, b.length);
        assert.ok(a.subarray(0, 5).equals(b.subarray(0, 5)), `header for ${n}`);
        assert.equal(a.readUInt32BE(0), a.length - 4);
        assert.equal((a.length - 4) % 16, 0);
        assert.ok(a[4] >= 4 && a[4] < 20);
      },
    ),
    { numRuns: 1000 },
  );
  // Padding is fresh random bytes per packet, across pool refills (4 KiB).
  const seen = new Set<string>();
  let bytes = 0, ones = 0;
  for (let i = 0; i < 3000; i++) {
    const p = own(i % 40);
    const pad = p.subarray(p.length - p[4]);
    assert.equal(pad.length, p[4]);
    seen.add(pad.toString("hex"));
    for (const b of pad) {
      bytes++;
      for (let x = b; x; x >>= 1) ones += x & 1;
    }
  }
  assert.ok(seen.size > 2990, `only ${seen.size} distinct paddings in 3000`);
  const share = ones / (bytes * 8);
  assert.ok(share > 0.45 && share < 0.55, `share of 1 bits ${share}`);
});

Deno.test("install/uninstall swap the methods on ssh2's classes", () => {
  const was = packetCipherInstalled();
  try {
    assert.equal(installPacketCipher(), true);
    assert.equal(packetCipherInstalled(), true);
    const c = ssh2Crypto().createCipher({
      outbound: {
        onWrite: () => {},
        cipherInfo: ssh2Crypto().CIPHER_INFO["aes128-gcm@openssh.com"],
        cipherKey: Buffer.alloc(16),
        cipherIV: Buffer.alloc(12),
        seqno: 0,
      },
    }) as unknown as Cipher;
    assert.equal(c.encrypt, OWN_GCM.encrypt);
    assert.equal(c.allocPacket, OWN_GCM.allocPacket);
    uninstallPacketCipher();
    assert.equal(packetCipherInstalled(), false);
    assert.equal(c.encrypt, SSH2_GCM.encrypt);
    assert.equal(c.allocPacket, SSH2_GCM.allocPacket);
  } finally {
    if (was) installPacketCipher();
  }
});
