/**
 * Renders a `StatusSnapshot` as screen lines: the live TUI's whole screen
 * (`renderStatus`) and the one-shot table of `vastproxy status`
 * (`renderPlainTable`); `renderRows` lays out any other rows the same way
 * (`vastproxy list`), so the project has one table renderer. Pure functions
 * of their inputs, so the live loop can redraw from a fresh snapshot on every
 * tick and tests can pin exact output.
 *
 * Width rule: no returned line is wider than `width` terminal columns.
 * Columns are laid out by priority (id and state first, GPU bars last) and
 * the ones that do not fit are left out rather than wrapped; every line
 * still passes through `truncate` as a safety net.
 */
import type { BackendSnapshot, BackendState, StatusSnapshot } from "../proxy/snapshot.ts";
import { displayWidth, fit, paint, type Style, truncate } from "./ansi.ts";
import { formatDuration } from "../cli/units.ts";
import { safeDeep, safeText } from "./terminal_text.ts";

/** Options of `renderStatus`. */
export interface RenderOptions {
  /** Terminal width in columns. */
  width: number;
  /** Terminal height in lines; unlimited when absent. */
  height?: number;
  /** Emit ANSI colours. */
  color: boolean;
  /** Backend id of the selected row. */
  selected?: number;
  /** Formatted log lines, oldest first; the last ones that fit are shown. */
  logLines?: string[];
  /** Current time (epoch ms), for "time in state". */
  now: number;
  /** Show the key help instead of the table. */
  help?: boolean;
  /** A question shown in the footer (e.g. the destroy confirmation). */
  prompt?: string;
  /** Requests per second, computed by the caller from successive snapshots. */
  rps?: number;
}

/** Options of `renderPlainTable`. */
export interface PlainTableOptions {
  /** Emit ANSI colours. */
  color: boolean;
  /** Current time (epoch ms). */
  now: number;
  /** Maximum line width (default 200: a pipe or CI log rarely wraps that early). */
  width?: number;
}

/** Shown in place of rows while the fleet is empty. */
export const EMPTY_FLEET_MESSAGE = "no instances yet — waiting for vast.ai";

/** The text of the `?` overlay, one entry per line. */
export const HELP_LINES: readonly string[] = [
  "Keys",
  "  q, Ctrl-C   quit (in-flight requests may finish)",
  "  ↑ / ↓       select an instance",
  "  x           drain / undrain the selected instance",
  "  r           reconnect its SSH tunnel",
  "  a           abort all requests on it (SGLang /abort_request)",
  "  d           destroy it on vast.ai (asks to confirm with y)",
  "  ?           toggle this help",
  "  Esc         close help / cancel",
  "",
  "🐇 direct SSH to the host   🐢 through vast's SSH proxy",
];

const KEY_HINTS = "q quit  ↑/↓ select  x drain  r reconnect  a abort  d destroy  ? help";

const STATE_STYLE: Record<BackendState, Style> = {
  healthy: "green",
  unhealthy: "red",
  connecting: "yellow",
  discovered: "yellow",
  draining: "magenta",
  "hostkey-mismatch": "redBold",
  removed: "dim",
};

/** One cell: plain text, a suffix kept when truncating, and its style. */
export interface Cell {
  text: string;
  suffix?: string;
  style?: Style;
}

/**
 * One column of a table of `R` rows. The live screen, `vastproxy status` and
 * `vastproxy list` all lay out their columns through these definitions.
 */
export interface ColumnDef<R = BackendSnapshot> {
  /** Header text. */
  title: string;
  /** Numbers align right. */
  align: "left" | "right";
  /** Lower is kept first when the terminal is narrow. */
  priority: number;
  /** Flexible columns shrink to `min` before anything is dropped. */
  flexMin?: number;
  /** The cell for one row; `now` is epoch ms, for ages. */
  cell(row: R, now: number): Cell;
}

const NONE = "-";

// Display order. Priorities decide what survives a narrow terminal: identity
// and health first, traffic next, cost and GPU bars last.
const COLUMNS: ColumnDef[] = [
  { title: "ID", align: "right", priority: 0, cell: (b) => ({ text: String(b.id) }) },
  { title: "GPU", align: "left", priority: 4, flexMin: 8, cell: (b) => ({ text: b.gpuLabel }) },
  {
    title: "STATE",
    align: "left",
    priority: 1,
    // An instance vast has not started yet says why it is not proxied
    // ("loading", "stopped") rather than a bare "discovered".
    cell: (b) => ({
      text: b.state === "discovered" && b.vastStatus !== "running" ? b.vastStatus : b.state,
      style: STATE_STYLE[b.state],
    }),
  },
  {
    title: "SSH",
    align: "left",
    priority: 2,
    cell: (b) => ({ text: b.ssh === "direct" ? "🐇" : b.ssh === "proxy" ? "🐢" : NONE }),
  },
  { title: "MODEL", align: "left", priority: 3, flexMin: 10, cell: modelCell },
  { title: "INFL", align: "right", priority: 5, cell: (b) => ({ text: String(b.inFlight) }) },
  { title: "REQS", align: "right", priority: 6, cell: (b) => ({ text: String(b.requests) }) },
  {
    title: "ERRS",
    align: "right",
    priority: 10,
    cell: (b) => ({ text: String(b.errors), style: b.errors > 0 ? "red" : undefined }),
  },
  {
    title: "P50",
    align: "right",
    priority: 9,
    cell: (b) => ({ text: formatLatency(b.latencyMs.p50) }),
  },
  // Issue #15 columns: useful, but the first to go on a narrow terminal.
  {
    title: "TTFT",
    align: "right",
    priority: 14,
    cell: (b) => ({ text: formatLatency(b.llm?.ttftP50Ms ?? null) }),
  },
  { title: "TOK/S", align: "right", priority: 16, cell: tpsCell },
  { title: "Q", align: "right", priority: 13, cell: queueCell },
  { title: "KV%", align: "right", priority: 15, cell: kvCell },
  { title: "GPU UTIL", align: "left", priority: 11, cell: utilCell },
  { title: "GPU MEM", align: "left", priority: 12, cell: memCell },
  {
    title: "$/H",
    align: "right",
    priority: 8,
    cell: (b) => ({ text: b.dph === null ? NONE : `$${b.dph.toFixed(2)}` }),
  },
  {
    title: "AGE",
    align: "right",
    priority: 7,
    cell: (b, now) => ({ text: formatDuration(now - b.stateSince) }),
  },
];

function modelCell(b: BackendSnapshot): Cell {
  if (b.models.length === 0) return { text: NONE };
  // The "+N" survives truncation: knowing there are more models matters more
  // than the tail of a long model path.
  return { text: b.models[0], suffix: b.models.length > 1 ? ` +${b.models.length - 1}` : "" };
}

/** Engine-reported running/waiting, e.g. `12/3`; dim when the last scrape failed. */
function queueCell(b: BackendSnapshot): Cell {
  const e = b.engineLoad;
  if (!e || (e.running === null && e.waiting === null)) return { text: NONE };
  const n = (v: number | null) => v === null ? "?" : String(Math.round(v));
  return { text: `${n(e.running)}/${n(e.waiting)}`, style: e.stale ? "dim" : undefined };
}

function kvCell(b: BackendSnapshot): Cell {
  const kv = b.engineLoad?.kvCacheUsage;
  if (kv === null || kv === undefined) return { text: NONE };
  return { text: `${Math.round(kv * 100)}%`, style: b.engineLoad?.stale ? "dim" : undefined };
}

function tpsCell(b: BackendSnapshot): Cell {
  const t = b.llm?.tokensPerSec;
  if (t === null || t === undefined) return { text: NONE };
  return { text: t < 10 ? t.toFixed(1) : String(Math.round(t)) };
}

function utilCell(b: BackendSnapshot): Cell {
  const vals = b.gpus.map((g) => g.utilization).filter((v): v is number => v !== null);
  if (vals.length === 0) return { text: NONE };
  const pct = vals.reduce((a, v) => a + v, 0) / vals.length;
  return { text: bar(pct), style: b.gpuStale ? "dim" : "cyan" };
}

function memCell(b: BackendSnapshot): Cell {
  let used = 0;
  let total = 0;
  for (const g of b.gpus) {
    if (g.memoryUsed === null || g.memoryTotal === null) continue;
    used += g.memoryUsed;
    total += g.memoryTotal;
  }
  if (total <= 0) return { text: NONE };
  return { text: bar((used / total) * 100), style: b.gpuStale ? "dim" : "cyan" };
}

/** A five-cell bar and percentage, e.g. `▇▇▇░░  62%`. */
export function bar(percent: number): string {
  const p = Math.max(0, Math.min(100, percent));
  const filled = Math.round(p / 20);
  return "▇".repeat(filled) + "░".repeat(5 - filled) + " " + `${Math.round(p)}%`.padStart(4);
}

/** Latency for a narrow cell: `87ms`, `1.2s`, `42s`; `-` when unknown. */
export function formatLatency(ms: number | null): string {
  if (ms === null) return NONE;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.round(ms / 1000)}s`;
}

interface LaidOutColumn<R> {
  def: ColumnDef<R>;
  width: number;
  cells: Cell[];
}

/**
 * Chooses the columns that fit in `width` (after a `prefix` for the
 * selection marker) and their widths. Fixed columns get their natural width
 * (widest cell or title); flexible ones start at their minimum and share
 * whatever room is left, up to their natural width.
 */
function layout<R>(
  defs: readonly ColumnDef<R>[],
  rows: readonly R[],
  now: number,
  width: number,
  prefix: number,
) {
  const sep = width >= 120 ? 2 : 1;
  const all = defs.map((def) => {
    // Every cell passes the terminal filter here, so no table (status, list,
    // the live view) can print an instance's escape sequences.
    const cells = rows.map((b) => {
      const c = def.cell(b, now);
      return { ...c, text: safeText(c.text), suffix: c.suffix && safeText(c.suffix) };
    });
    const natural = Math.max(
      displayWidth(def.title),
      ...cells.map((c) => displayWidth(c.text + (c.suffix ?? ""))),
    );
    const min = def.flexMin === undefined ? natural : Math.min(natural, def.flexMin);
    return { def, cells, natural, min, width: min };
  });
  const chosen = new Set<typeof all[number]>();
  let used = prefix;
  for (const col of [...all].sort((a, b) => a.def.priority - b.def.priority)) {
    const need = (chosen.size > 0 ? sep : 0) + col.min;
    // Skip, don't stop: a narrower lower-priority column may still fit.
    if (used + need > width && chosen.size > 0) continue;
    chosen.add(col);
    used += need;
  }
  // Share the spare room one column at a time, so a long GPU label cannot
  // starve the model name (or the other way round).
  let spare = Math.max(0, width - used);
  const flex = all.filter((c) => chosen.has(c) && c.def.flexMin !== undefined);
  while (spare > 0) {
    const growing = flex.filter((c) => c.width < c.natural);
    if (growing.length === 0) break;
    for (const col of growing) {
      if (spare === 0) break;
      col.width++;
      spare--;
    }
  }
  const columns: LaidOutColumn<R>[] = all.filter((c) => chosen.has(c));
  return { columns, sep };
}

function formatCell<R>(cell: Cell, col: LaidOutColumn<R>, color: boolean): string {
  const suffix = cell.suffix ?? "";
  const sw = displayWidth(suffix);
  const text = sw > 0 && col.width > sw + 1
    ? truncate(cell.text, col.width - sw) + suffix
    : cell.text + suffix;
  const fitted = fit(text, col.width, col.def.align);
  return cell.style ? paint(fitted, cell.style, color) : fitted;
}

/** Table header plus one line per row, each at most `width` wide. */
function tableLines<R extends { id: number }>(
  rows: readonly R[],
  defs: readonly ColumnDef<R>[],
  opts: { width: number; now: number; color: boolean; selected?: number; prefix: number },
): { header: string; rows: string[] } {
  const { columns, sep } = layout(defs, rows, opts.now, opts.width, opts.prefix);
  const gap = " ".repeat(sep);
  const pre = " ".repeat(opts.prefix);
  const header = paint(
    pre + columns.map((c) => fit(c.def.title, c.width, c.def.align)).join(gap),
    "bold",
    opts.color,
  );
  const lines = rows.map((b, i) => {
    const selected = b.id === opts.selected;
    const marker = opts.prefix > 0 ? fit(selected ? ">" : "", opts.prefix) : "";
    const line = marker + columns.map((c) => formatCell(c.cells[i], c, opts.color)).join(gap);
    return selected ? paint(line, "inverse", opts.color) : line;
  });
  return { header: truncate(header, opts.width), rows: lines.map((l) => truncate(l, opts.width)) };
}

function headerLines(s: StatusSnapshot, opts: { now: number; color: boolean; rps?: number }) {
  const { total, healthy, inFlight, requests, errors } = s.counts;
  const healthStyle: Style = total > 0 && healthy === total
    ? "green"
    : healthy > 0
    ? "yellow"
    : "red";
  const rps = opts.rps === undefined ? NONE : opts.rps.toFixed(1);
  const lines = [
    paint(`vastproxy ${s.version}`, "bold", opts.color) +
    `  ${s.listen}  policy ${s.policy}  up ${formatDuration(opts.now - s.startedAt)}`,
    paint(`healthy ${healthy}/${total}`, healthStyle, opts.color) +
    `  ${rps} req/s  in-flight ${inFlight}` +
    (s.queue ? `  queued ${s.queue.depth}` : "") +
    `  requests ${requests}  errors ${errors}  fleet $${s.dph.toFixed(2)}/h`,
  ];
  if (s.apiError) lines.push(paint(`vast API: ${s.apiError}`, "red", opts.color));
  return lines;
}

/**
 * The live screen: header, instance table, log pane and footer, as at most
 * `height` lines of at most `width` columns. When rows do not fit, a window
 * around the selected row is shown with a "… N more" line; the log pane
 * keeps a few lines whenever there are any.
 */
export function renderStatus(raw: StatusSnapshot, opts: RenderOptions): string[] {
  const { width, color, now } = opts;
  // Model ids, GPU names, vast statuses and API errors come from outside:
  // strip control and escape sequences before anything reaches the screen.
  const snapshot = safeDeep(raw);
  const head = headerLines(snapshot, opts);
  const footer = opts.prompt
    ? paint(safeText(opts.prompt), "redBold", color)
    : paint(KEY_HINTS, "dim", color);
  const height = opts.height ?? Infinity;
  let body: string[];
  const bodyRoom = height - head.length - 1;

  if (opts.help) {
    body = HELP_LINES.slice(0, Math.max(0, bodyRoom));
  } else {
    const backends = snapshot.backends;
    const t = tableLines(backends, COLUMNS, {
      width,
      now,
      color,
      selected: opts.selected,
      prefix: 2,
    });
    const logs = (opts.logLines ?? []).map(safeText);
    const rowRoom = bodyRoom - 1; // minus the table header
    // Keep up to three log lines (plus the rule) visible even with a big fleet.
    const minLog = logs.length > 0 ? Math.min(logs.length, 3) + 1 : 0;
    const wanted = Math.max(1, backends.length);
    const rowsShown = Math.max(1, Math.min(wanted, rowRoom - minLog));
    let rowLines: string[];
    if (backends.length === 0) {
      rowLines = [paint("  " + EMPTY_FLEET_MESSAGE, "dim", color)];
    } else if (rowsShown >= backends.length) {
      rowLines = t.rows;
    } else {
      rowLines = windowRows(t.rows, backends, opts.selected, rowsShown, color);
    }
    const logRoom = Math.max(0, rowRoom - rowLines.length - 1);
    const logShown = logs.slice(Math.max(0, logs.length - logRoom));
    body = [t.header, ...rowLines];
    if (logShown.length > 0) {
      body.push(paint("─".repeat(width), "dim", color), ...logShown);
    }
  }
  const lines = [...head, ...body, footer];
  const cut = Number.isFinite(height) ? lines.slice(0, Math.max(0, height)) : lines;
  return cut.map((l) => truncate(l, width));
}

/** `count` lines: a slice of rows containing the selected one, then "… N more". */
function windowRows(
  rows: string[],
  backends: BackendSnapshot[],
  selected: number | undefined,
  count: number,
  color: boolean,
): string[] {
  const k = Math.max(1, count - 1);
  const sel = Math.max(0, backends.findIndex((b) => b.id === selected));
  const start = Math.max(0, Math.min(sel - Math.floor(k / 2), rows.length - k));
  const shown = rows.slice(start, start + k);
  if (count < 2) return shown;
  const hidden = rows.length - shown.length;
  return [...shown, paint(`  … ${hidden} more (↑/↓ to scroll)`, "dim", color)];
}

/**
 * The one-shot table of `vastproxy status`: a summary line and the same
 * columns as the live table, no selection, no log pane, no height limit.
 */
export function renderPlainTable(raw: StatusSnapshot, opts: PlainTableOptions): string[] {
  const width = opts.width ?? 200;
  // The snapshot may come from another process's /vastproxy/status: same rule as the live table.
  const snapshot = safeDeep(raw);
  const head = headerLines(snapshot, { now: opts.now, color: opts.color });
  if (snapshot.backends.length === 0) {
    return [...head, EMPTY_FLEET_MESSAGE].map((l) => truncate(l, width));
  }
  const t = tableLines(snapshot.backends, COLUMNS, {
    width,
    now: opts.now,
    color: opts.color,
    prefix: 0,
  });
  return [...head.map((l) => truncate(l, width)), t.header, ...t.rows];
}

/**
 * Any rows as a table in the same style as the status table: a bold header
 * line, then one line per row, columns chosen by priority to fit `width`.
 */
export function renderRows<R extends { id: number }>(
  rows: readonly R[],
  columns: readonly ColumnDef<R>[],
  opts: PlainTableOptions,
): string[] {
  const t = tableLines(rows, columns, {
    width: opts.width ?? 200,
    now: opts.now,
    color: opts.color,
    prefix: 0,
  });
  // No trailing padding: these lines go to pipes and files, not a redrawn screen.
  return [t.header, ...t.rows].map((l) => l.trimEnd());
}
