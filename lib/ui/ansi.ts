/**
 * Terminal colours and display-width arithmetic. The live table must never
 * wrap (a wrapped line scrolls the alternate screen and the in-place redraw
 * falls apart), so every width here is measured in terminal columns, not
 * UTF-16 code units: 🐇 takes two columns, `…` one, an escape sequence none.
 */

/** The SGR styles the UI uses. Each closes with its own reset so styles nest. */
export type Style =
  | "bold"
  | "dim"
  | "inverse"
  | "red"
  | "green"
  | "yellow"
  | "magenta"
  | "cyan"
  | "redBold";

// Specific closing codes (39 = default colour, 22 = normal intensity, 27 =
// no inverse) instead of a blanket `\x1b[0m`, so a coloured state cell inside
// an inverse (selected) row does not switch the row's highlight off.
const STYLES: Record<Style, [string, string]> = {
  bold: ["\x1b[1m", "\x1b[22m"],
  dim: ["\x1b[2m", "\x1b[22m"],
  inverse: ["\x1b[7m", "\x1b[27m"],
  red: ["\x1b[31m", "\x1b[39m"],
  green: ["\x1b[32m", "\x1b[39m"],
  yellow: ["\x1b[33m", "\x1b[39m"],
  magenta: ["\x1b[35m", "\x1b[39m"],
  cyan: ["\x1b[36m", "\x1b[39m"],
  redBold: ["\x1b[1;31m", "\x1b[22;39m"],
};

/** Wraps `text` in `style` when `color` is on; returns it unchanged otherwise. */
export function paint(text: string, style: Style, color: boolean): string {
  if (!color || text === "") return text;
  const [open, close] = STYLES[style];
  return open + text + close;
}

/** Control sequences (CSI … letter) and OSC strings; both take no columns. */
// deno-lint-ignore no-control-regex
const ESCAPE_RE = /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;

// Sticky twin of ESCAPE_RE: matches only at `lastIndex`, for the truncation walk.
const ESCAPE_AT = new RegExp(ESCAPE_RE.source, "y");

/** Removes ANSI escape sequences. */
export function stripAnsi(text: string): string {
  return text.replace(ESCAPE_RE, "");
}

/** Columns one code point occupies: 0 for combining marks and joiners, 2 for wide/emoji. */
export function codePointWidth(cp: number): number {
  if (cp === 0 || cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) return 0;
  if (
    (cp >= 0x300 && cp <= 0x36f) || // combining diacritics
    (cp >= 0x200b && cp <= 0x200f) || // zero-width space, joiners, marks
    (cp >= 0xfe00 && cp <= 0xfe0f) || // variation selectors
    (cp >= 0x1f3fb && cp <= 0x1f3ff) // skin-tone modifiers
  ) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1f64f) || // pictographs incl. 🐇 🐢, emoticons
    (cp >= 0x1f680 && cp <= 0x1f6ff) ||
    (cp >= 0x1f900 && cp <= 0x1f9ff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  ) return 2;
  return 1;
}

/** Display width of `text` in terminal columns, ignoring escape sequences. */
export function displayWidth(text: string): number {
  let w = 0;
  for (const ch of stripAnsi(text)) w += codePointWidth(ch.codePointAt(0)!);
  return w;
}

/**
 * Cuts `text` to at most `width` columns, ending in `…` when anything was
 * dropped. Escape sequences are kept (they take no room) and, if any were
 * seen, a full reset is appended so a cut never leaks a colour into the next
 * line.
 */
export function truncate(text: string, width: number): string {
  if (width <= 0) return "";
  if (displayWidth(text) <= width) return text;
  let out = "";
  let used = 0;
  let sawEscape = false;
  let i = 0;
  while (i < text.length) {
    ESCAPE_AT.lastIndex = i;
    const m = ESCAPE_AT.exec(text);
    if (m) {
      out += m[0];
      sawEscape = true;
      i += m[0].length;
      continue;
    }
    const ch = String.fromCodePoint(text.codePointAt(i)!);
    const w = codePointWidth(ch.codePointAt(0)!);
    // Leave one column for the ellipsis.
    if (used + w > width - 1) break;
    out += ch;
    used += w;
    i += ch.length;
  }
  return out + "…" + (sawEscape ? "\x1b[0m" : "");
}

/** Pads (or truncates) to exactly `width` columns; `right` aligns numbers. */
export function fit(text: string, width: number, align: "left" | "right" = "left"): string {
  const cut = truncate(text, width);
  const pad = " ".repeat(Math.max(0, width - displayWidth(cut)));
  return align === "right" ? pad + cut : cut + pad;
}

/** Escape sequences the live screen uses. */
export const TERM = {
  altScreenOn: "\x1b[?1049h",
  altScreenOff: "\x1b[?1049l",
  cursorHide: "\x1b[?25l",
  cursorShow: "\x1b[?25h",
  home: "\x1b[H",
  clearLine: "\x1b[K",
  clearBelow: "\x1b[J",
  reset: "\x1b[0m",
} as const;
