/**
 * Fresh byte buffers for small outgoing bytes (encoded heads and the small
 * bodies that leave with them, a batch of SSE chunks, SSH packets queued in
 * one turn), carved from a shared slab.
 *
 * In Deno every `new Uint8Array(n)` is an ArrayBuffer of its own, with a
 * backing store from the embedder's allocator and its own bookkeeping in
 * each garbage collection: ~1.5 µs for 16 bytes and ~3 µs for 600, against
 * ~0.15 µs for a view of a slab (`deno run bench/alloc.ts`). A request and
 * its answer made two such buffers on the proxy's path, and a streamed
 * answer one more per event.
 *
 * Memory is never handed out twice: the slab only moves forward, and a
 * slab is replaced, never reused, when it is full. So a view stays the
 * caller's for good, exactly as a fresh `Uint8Array` would (what Node's
 * `Buffer` pool does too). The cost is that a view keeps its whole slab
 * alive while it lives, which is why only small sizes come from here and
 * only for bytes that live until they are written: `.buffer` is the
 * slab, so callers must use `byteOffset`/`byteLength`, never the whole
 * `.buffer`. An async function suspended at an `await` keeps every
 * variable it set, so callers that wait after a write (a streaming loop, a
 * request waiting for its answer) drop their reference to the bytes first
 * (tests/core/slab_retention_test.ts). One holder is left: ssh2 keeps the
 * rest of a channel write that did not fit the peer's window, which a
 * small write nearly never meets.
 */

/** Slab size: small, so a view that outlives its neighbours pins little. */
const SLAB_BYTES = 16 * 1024;
/** Largest size served from the slab; larger ones get their own buffer. */
export const SLAB_MAX = 2 * 1024;

let slab = new ArrayBuffer(SLAB_BYTES);
let at = 0;

/** `n` fresh, zeroed bytes (a view of a shared slab when `n` is small). */
export function allocBytes(n: number): Uint8Array<ArrayBuffer> {
  if (n > SLAB_MAX) return new Uint8Array(n);
  // A slab someone detached (transferred a view's `.buffer`) is left
  // behind, so one such caller cannot break every later allocation.
  if (at + n > SLAB_BYTES || slab.detached) {
    slab = new ArrayBuffer(SLAB_BYTES);
    at = 0;
  }
  const view = new Uint8Array(slab, at, n);
  // Word-aligned starts: a neighbour's bytes are never in the same word.
  at += (n + 7) & ~7;
  return view;
}

/** `parts` as one buffer for one write: the part itself when there is one, else joined by `allocBytes`. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.byteLength;
  const out = allocBytes(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** The slab the next small allocation comes from (for memory tests). */
export function currentSlab(): ArrayBuffer {
  return slab;
}
