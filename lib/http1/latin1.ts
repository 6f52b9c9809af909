/**
 * Exact byte ↔ string conversion for HTTP heads. `TextDecoder("latin1")` is
 * windows-1252 (0x80–0x9f become other code points), and `TextEncoder` writes
 * UTF-8, so neither keeps header bytes as they are; these do: one code unit
 * per byte, both ways.
 */

import { allocBytes } from "../core/slab.ts";

// For bytes below 0x80 UTF-8 decoding is the identity, and Deno's UTF-8
// decoder is about three times faster than its "ascii" (windows-1252) one.
const utf8 = new TextDecoder();
const encoder = new TextEncoder();
// deno-lint-ignore no-control-regex -- the ASCII range is the point
const NON_ASCII = /[^\x00-\x7f]/;

/** Bytes → byte string (code unit = byte). */
export function bytesToLatin1(bytes: Uint8Array): string {
  // Fast path: pure ASCII (the usual head) decodes natively.
  let i = 0;
  const n = bytes.length;
  while (i < n && bytes[i] < 0x80) i++;
  if (i === n) return utf8.decode(bytes);
  let out = "";
  for (let at = 0; at < n; at += 4096) {
    out += String.fromCharCode.apply(
      null,
      bytes.subarray(at, Math.min(n, at + 4096)) as unknown as number[],
    );
  }
  return out;
}

/**
 * Byte string → bytes. Throws a `RangeError` on a code unit above 0xff:
 * such a string is not a byte string and cannot go on the wire as is.
 */
export function latin1ToBytes(s: string): Uint8Array {
  // From the slab (core/slab.ts): heads are small, and live until written.
  const out = allocBytes(s.length);
  writeLatin1(s, out, 0);
  return out;
}

/** Writes byte string `s` into `out` at `at`; returns the new offset (same rules as `latin1ToBytes`). */
export function writeLatin1(s: string, out: Uint8Array, at: number): number {
  // An ASCII string's UTF-8 is its bytes: one native copy instead of a JS
  // loop per character (heads are nearly always ASCII).
  if (!NON_ASCII.test(s)) return at + encoder.encodeInto(s, out.subarray(at)).written;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError("header text is not a byte string");
    out[at++] = c;
  }
  return at;
}

/**
 * Byte string `s` followed by `tail`, in one buffer: a head and the body
 * that leaves with it cost one allocation and one copy of the body, not a
 * head buffer and a concatenation. Same rules for `s` as `latin1ToBytes`.
 */
export function latin1WithTail(s: string, tail: Uint8Array | null): Uint8Array {
  if (tail === null || tail.byteLength === 0) return latin1ToBytes(s);
  const out = allocBytes(s.length + tail.byteLength);
  out.set(tail, writeLatin1(s, out, 0));
  return out;
}
