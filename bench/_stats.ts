/** Small statistics helpers shared by the load generator and the report. */

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}

/** Median of the finite values (NaN when none). */
export function median(values: readonly number[]): number {
  return quantile(values.filter(Number.isFinite), 0.5);
}
