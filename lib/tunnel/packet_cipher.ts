/**
 * AES-GCM SSH packet cipher without per-packet cipher construction
 * (issue #14 item 3).
 *
 * Under Deno ssh2 always runs its JavaScript crypto path, and for
 * `aes{128,256}-gcm@openssh.com` that path builds a new `node:crypto`
 * `createCipheriv`/`createDecipheriv` for every packet (a GCM object cannot
 * be re-IV'd) and hands each packet to the socket in three writes. Deno's
 * `node:crypto` has a fixed cost of several µs per object and per call, which
 * dominates small packets (window adjusts, small requests).
 *
 * Here the key is expanded once per cipher object (so once per key exchange)
 * into AES round keys and an 8-bit GHASH multiplication table, and small
 * packets are sealed and opened entirely in JavaScript: AES-CTR with one
 * 32-bit T-table, GHASH by 8-bit table lookups, the whole packet (length, cipher
 * text, tag) produced in one buffer and handed over in one write. Packets
 * larger than `JS_MAX_BYTES` go through `node:crypto`'s AES-GCM exactly as
 * ssh2 does (its native AES is faster in bulk than JavaScript), still in one
 * write. The output is RFC 5647 / OpenSSH AES-GCM and byte-for-byte what
 * ssh2's own classes produce (tests/tunnel/packet_cipher_test.ts).
 *
 * `installPacketCipher()` patches the `encrypt`/`decrypt` methods (and the
 * cipher's `allocPacket`, for pooled padding bytes) on the
 * prototypes of ssh2's AES-GCM cipher classes (the objects ssh2's
 * `createCipher`/`createDecipher` return, which a connection swaps for new
 * ones at every NEWKEYS), keeping their fields: sequence numbers, the IV
 * counter, `_dead`, the packet-length checks and the `onPayload` return
 * protocol.
 */

import { Buffer } from "node:buffer";
import { createCipheriv, createDecipheriv, randomFillSync } from "node:crypto";
import * as ssh2CryptoModule from "ssh2/lib/protocol/crypto.js";
import {
  ASYNC_OPEN_MIN_BYTES,
  GcmAuthError,
  OpenQueue,
  payloadOf,
  sourceOf,
} from "./open_queue.ts";

// ---------------------------------------------------------------- AES tables

/**
 * AES S-box and the encryption T-table, computed at load. The usual other
 * three T-tables are this one rotated by 8, 16 and 24 bits (`rotr*`): under
 * V8 rotating measured faster than loading them (a 330 B request sealed
 * plus a 420 B response opened: ~7.7 instead of ~8.9 µs), and 1 KiB of
 * table stays in cache more easily than 4.
 */
const SBOX = new Uint8Array(256);
const T0 = new Int32Array(256);

const rotr8 = (x: number) => (x >>> 8) | (x << 24);
const rotr16 = (x: number) => (x >>> 16) | (x << 16);
const rotr24 = (x: number) => (x >>> 24) | (x << 8);

(function buildTables() {
  const xtime = (x: number) => ((x << 1) ^ (x & 0x80 ? 0x1b : 0)) & 0xff;
  // Powers and logarithms of the generator 3 in GF(2^8).
  const exp = new Uint8Array(256);
  const log = new Uint8Array(256);
  for (let i = 0, x = 1; i < 255; i++) {
    exp[i] = x;
    log[x] = i;
    x ^= xtime(x);
  }
  const rotl8 = (x: number, n: number) => ((x << n) | (x >>> (8 - n))) & 0xff;
  for (let a = 0; a < 256; a++) {
    const inv = a === 0 ? 0 : exp[(255 - log[a]) % 255];
    const s = inv ^ rotl8(inv, 1) ^ rotl8(inv, 2) ^ rotl8(inv, 3) ^ rotl8(inv, 4) ^ 0x63;
    SBOX[a] = s;
    const s2 = xtime(s), s3 = s2 ^ s;
    T0[a] = (s2 << 24) | (s << 16) | (s << 8) | s3;
  }
})();

/** GHASH reduction for the 8 bits shifted out by a multiplication by x^8. */
const R8 = new Int32Array(256);
for (let r = 0; r < 256; r++) {
  let acc = 0;
  for (let k = 0; k < 8; k++) if (r & (0x80 >>> k)) acc ^= 0xe100 >>> k;
  R8[r] = acc << 16;
}

/** Expands an AES-128/256 key into round keys (4 words per round, Nr + 1 rounds). */
export function expandKey(key: Uint8Array): Int32Array {
  const nk = key.length / 4;
  if (nk !== 4 && nk !== 8) throw new Error(`AES key must be 16 or 32 bytes, not ${key.length}`);
  const nr = nk + 6;
  const w = new Int32Array(4 * (nr + 1));
  for (let i = 0; i < nk; i++) {
    w[i] = (key[4 * i] << 24) | (key[4 * i + 1] << 16) | (key[4 * i + 2] << 8) | key[4 * i + 3];
  }
  let rcon = 1;
  const sub = (x: number) =>
    (SBOX[x >>> 24] << 24) | (SBOX[(x >>> 16) & 255] << 16) | (SBOX[(x >>> 8) & 255] << 8) |
    SBOX[x & 255];
  for (let i = nk; i < w.length; i++) {
    let t = w[i - 1];
    if (i % nk === 0) {
      t = sub((t << 8) | (t >>> 24)) ^ (rcon << 24);
      rcon = ((rcon << 1) ^ (rcon & 0x80 ? 0x1b : 0)) & 0xff;
    } else if (nk === 8 && i % nk === 4) {
      t = sub(t);
    }
    w[i] = w[i - nk] ^ t;
  }
  return w;
}

/** Output of `aesBlock`: the four big-endian words of the cipher block. */
const BLK = new Int32Array(4);

/**
 * Encrypts one 16-byte block given as four big-endian words; the result is
 * in `BLK` (also returned), valid until the next call.
 */
export function aesBlock(
  rk: Int32Array,
  a0: number,
  a1: number,
  a2: number,
  a3: number,
): Int32Array {
  let s0 = a0 ^ rk[0], s1 = a1 ^ rk[1], s2 = a2 ^ rk[2], s3 = a3 ^ rk[3];
  const last = rk.length - 4;
  let k = 4;
  for (; k < last; k += 4) {
    const t0 = T0[s0 >>> 24] ^ rotr8(T0[(s1 >>> 16) & 255]) ^ rotr16(T0[(s2 >>> 8) & 255]) ^
      rotr24(T0[s3 & 255]) ^ rk[k];
    const t1 = T0[s1 >>> 24] ^ rotr8(T0[(s2 >>> 16) & 255]) ^ rotr16(T0[(s3 >>> 8) & 255]) ^
      rotr24(T0[s0 & 255]) ^ rk[k + 1];
    const t2 = T0[s2 >>> 24] ^ rotr8(T0[(s3 >>> 16) & 255]) ^ rotr16(T0[(s0 >>> 8) & 255]) ^
      rotr24(T0[s1 & 255]) ^ rk[k + 2];
    s3 = T0[s3 >>> 24] ^ rotr8(T0[(s0 >>> 16) & 255]) ^ rotr16(T0[(s1 >>> 8) & 255]) ^
      rotr24(T0[s2 & 255]) ^ rk[k + 3];
    s0 = t0;
    s1 = t1;
    s2 = t2;
  }
  BLK[0] = ((SBOX[s0 >>> 24] << 24) | (SBOX[(s1 >>> 16) & 255] << 16) |
    (SBOX[(s2 >>> 8) & 255] << 8) | SBOX[s3 & 255]) ^ rk[k];
  BLK[1] = ((SBOX[s1 >>> 24] << 24) | (SBOX[(s2 >>> 16) & 255] << 16) |
    (SBOX[(s3 >>> 8) & 255] << 8) | SBOX[s0 & 255]) ^ rk[k + 1];
  BLK[2] = ((SBOX[s2 >>> 24] << 24) | (SBOX[(s3 >>> 16) & 255] << 16) |
    (SBOX[(s0 >>> 8) & 255] << 8) | SBOX[s1 & 255]) ^ rk[k + 2];
  BLK[3] = ((SBOX[s3 >>> 24] << 24) | (SBOX[(s0 >>> 16) & 255] << 16) |
    (SBOX[(s1 >>> 8) & 255] << 8) | SBOX[s2 & 255]) ^ rk[k + 3];
  return BLK;
}

// ---------------------------------------------------------------- GHASH

/**
 * The 8-bit multiplication table for hash key H: entry v (words 4v..4v+3)
 * is v·H, where bit 0x80 of v is the coefficient of x^0 (GCM bit order).
 */
export function ghashTable(h0: number, h1: number, h2: number, h3: number): Int32Array {
  const m = new Int32Array(256 * 4);
  m[512] = h0, m[513] = h1, m[514] = h2, m[515] = h3;
  for (let i = 64; i >= 1; i >>= 1) {
    // m[i] = m[2i]·x: a right shift by one bit, reduced by x^128 = 1 + x + x^2 + x^7.
    const j = 8 * i; // (2i)·4
    const a0 = m[j], a1 = m[j + 1], a2 = m[j + 2], a3 = m[j + 3];
    const red = (a3 & 1) ? 0xe1000000 : 0;
    m[4 * i] = (a0 >>> 1) ^ red;
    m[4 * i + 1] = (a1 >>> 1) | (a0 << 31);
    m[4 * i + 2] = (a2 >>> 1) | (a1 << 31);
    m[4 * i + 3] = (a3 >>> 1) | (a2 << 31);
  }
  for (let i = 2; i < 256; i <<= 1) {
    for (let j = 1; j < i; j++) {
      for (let w = 0; w < 4; w++) m[4 * (i + j) + w] = m[4 * i + w] ^ m[4 * j + w];
    }
  }
  return m;
}

/** The running GHASH state (four big-endian words). */
const GH = new Int32Array(4);

/** GH = (GH ^ block)·H, with `m` the table from `ghashTable`. */
function ghashBlock(m: Int32Array, c0: number, c1: number, c2: number, c3: number): void {
  const y0 = GH[0] ^ c0, y1 = GH[1] ^ c1, y2 = GH[2] ^ c2, y3 = GH[3] ^ c3;
  // Horner over the bytes, highest power (last byte) first.
  let i = (y3 & 255) << 2;
  let z0 = m[i], z1 = m[i + 1], z2 = m[i + 2], z3 = m[i + 3];
  let r = 0;
  // deno-fmt-ignore
  {
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y3 >>> 8) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y3 >>> 16) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y3 >>> 24) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];

    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y2 & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y2 >>> 8) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y2 >>> 16) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y2 >>> 24) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];

    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y1 & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y1 >>> 8) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y1 >>> 16) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y1 >>> 24) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];

    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y0 & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y0 >>> 8) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = ((y0 >>> 16) & 255) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
    r = z3 & 255; z3 = (z3 >>> 8) | (z2 << 24); z2 = (z2 >>> 8) | (z1 << 24); z1 = (z1 >>> 8) | (z0 << 24); z0 = (z0 >>> 8) ^ R8[r];
    i = (y0 >>> 24) << 2; z0 ^= m[i]; z1 ^= m[i + 1]; z2 ^= m[i + 2]; z3 ^= m[i + 3];
  }
  GH[0] = z0, GH[1] = z1, GH[2] = z2, GH[3] = z3;
}

// ---------------------------------------------------------------- packets

/** Per-key state, built once per ssh2 cipher object (so once per key exchange). */
export interface GcmKey {
  rk: Int32Array;
  /** GHASH table for H = AES_K(0^128). */
  m: Int32Array;
}

export function gcmKey(key: Uint8Array): GcmKey {
  const rk = expandKey(key);
  aesBlock(rk, 0, 0, 0, 0);
  return { rk, m: ghashTable(BLK[0], BLK[1], BLK[2], BLK[3]) };
}

const be32 = (b: Uint8Array, o: number) =>
  (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];

function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/**
 * Packets sealed and opened by this module since load, and how many of them
 * in JavaScript (tests check both paths are in use).
 */
export const packetCipherStats = { sealed: 0, opened: 0, sealedJs: 0, openedJs: 0 };

/**
 * Packets whose encrypted part (padding length, payload, padding) is at most
 * this many bytes are sealed/opened in JavaScript; larger ones by
 * `node:crypto`'s AES-GCM (measured crossover, bench/ssh_packets.ts).
 */
export const JS_MAX_BYTES = 1024;

/**
 * AES-GCM over `n` bytes (a multiple of 16) of `src` from `si` into `dst`
 * from `di`, with the 4-byte packet length `len` as additional data; GHASH
 * runs over the cipher text (`dst` when encrypting, `src` when decrypting).
 * Leaves the tag (E(J0) ^ S) in `BLK`.
 */
function gcmJs(
  k: GcmKey,
  iv: Uint8Array,
  len: number,
  src: Uint8Array,
  si: number,
  dst: Uint8Array,
  di: number,
  n: number,
  encrypting: boolean,
): void {
  const rk = k.rk, m = k.m;
  const iv0 = be32(iv, 0), iv1 = be32(iv, 4), iv2 = be32(iv, 8);
  GH.fill(0);
  ghashBlock(m, len, 0, 0, 0);
  let ctr = 2;
  for (let off = 0; off < n; off += 16, ctr++) {
    aesBlock(rk, iv0, iv1, iv2, ctr);
    const p0 = be32(src, si + off), p1 = be32(src, si + off + 4);
    const p2 = be32(src, si + off + 8), p3 = be32(src, si + off + 12);
    const c0 = p0 ^ BLK[0], c1 = p1 ^ BLK[1], c2 = p2 ^ BLK[2], c3 = p3 ^ BLK[3];
    put32(dst, di + off, c0);
    put32(dst, di + off + 4, c1);
    put32(dst, di + off + 8, c2);
    put32(dst, di + off + 12, c3);
    if (encrypting) ghashBlock(m, c0, c1, c2, c3);
    else ghashBlock(m, p0, p1, p2, p3);
  }
  // Lengths block: 32 bits of additional data, 8n bits of cipher text.
  ghashBlock(m, 0, 32, 0, n * 8);
  aesBlock(rk, iv0, iv1, iv2, 1);
  BLK[0] ^= GH[0], BLK[1] ^= GH[1], BLK[2] ^= GH[2], BLK[3] ^= GH[3];
}

/** Increments the 64-bit invocation counter (bytes 4..11) of an AES-GCM IV, as ssh2 does. */
function ivIncrement(iv: Uint8Array): void {
  for (let i = 11; i >= 4; i--) {
    iv[i] = (iv[i] + 1) & 255;
    if (iv[i] !== 0) return;
  }
}

/**
 * Seals one SSH packet (`packet`: length, padding length, payload, padding,
 * as ssh2's `allocPacket` lays it out) under `key`/`iv` into a new buffer of
 * `packet.length + 16` bytes: length, cipher text, tag. Does not touch `iv`.
 */
export function sealPacket(
  k: GcmKey,
  sslName: string,
  key: Uint8Array,
  iv: Uint8Array,
  packet: Uint8Array,
): Buffer {
  const n = packet.length - 4;
  const out = Buffer.allocUnsafe(packet.length + 16);
  out[0] = packet[0], out[1] = packet[1], out[2] = packet[2], out[3] = packet[3];
  if (n <= JS_MAX_BYTES) {
    packetCipherStats.sealedJs++;
    gcmJs(k, iv, be32(packet, 0), packet, 4, out, 4, n, true);
    const t = packet.length;
    put32(out, t, BLK[0]);
    put32(out, t + 4, BLK[1]);
    put32(out, t + 8, BLK[2]);
    put32(out, t + 12, BLK[3]);
    return out;
  }
  const c = createCipheriv(sslName as "aes-128-gcm", key, iv);
  c.setAutoPadding(false);
  c.setAAD(packet.subarray(0, 4));
  out.set(c.update(packet.subarray(4)), 4);
  c.final();
  out.set(c.getAuthTag(), packet.length);
  return out;
}

/**
 * Opens one packet: `n` cipher-text bytes at `data[p..]` followed by the
 * 16-byte tag, with packet length `len` (= n) as additional data. Returns
 * the plain text (padding length, payload, padding) in a new buffer, or
 * throws `GcmAuthError` before releasing anything.
 */
export function openPacket(
  k: GcmKey,
  sslName: string,
  key: Uint8Array,
  iv: Uint8Array,
  data: Uint8Array,
  p: number,
  n: number,
): Buffer {
  const out = Buffer.allocUnsafe(n);
  const t = p + n;
  if (n <= JS_MAX_BYTES) {
    packetCipherStats.openedJs++;
    gcmJs(k, iv, n, data, p, out, 0, n, false);
    const diff = (BLK[0] ^ be32(data, t)) | (BLK[1] ^ be32(data, t + 4)) |
      (BLK[2] ^ be32(data, t + 8)) | (BLK[3] ^ be32(data, t + 12));
    if (diff !== 0) throw new GcmAuthError();
    return out;
  }
  const d = createDecipheriv(sslName as "aes-128-gcm", key, iv);
  d.setAutoPadding(false);
  const aad = Buffer.allocUnsafe(4);
  put32(aad, 0, n);
  d.setAAD(aad);
  d.setAuthTag(data.subarray(t, t + 16));
  out.set(d.update(data.subarray(p, t)), 0);
  try {
    d.final();
  } catch {
    throw new GcmAuthError();
  }
  return out;
}

// ---------------------------------------------------------------- ssh2 integration

/** ssh2's limit on a packet, length field excluded, plus 20 (its check). */
const MAX_PACKET_SIZE = 35000;

/** The fields of ssh2's `AESGCMCipherNative` this module uses. */
interface Ssh2GcmCipher {
  outSeqno: number;
  _onWrite(b: Buffer): void;
  _encSSLName: string;
  _encKey: Buffer;
  _encIV: Buffer;
  _dead: boolean;
  _vpKey?: GcmKey;
}

/** The fields of ssh2's `AESGCMDecipherNative` this module uses (plus our own `_vp*`). */
interface Ssh2GcmDecipher {
  inSeqno: number;
  _onPayload(payload: Buffer): unknown;
  _decipherSSLName: string;
  _decipherKey: Buffer;
  _decipherIV: Buffer;
  _vpKey?: GcmKey;
  /** Bytes of the current packet gathered so far (length field included). */
  _vpBuf?: Buffer;
  _vpHave?: number;
  /** Encrypted length of the current packet, once its 4 length bytes are in. */
  _vpLen?: number;
  /** Packets opening asynchronously, and those behind them (open_queue.ts). */
  _vpQ?: OpenQueue;
}

function encrypt(this: Ssh2GcmCipher, packet: Buffer): void {
  if (this._dead) return;
  packetCipherStats.sealed++;
  const k = this._vpKey ??= gcmKey(this._encKey);
  const out = sealPacket(k, this._encSSLName, this._encKey, this._encIV, packet);
  this._onWrite(out);
  ivIncrement(this._encIV);
  this.outSeqno = (this.outSeqno + 1) >>> 0;
}

/**
 * Random bytes for packet padding, filled in bulk and each handed out once.
 * ssh2's `allocPacket` calls `randomFillSync` for the 4 to 19 padding bytes
 * of every packet; one call per ~300 packets draws from the same generator.
 */
const PAD_POOL = Buffer.allocUnsafe(4096);
let padAt = PAD_POOL.length;

/**
 * ssh2's AES-GCM `allocPacket` (length, padding length, room for the
 * payload, random padding to a multiple of 16 bytes, length field excluded),
 * with the padding from `PAD_POOL`.
 */
function allocPacket(payloadLen: number): Buffer {
  let pktLen = 4 + 1 + payloadLen;
  let padLen = 16 - ((pktLen - 4) & 15);
  if (padLen < 4) padLen += 16;
  pktLen += padLen;
  const packet = Buffer.allocUnsafe(pktLen);
  put32(packet, 0, pktLen - 4);
  packet[4] = padLen;
  if (padAt + padLen > PAD_POOL.length) {
    randomFillSync(PAD_POOL);
    padAt = 0;
  }
  const o = 5 + payloadLen;
  for (let i = 0; i < padLen; i++) packet[o + i] = PAD_POOL[padAt + i];
  padAt += padLen;
  return packet;
}

function lengthOk(len: number): boolean {
  return len + 20 <= MAX_PACKET_SIZE && len >= 16 && (len & 15) === 0;
}

/**
 * ssh2's decipher contract: consume `data[p..dataLen)`, call `_onPayload`
 * per packet; if it returns something other than undefined, stop and return
 * the position after that packet (false) or its value. Large packets read
 * from a socket that says so open asynchronously (open_queue.ts), and the
 * packets behind them wait their turn.
 */
function decrypt(this: Ssh2GcmDecipher, data: Buffer, p: number, dataLen: number): unknown {
  if (this._vpQ?.stopped) return this._vpQ.hold(data, p, dataLen);
  while (p < dataLen) {
    let ret: unknown;
    const have = this._vpHave ?? 0;
    if (have === 0 && dataLen - p >= 4) {
      // Fast path: the length is here; open in place if the whole packet is.
      const len = be32(data, p);
      if (!lengthOk(len)) return badLength(this);
      if (dataLen - p >= len + 20) {
        ret = take(this, data, data, p + 4, len);
        p += len + 20;
      } else {
        this._vpLen = len;
        const buf = this._vpBuf = Buffer.allocUnsafe(len + 20);
        buf.set(data.subarray(p, dataLen), 0);
        this._vpHave = dataLen - p;
        return;
      }
    } else {
      // Slow path: gather the packet across chunks.
      let buf = this._vpBuf;
      let got = have;
      if (!buf) buf = this._vpBuf = Buffer.allocUnsafe(4);
      if (got < 4) {
        const nb = Math.min(4 - got, dataLen - p);
        buf.set(data.subarray(p, p + nb), got);
        got += nb;
        p += nb;
        if (got < 4) {
          this._vpHave = got;
          return;
        }
        const len = be32(buf, 0);
        if (!lengthOk(len)) return badLength(this);
        this._vpLen = len;
        const full = Buffer.allocUnsafe(len + 20);
        full.set(buf.subarray(0, 4), 0);
        buf = this._vpBuf = full;
      }
      const need = buf.length - got;
      const nb = Math.min(need, dataLen - p);
      buf.set(data.subarray(p, p + nb), got);
      got += nb;
      p += nb;
      if (got < buf.length) {
        this._vpHave = got;
        return;
      }
      this._vpBuf = undefined;
      this._vpHave = 0;
      ret = take(this, data, buf, 4, this._vpLen!);
    }
    if (ret !== undefined) return ret === false ? p : ret;
    if (this._vpQ?.stopped) return this._vpQ.hold(data, p, dataLen);
  }
}

/** A bad length: thrown at once, or queued behind the packets still opening. */
function badLength(d: Ssh2GcmDecipher): void {
  const err = new Error("Bad packet length");
  if (!d._vpQ?.active) throw err;
  d._vpQ.push(null, err);
}

/**
 * One whole packet: `len` encrypted bytes at `buf[off..]`, then the tag,
 * completed by the chunk `data`. Opened and delivered now (the return value
 * is `_onPayload`'s), or queued (undefined) when it is large or packets
 * before it are still opening.
 */
function take(d: Ssh2GcmDecipher, data: Buffer, buf: Buffer, off: number, len: number): unknown {
  let q = d._vpQ;
  if (len >= ASYNC_OPEN_MIN_BYTES) {
    const source = q ? null : sourceOf(data);
    if (source) {
      q = d._vpQ = new OpenQueue(source, d._decipherKey, (payload) => deliver(d, payload));
    }
    if (q) {
      q.openAsync(buf.subarray(off, off + len + 16) as Uint8Array<ArrayBuffer>, d._decipherIV, len);
      ivIncrement(d._decipherIV);
      return;
    }
  }
  if (q?.active) {
    let plain: Buffer | null = null;
    let err: unknown;
    try {
      plain = open(d, buf, off, len);
    } catch (e) {
      err = e;
    }
    ivIncrement(d._decipherIV);
    q.push(plain, err);
    return;
  }
  const plain = open(d, buf, off, len);
  ivIncrement(d._decipherIV);
  return deliver(d, payloadOf(plain));
}

function deliver(d: Ssh2GcmDecipher, payload: Buffer): unknown {
  packetCipherStats.opened++;
  d.inSeqno = (d.inSeqno + 1) >>> 0;
  return d._onPayload(payload);
}

function open(d: Ssh2GcmDecipher, data: Buffer, p: number, len: number): Buffer {
  const k = d._vpKey ??= gcmKey(d._decipherKey);
  return openPacket(k, d._decipherSSLName, d._decipherKey, d._decipherIV, data, p, len);
}

/** ssh2 retires a decipher (after NEWKEYS, or as the connection closes). */
function freeDecipher(this: Ssh2GcmDecipher): void {
  this._vpQ?.free();
}

interface Ssh2CryptoModule {
  createCipher(config: unknown): object;
  createDecipher(config: unknown): object;
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number; sslName: string }>;
}

/** ssh2's own crypto module (the instance its connections use). */
export function ssh2Crypto(): Ssh2CryptoModule {
  return ((ssh2CryptoModule as { default?: Ssh2CryptoModule }).default ??
    ssh2CryptoModule) as Ssh2CryptoModule;
}

/** ssh2's AES-GCM cipher and decipher classes, found through its factories. */
function ssh2GcmClasses(): { cipher: GcmClass; decipher: GcmClass } {
  const c = ssh2Crypto();
  const info = c.CIPHER_INFO["aes128-gcm@openssh.com"];
  const key = Buffer.alloc(info.keyLen), iv = Buffer.alloc(info.ivLen);
  const enc = c.createCipher({
    outbound: { onWrite: () => {}, cipherInfo: info, cipherKey: key, cipherIV: iv, seqno: 0 },
  });
  const dec = c.createDecipher({
    inbound: {
      onPayload: () => {},
      decipherInfo: info,
      decipherKey: key,
      decipherIV: iv,
      seqno: 0,
    },
  });
  return { cipher: enc.constructor as GcmClass, decipher: dec.constructor as GcmClass };
}

interface GcmClass {
  name: string;
  prototype: Record<string, unknown>;
}

const CLASSES = ssh2GcmClasses();

/** The methods the replacement swaps. */
export interface GcmMethods {
  allocPacket: (this: object, payloadLen: number) => Buffer;
  encrypt: (this: object, packet: Buffer) => void;
  decrypt: (this: object, data: Buffer, p: number, dataLen: number) => unknown;
  free: (this: object) => void;
}

/** ssh2's own `allocPacket`/`encrypt`/`decrypt`, as they were when this module loaded. */
export const SSH2_GCM: GcmMethods = {
  allocPacket: CLASSES.cipher.prototype.allocPacket as GcmMethods["allocPacket"],
  encrypt: CLASSES.cipher.prototype.encrypt as GcmMethods["encrypt"],
  decrypt: CLASSES.decipher.prototype.decrypt as GcmMethods["decrypt"],
  free: CLASSES.decipher.prototype.free as GcmMethods["free"],
};

/** This module's `allocPacket`/`encrypt`/`decrypt` (tests and the benchmark call both on one class). */
export const OWN_GCM: GcmMethods = {
  allocPacket: allocPacket as GcmMethods["allocPacket"],
  encrypt: encrypt as GcmMethods["encrypt"],
  decrypt: decrypt as GcmMethods["decrypt"],
  free: freeDecipher as GcmMethods["free"],
};

/**
 * True when ssh2 uses its JavaScript AES-GCM classes (always under Deno,
 * whose ssh2 cannot load its native binding); only those are replaced.
 */
export const replaceable = CLASSES.cipher.name === "AESGCMCipherNative" &&
  CLASSES.decipher.name === "AESGCMDecipherNative";

/**
 * Replaces `allocPacket`/`encrypt`/`decrypt` on ssh2's AES-GCM classes with the ones here,
 * for every connection in this process (idempotent). Returns false, and
 * changes nothing, if ssh2 runs other classes (its native binding).
 */
export function installPacketCipher(): boolean {
  if (!replaceable) return false;
  CLASSES.cipher.prototype.allocPacket = OWN_GCM.allocPacket;
  CLASSES.cipher.prototype.encrypt = OWN_GCM.encrypt;
  CLASSES.decipher.prototype.decrypt = OWN_GCM.decrypt;
  CLASSES.decipher.prototype.free = OWN_GCM.free;
  return true;
}

/** Puts ssh2's own `allocPacket`/`encrypt`/`decrypt` back. */
export function uninstallPacketCipher(): void {
  CLASSES.cipher.prototype.allocPacket = SSH2_GCM.allocPacket;
  CLASSES.cipher.prototype.encrypt = SSH2_GCM.encrypt;
  CLASSES.decipher.prototype.decrypt = SSH2_GCM.decrypt;
  CLASSES.decipher.prototype.free = SSH2_GCM.free;
}

/** True while the replacement is installed. */
export function packetCipherInstalled(): boolean {
  return CLASSES.cipher.prototype.encrypt === OWN_GCM.encrypt;
}
