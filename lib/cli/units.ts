/**
 * Human units on the command line: durations (`500ms`, `10s`, `2m`, `1h`,
 * `1m30s`) and byte sizes (`32MiB`, `1.5GB`, `4096`).
 */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
};

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1_000,
  kb: 1_000,
  kib: 1_024,
  m: 1_000_000,
  mb: 1_000_000,
  mib: 1_048_576,
  g: 1_000_000_000,
  gb: 1_000_000_000,
  gib: 1_073_741_824,
};

/**
 * Parses a duration into milliseconds, or returns undefined when `text` is
 * not one. A bare number is read as seconds, the unit people mean most often
 * for intervals and timeouts.
 */
export function parseDuration(text: string): number | undefined {
  const s = text.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(s)) {
    // 400 digits are still digits: refuse what does not fit rather than return Infinity.
    const ms = Math.round(Number(s) * 1_000);
    return Number.isSafeInteger(ms) ? ms : undefined;
  }
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(m[1]) * DURATION_UNITS[m[2]];
  }
  const ms = Math.round(total);
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** Parses a byte size (`32MiB`, `1GB`, `512k`, `4096`), or undefined when malformed. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(text.trim().toLowerCase());
  // Own keys only: `in` would accept inherited names such as "constructor".
  if (!m || !Object.hasOwn(SIZE_UNITS, m[2])) return undefined;
  const bytes = Math.floor(Number(m[1]) * SIZE_UNITS[m[2]]);
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/**
 * Formats a span compactly for tables and logs: `45s`, `3m12s`, `2h05m`,
 * `3d04h` (whole seconds; sub-second spans read `0s`).
 */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}
