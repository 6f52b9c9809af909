/**
 * The plain closing line CI reads: `N passed, N failed[, N skipped]`. One
 * place computes it, for `scripts/test.ts` and for `.ci/run`, so that every
 * failed step counts: a failed gate (fmt, lint, type check, coverage) is one
 * more failure, and a run that failed without a failed test (a crash, a leak
 * reported after Deno's summary) is never reported as `0 failed`.
 *
 * As a program (for `.ci/run`):
 *   deno run --allow-read scripts/closing_line.ts [--gate-failures N] [--exit-status S] LOG
 * prints the last closing line found in LOG, adjusted for N failed gates and
 * the test run's exit status S.
 */

/** Counts of one test run. */
export interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

/** What, besides the tests' own counts, decides the closing line. */
export interface Outcome {
  /** Failed steps outside the test run (fmt, lint, check, coverage gate); each counts as one failure. */
  gateFailures?: number;
  /** The test run's exit status; non-zero with no failed test counts as one failure. */
  exitStatus?: number;
}

/**
 * Deno's own summary (`ok | 12 passed (3 steps) | 0 failed | 1 ignored (2s)`),
 * the last one in `output`, or undefined when the run ended before printing one.
 */
export function parseDenoSummary(output: string): Counts | undefined {
  const m = [...output.matchAll(
    /(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed(?: \(\d+ steps?\))?(?: \| (\d+) ignored)?/g,
  )].at(-1);
  if (!m) return undefined;
  return { passed: Number(m[1]), failed: Number(m[2]), skipped: m[3] ? Number(m[3]) : 0 };
}

/** Our closing line (`3 passed, 1 failed, 2 skipped`), the last one in `text`. */
export function parseClosingLine(text: string): Counts | undefined {
  const m = [...text.matchAll(/^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$/gm)].at(-1);
  if (!m) return undefined;
  return { passed: Number(m[1]), failed: Number(m[2]), skipped: m[3] ? Number(m[3]) : 0 };
}

/**
 * The final counts: the tests' counts (none found counts as one failure: the
 * run did not get as far as reporting), plus one per failed gate, and at least
 * one failure whenever the run's exit status was non-zero.
 */
export function finalCounts(counts: Counts | undefined, outcome: Outcome = {}): Counts {
  const base = counts ?? { passed: 0, failed: 1, skipped: 0 };
  let failed = base.failed + (outcome.gateFailures ?? 0);
  if ((outcome.exitStatus ?? 0) !== 0 && failed === 0) failed = 1;
  return { ...base, failed };
}

/** Formats counts as the closing line. */
export function formatClosingLine(c: Counts): string {
  return `${c.passed} passed, ${c.failed} failed${c.skipped ? `, ${c.skipped} skipped` : ""}`;
}

function numberFlag(args: string[], name: string): number {
  const i = args.indexOf(name);
  if (i < 0) return 0;
  const v = Number(args[i + 1]);
  if (!Number.isInteger(v)) throw new Error(`${name}: expected an integer, got "${args[i + 1]}"`);
  args.splice(i, 2);
  return v;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const gateFailures = numberFlag(args, "--gate-failures");
  const exitStatus = numberFlag(args, "--exit-status");
  let text = "";
  try {
    text = args[0] ? await Deno.readTextFile(args[0]) : "";
  } catch { /* no log: counted as a run that never reported */ }
  console.log(formatClosingLine(finalCounts(parseClosingLine(text), { gateFailures, exitStatus })));
}
