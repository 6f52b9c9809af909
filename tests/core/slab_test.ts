import assert from "node:assert/strict";
import fc from "fast-check";
import { allocBytes, SLAB_MAX } from "../../lib/core/slab.ts";
import { latin1ToBytes, latin1WithTail } from "../../lib/http1/latin1.ts";

Deno.test("allocBytes: every view is fresh, zeroed and the caller's alone, across slabs", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: SLAB_MAX + 64 }), { maxLength: 200 }),
      (sizes) => {
        const views = sizes.map((n) => allocBytes(n));
        views.forEach((v, i) => {
          assert.equal(v.byteLength, sizes[i]);
          assert.ok(v.every((b) => b === 0), `view ${i} of ${sizes[i]} bytes is not zeroed`);
          v.fill((i % 255) + 1);
        });
        // Had two views shared a byte, the later fill would show in the earlier one.
        views.forEach((v, i) =>
          assert.ok(v.every((b) => b === (i % 255) + 1), `view ${i} overlaps`)
        );
      },
    ),
    { numRuns: 100 },
  );
});

Deno.test("allocBytes: sizes over SLAB_MAX get a buffer of their own", () => {
  const big = allocBytes(SLAB_MAX + 1);
  assert.equal(big.byteOffset, 0);
  assert.equal(big.buffer.byteLength, SLAB_MAX + 1);
  const small = allocBytes(100);
  assert.ok(small.buffer.byteLength > 100, "small sizes come from a shared slab");
});

/** The byte string as bytes, one per code unit: the reference the encoders must match. */
function reference(s: string, tail: Uint8Array | null = null): Uint8Array {
  const out = new Uint8Array(s.length + (tail?.length ?? 0));
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  if (tail) out.set(tail, s.length);
  return out;
}

Deno.test("latin1ToBytes / latin1WithTail on slab views match byte for byte, many in a row", () => {
  const text = fc.string({
    unit: fc.integer({ min: 0, max: 0xff }).map((c) => String.fromCharCode(c)),
    maxLength: 3000,
  });
  fc.assert(
    fc.property(
      fc.array(fc.tuple(text, fc.option(fc.uint8Array({ maxLength: 1500 }))), { maxLength: 40 }),
      (cases) => {
        // All made first, checked after: a later one written over an earlier one would show.
        const made = cases.map(([s, tail]) => [latin1ToBytes(s), latin1WithTail(s, tail)] as const);
        cases.forEach(([s, tail], i) => {
          assert.deepEqual(made[i][0], reference(s));
          assert.deepEqual(made[i][1], reference(s, tail));
        });
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("latin1ToBytes still refuses a code unit above 0xff", () => {
  assert.throws(() => latin1ToBytes("caf\u0100"), RangeError);
  assert.throws(() => latin1WithTail("\u2028", new Uint8Array(3)), RangeError);
});

Deno.test("allocBytes: a caller that detaches its view's slab breaks nobody after it", () => {
  const mine = allocBytes(64);
  const neighbour = allocBytes(64);
  neighbour.fill(7);
  // What a transfer (postMessage, ArrayBuffer.transfer) would do to the shared slab.
  (mine.buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer();
  const next = allocBytes(100);
  assert.equal(next.byteLength, 100);
  next.fill(9);
  assert.ok(next.every((b) => b === 9));
  assert.deepEqual(latin1ToBytes("GET / HTTP/1.1\r\n"), reference("GET / HTTP/1.1\r\n"));
});
