import assert from "node:assert/strict";
import { displayWidth, fit, truncate } from "../../lib/ui/ansi.ts";

// Characters the hand-kept code-point table measured wrong: ⚡ ✅ 🫠 as one
// column, the ZWJ sequence 👩‍💻 as four. Terminals draw each in two.
const WIDE = ["⚡", "✅", "🫠", "👩‍💻", "🐇", "🐢", "🇩🇪", "👍🏽", "日"];

Deno.test("displayWidth() gives every wide character and emoji sequence two columns", () => {
  for (const ch of WIDE) assert.equal(displayWidth(ch), 2, `${ch} (${[...ch].length} code points)`);
  assert.equal(displayWidth("⚡✅🫠👩‍💻"), 8);
  assert.equal(displayWidth("a👩‍💻b"), 4);
  assert.equal(displayWidth("\x1b[32m✅\x1b[39m ok"), 5);
  assert.equal(displayWidth("e\u0301"), 1); // combining accent
  assert.equal(displayWidth("…×▇░─↑"), 6);
});

Deno.test("truncate() cuts between grapheme clusters, never inside 👩‍💻", () => {
  assert.equal(truncate("👩‍💻👩‍💻👩‍💻", 5), "👩‍💻👩‍💻…");
  assert.equal(truncate("👩‍💻👩‍💻👩‍💻", 4), "👩‍💻…");
  assert.equal(truncate("a⚡✅🫠", 5), "a⚡…");
  assert.equal(truncate("🇩🇪🇩🇪", 3), "🇩🇪…");
  for (let w = 1; w <= 10; w++) {
    const cut = truncate("x⚡✅🫠👩‍💻y", w);
    assert.ok(displayWidth(cut) <= w, `${cut} wider than ${w}`);
  }
  assert.equal(truncate("\x1b[31m⚡⚡⚡\x1b[39m", 4), "\x1b[31m⚡…\x1b[0m");
});

Deno.test("fit() pads wide characters to the same column as ASCII", () => {
  const cells = ["ab", "⚡", "✅x", "🫠", "👩‍💻"].map((t) => fit(t, 4) + "|");
  for (const c of cells) assert.equal(displayWidth(c), 5, JSON.stringify(c));
  assert.equal(fit("👩‍💻", 4), "👩‍💻  ");
  assert.equal(fit("⚡", 4, "right"), "  ⚡");
});
