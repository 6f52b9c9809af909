/**
 * Terminal colours and display-width arithmetic. The live table must never
 * wrap (a wrapped line scrolls the alternate screen and the in-place redraw
 * falls apart), so every width here is measured in terminal columns, not
 * UTF-16 code units: 🐇 takes two columns, `…` one, an escape sequence none.
 *
 * Column widths come from `string-width` (East Asian Width plus emoji
 * presentation, per grapheme cluster) rather than hand-kept code-point
 * ranges, which got ⚡ ✅ 🫠 (1 instead of 2) and 👩‍💻 (4 instead of 2) wrong.
 */
import stringWidth from "string-width";

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

/** Removes ANSI escape sequences. */
export function stripAnsi(text: string): string {
  return text.replace(ESCAPE_RE, "");
}

/** Display width of `text` in terminal columns, ignoring escape sequences. */
export function displayWidth(text: string): number {
  return stringWidth(stripAnsi(text));
}

const graphemes = new Intl.Segmenter();

/** A piece of terminal text: one escape sequence (no columns) or one grapheme cluster. */
interface Piece {
  text: string;
  width: number;
  escape: boolean;
}

/**
 * `text` as escape sequences and grapheme clusters, in order. Cutting only
 * between clusters keeps 👩‍💻 or 🇩🇪 whole instead of leaving half a sequence.
 */
function* pieces(text: string): Generator<Piece> {
  let last = 0;
  for (const m of text.matchAll(ESCAPE_RE)) {
    yield* clusters(text.slice(last, m.index));
    yield { text: m[0], width: 0, escape: true };
    last = m.index + m[0].length;
  }
  yield* clusters(text.slice(last));
}

function* clusters(text: string): Generator<Piece> {
  for (const { segment } of graphemes.segment(text)) {
    yield { text: segment, width: stringWidth(segment), escape: false };
  }
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
  for (const piece of pieces(text)) {
    if (piece.escape) {
      out += piece.text;
      sawEscape = true;
      continue;
    }
    // Leave one column for the ellipsis.
    if (used + piece.width > width - 1) break;
    out += piece.text;
    used += piece.width;
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
