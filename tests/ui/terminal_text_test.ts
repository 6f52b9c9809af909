import assert from "node:assert/strict";
import fc from "fast-check";
import { safeDeep, safeText, terminalJson } from "../../lib/ui/terminal_text.ts";

// Code points a terminal may act on: C0, DEL, C1, bidi controls and marks.
// deno-lint-ignore no-control-regex
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

/** Any code point, weighted towards the ones a terminal acts on and sequence bytes. */
const hostileChar = fc.oneof(
  fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  fc.constantFrom(
    "\x1b",
    "\x07",
    "\x9b",
    "\x9c",
    "\x9d",
    "\x90",
    "[",
    "]",
    "\\",
    ";",
    "0",
    "P",
    "\r",
    "\n",
    "\u202e",
    "\u2066",
  ),
);
const hostileString = fc.array(hostileChar, { maxLength: 60 }).map((a) => a.join(""));

/** Printable text: any code point that is not a control or bidi control. */
const printable = fc.string({ unit: "binary", maxLength: 60 }).map((s) =>
  [...s].filter((ch) => !UNSAFE.test(ch)).join("")
);

/** An escape sequence of the kinds terminals honour. */
const sequence = fc.oneof(
  // CSI: parameters, intermediates, final byte (e.g. \x1b[2J, \x1b[38;5;1m, \x9b31m).
  fc.tuple(
    fc.constantFrom("\x1b[", "\x9b"),
    fc.string({ unit: fc.constantFrom(..."0123456789;:<=>?"), maxLength: 8 }),
    fc.string({ unit: fc.constantFrom(..." !\"#$%&'()*+,-./"), maxLength: 2 }),
    fc.constantFrom(..."@ABCDHJKmhlrsu~"),
  ).map((p) => p.join("")),
  // OSC / DCS / APC … strings, ended by BEL, ESC \ or C1 ST.
  fc.tuple(
    fc.constantFrom("\x1b]", "\x1bP", "\x1b_", "\x1b^", "\x1bX", "\x9d", "\x90"),
    printable,
    fc.constantFrom("\x07", "\x1b\\", "\x9c"),
  ).map((p) => p.join("")),
  // Two-byte and charset sequences.
  fc.constantFrom("\x1bc", "\x1b7", "\x1b8", "\x1b(B", "\x1b#8", "\x1b=", "\x1bM"),
);

Deno.test("safeText() output never holds a control, DEL, C1, ESC or bidi control", () => {
  fc.assert(
    fc.property(hostileString, (s) => {
      const out = safeText(s);
      assert.ok(!UNSAFE.test(out), JSON.stringify(out));
      // Nothing left to strip: a second pass changes nothing.
      assert.equal(safeText(out), out);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("safeText() returns printable text unchanged (CJK, emoji, joiners)", () => {
  fc.assert(fc.property(printable, (s) => assert.equal(safeText(s), s)), { numRuns: 1000 });
  for (
    const s of [
      "Qwen/Qwen3-8B",
      "日本語モデル",
      "👨‍👩‍👧 ❤️ 🐇",
      "gemma-3-27b-it-Q4_K_M",
      "é e\u0301",
      "",
    ]
  ) {
    assert.equal(safeText(s), s);
  }
});

Deno.test("safeText() removes whole escape sequences between printable text", () => {
  fc.assert(
    fc.property(printable, sequence, printable, (a, seq, b) => {
      // A printable `b` may begin with bytes that would extend the sequence
      // (a CSI with no final byte yet); what matters is that nothing of the
      // sequence survives when it is complete.
      assert.equal(safeText(a + seq + " " + b), a + " " + b);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("safeText() strips the sequences of the issue and keeps the words", () => {
  assert.equal(safeText("Qwen\x1b]0;pwned\x07/Qwen3\x1b[2J-8B"), "Qwen/Qwen3-8B");
  assert.equal(safeText("a\x1b]0;t\x1b\\b"), "ab");
  assert.equal(safeText("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"), "alink");
  assert.equal(safeText("x\x9b31my"), "xy");
  assert.equal(safeText("\x1bPq#0;2;0;0;0\x1b\\ok"), "ok");
  assert.equal(safeText("reset\x1bc!"), "reset!");
  // Unterminated: a terminal would swallow the rest, so it goes too.
  assert.equal(safeText("title\x1b]0;never ends"), "title");
  assert.equal(safeText("lone\x1b"), "lone");
  // Carriage returns and newlines cannot overwrite or split a row.
  assert.equal(safeText("good\rEVIL"), "good EVIL");
  assert.equal(safeText("two\r\n\tlines"), "two lines");
  assert.equal(safeText("bell\x07del\x7fnul\x00"), "belldelnul");
  // Trojan Source: the override and isolate characters go, the text stays.
  assert.equal(safeText("user\u202e\u2066nimda\u2069"), "usernimda");
});

Deno.test("safeDeep() cleans every string of a nested value and keeps the rest", () => {
  const input = {
    a: "x\x1b[2J",
    n: 1,
    b: true,
    z: null,
    list: ["\x1b]0;t\x07y", { deep: "\u202eq" }],
  };
  assert.deepEqual(safeDeep(input), {
    a: "x",
    n: 1,
    b: true,
    z: null,
    list: ["y", { deep: "q" }],
  });
  assert.equal(input.a, "x\x1b[2J", "the input is not changed");
});

Deno.test("terminalJson() keeps exact values and leaves no raw control on the terminal", () => {
  fc.assert(
    fc.property(fc.dictionary(hostileString, hostileString, { maxKeys: 4 }), (value) => {
      const text = terminalJson(value, 2);
      // Parses to exactly what plain JSON.stringify would have given.
      assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(value)));
      assert.ok(!UNSAFE.test(text.replaceAll("\n", "")), JSON.stringify(text));
    }),
    { numRuns: 1000 },
  );
  assert.equal(terminalJson({ m: "a\x9bb\u202e" }), '{"m":"a\\u009bb\\u202e"}');
});
