/**
 * parseHead was rewritten to walk the head by index (issue #14, response
 * leg). The version before, kept under `_before/`, is the oracle: on
 * generated heads, hostile bytes included, both give the same head or both
 * throw the same error.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { parseHead } from "../../lib/http1/parse.ts";
import { parseHead as oldParseHead } from "./_before/parse_head.ts";

const RUNS = { numRuns: 2000 };

function outcome(f: (b: Uint8Array) => unknown, b: Uint8Array): unknown {
  try {
    return { ok: f(b) };
  } catch (err) {
    return { err: String(err), sent: (err as { sent?: boolean }).sent };
  }
}

function same(b: Uint8Array): void {
  assert.deepStrictEqual(outcome(parseHead, b), outcome(oldParseHead, b));
}

const latin1 = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);

// Pieces that sit near every branch: separators, case, whitespace, CR, folds, bytes ≥ 0x80.
const piece = fc.oneof(
  fc.constantFrom(
    "HTTP/1.1",
    "HTTP/1.0",
    "HTTP/1.2",
    "HTTP/2.0",
    " ",
    "\t",
    "\r",
    "\n",
    "\r\n",
    ":",
    ": ",
    " :",
    "200",
    "101",
    "100",
    "599",
    "600",
    "099",
    "OK",
    "Content-Length",
    "content-type",
    "Connection",
    "close",
    "keep-alive",
    "Keep-Alive",
    "timeout=5",
    "X-É",
    "\xe9",
    "\xa0",
    "\x00",
    "\x7f",
    "@",
    "(",
  ),
  fc.string({ unit: "binary-ascii", maxLength: 6 }),
  fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)),
);
const soup = fc.array(piece, { maxLength: 40 }).map((p) => latin1(p.join("")));

/** A string of code units 0x00–0xff: what a head's bytes decode to. */
function byteString(maxLength: number) {
  return fc.array(fc.integer({ min: 0, max: 0xff }), { maxLength }).map((a) =>
    String.fromCharCode(...a)
  );
}

const name = fc.oneof(
  fc.constantFrom("date", "Server", "content-length", "CONNECTION", "keep-alive", "x-a", "A_b"),
  fc.string({ unit: "binary-ascii", minLength: 0, maxLength: 8 }),
  byteString(4),
);
const value = fc.oneof(
  fc.constantFrom("", " ", "close", "keep-alive, Close", "timeout=7, max=3", " 12 ", "\xff\xe9"),
  byteString(12),
);
const eol = fc.constantFrom("\r\n", "\n", "\r\r\n");
const line = fc.oneof(
  fc.tuple(name, fc.constantFrom(":", " :", ":\t", "\t:"), value, eol).map((t) => t.join("")),
  fc.tuple(fc.constantFrom(" ", "\t", " \t"), value, eol).map((t) => t.join("")), // obs-fold
  fc.tuple(value, eol).map((t) => t.join("")),
);
const statusLine = fc.oneof(
  fc.tuple(
    fc.constantFrom("HTTP/1.1 ", "HTTP/1.0 ", "HTTP/1.1\t", "HTTP/1.1  ", "http/1.1 "),
    fc.integer({ min: 0, max: 999 }).map((n) => String(n).padStart(3, "0")),
    fc.constantFrom("", " ", "\t", " OK", " O\rK", "\tFine", " \xe9t\xe9", " OK\r"),
  ).map((t) => t.join("")),
  fc.string({ unit: "binary-ascii", maxLength: 16 }),
);
const head = fc.tuple(statusLine, eol, fc.array(line, { maxLength: 12 }), fc.boolean()).map(
  ([s, e, ls, end]) => latin1(s + e + ls.join("") + (end ? "\r\n" : "")),
);

Deno.test("parseHead: same heads and errors as before, on generated heads", () => {
  fc.assert(fc.property(head, same), RUNS);
});

Deno.test("parseHead: same as before on byte soup and random bytes", () => {
  fc.assert(fc.property(soup, same), RUNS);
  fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), same), RUNS);
});

Deno.test("parseHead: same as before at the field limit and on typical heads", () => {
  const fields = (k: number) => latin1(`HTTP/1.1 200 OK\r\n${"a: b\r\n".repeat(k)}\r\n`);
  for (const k of [0, 1, 255, 256, 257]) same(fields(k));
  same(latin1(
    "HTTP/1.1 200 OK\r\ndate: Mon, 30 Nov 2026 21:00:00 GMT\r\nserver: uvicorn\r\n" +
      "content-length: 310\r\ncontent-type: application/json\r\n\r\n",
  ));
  same(latin1("HTTP/1.0 200 OK\nConnection: keep-alive\nKeep-Alive: timeout=5\n\n"));
  same(latin1("HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded \r\n\t\r\nConnection: x,\r\n close\r\n\r\n"));
  same(latin1("HTTP/1.1 204\r\n\r\n"));
});
