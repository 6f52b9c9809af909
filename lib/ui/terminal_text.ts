/**
 * Makes strings that came from outside (an instance, an engine, the vast.ai
 * API, a proxy's status JSON) safe to print on a terminal.
 *
 * A model id, GPU name or label is chosen by whoever runs the instance. Sent
 * raw, `\x1b]0;pwned\x07` retitles the user's window, `\x1b[2J` wipes the
 * live table, a bare `\r` or a bidi override makes a line read as something
 * else. Renderers therefore pass every such string through `safeText` at the
 * sink, just before it is drawn, while the data itself (and `--json` output,
 * where JSON escaping does the job) keeps the exact value.
 */

// Everything a terminal may act on rather than print:
// - C0 controls (U+0000–001F), DEL (U+007F) and C1 controls (U+0080–009F),
//   ESC among them; U+009B alone is a CSI on terminals that honour C1;
// - bidi embeddings, overrides and isolates (U+202A–202E, U+2066–2069) and
//   the invisible direction marks (U+200E, U+200F, U+061C), which reorder
//   what is shown without being seen ("Trojan Source", CVE-2021-42574).
// deno-lint-ignore no-control-regex
const UNSAFE_RE = /[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

// Escape sequences, removed whole so no payload (`]0;pwned`) is left behind:
// - CSI: ESC [ or U+009B, parameter bytes, intermediate bytes, a final byte;
// - OSC, DCS, SOS, PM, APC (ESC ] P X ^ _ or their C1 forms): a string ended
//   by BEL, ST (ESC \ or U+009C) or, if never ended, the end of the text —
//   a terminal would swallow the rest too;
// - any other ESC sequence: intermediates, then one final byte (ESC c,
//   ESC ( B, ESC # 8, …).
// A lone or truncated ESC is left for the control pass below.
const SEQUENCE_RE = new RegExp(
  [
    "(?:\\x1b\\[|\\x9b)[0-?]*[ -/]*[@-~]?",
    "(?:\\x1b[\\]PX^_]|[\\x90\\x98\\x9d\\x9e\\x9f])[^]*?(?:\\x07|\\x1b\\\\|\\x9c|$)",
    "\\x1b[ -/]*[0-~]",
  ].join("|"),
  "g",
);

// Controls other than tabs and line breaks, removed after the sequences.
// deno-lint-ignore no-control-regex
const DROP_RE = /[\x00-\x08\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

// Tabs and line breaks become one space rather than nothing, so
// "model\nname" reads as two words instead of "modelname".
const BREAKS_RE = /[\t\n\v\f\r]+/g;

/**
 * `text` without control characters, escape sequences or bidi controls;
 * tabs and line breaks become a single space. Printable text, CJK and emoji
 * (joiners and variation selectors included) pass through unchanged.
 */
export function safeText(text: string): string {
  // The common case costs one scan and no allocation.
  if (!UNSAFE_RE.test(text)) return text;
  return text.replace(SEQUENCE_RE, "").replace(DROP_RE, "").replace(BREAKS_RE, " ");
}

/**
 * A copy of `value` with `safeText` applied to every string inside it
 * (object values and array items, at any depth); numbers, booleans and null
 * are kept. For handing a whole snapshot to a renderer, so a field added
 * later is covered without anyone remembering to.
 */
export function safeDeep<T>(value: T): T {
  if (typeof value === "string") return safeText(value) as T;
  if (Array.isArray(value)) return value.map((v) => safeDeep(v)) as T;
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = safeDeep(v);
    return out as T;
  }
  return value;
}

// Characters JSON.stringify leaves raw that a terminal may still act on.
const JSON_UNSAFE_RE = /[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `JSON.stringify(value, null, indent)`, with the characters JSON leaves raw
 * (DEL, C1 controls, bidi controls) written as `\uXXXX` escapes. The parsed
 * value is exactly the same; only the bytes on the terminal differ. Such
 * characters can only occur inside JSON strings, so replacing them anywhere
 * in the text is safe.
 */
export function terminalJson(value: unknown, indent?: number): string {
  // JSON.stringify gives undefined for undefined (and functions); print nothing.
  return (JSON.stringify(value, null, indent) ?? "").replace(
    JSON_UNSAFE_RE,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}
