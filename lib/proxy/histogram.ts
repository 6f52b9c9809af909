/**
 * A fixed-bucket latency histogram. Each backend keeps one (its owner calls
 * `observe()` from `release()`); /vastproxy/metrics exports the buckets as a
 * Prometheus histogram and the status snapshot shows the p50/p99 estimates.
 *
 * Fixed buckets keep memory constant whatever the traffic, and make the
 * Prometheus series stable so dashboards can aggregate across replicas.
 */

/**
 * Bucket upper bounds in ms. LLM requests range from a few ms (a cached
 * `/v1/models`) to minutes (a long generation), hence the wide, roughly
 * logarithmic spread.
 */
export const DEFAULT_BUCKETS_MS: readonly number[] = Object.freeze([
  5,
  10,
  25,
  50,
  100,
  250,
  500,
  1_000,
  2_500,
  5_000,
  10_000,
  30_000,
  60_000,
  120_000,
  300_000,
]);

/**
 * Exported histogram data, in ms. `buckets` are cumulative `[le, count]`
 * pairs in ascending `le` order, without the implicit `+Inf` bucket (whose
 * count is `count`). metrics.ts converts to seconds.
 */
export interface HistogramData {
  buckets: [le: number, count: number][];
  /** Sum of all observations, ms. */
  sum: number;
  /** Number of observations. */
  count: number;
}

/** Latency histogram with fixed buckets and quantile estimates. */
export class LatencyHistogram {
  readonly #bounds: readonly number[];
  /** Non-cumulative counts; one extra slot for observations above the last bound. */
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** `boundsMs` defaults to `DEFAULT_BUCKETS_MS`; must be ascending and positive. */
  constructor(boundsMs: readonly number[] = DEFAULT_BUCKETS_MS) {
    for (let i = 0; i < boundsMs.length; i++) {
      if (!(boundsMs[i] > 0) || (i > 0 && boundsMs[i] <= boundsMs[i - 1])) {
        throw new RangeError(
          "Cannot create LatencyHistogram: bounds must be positive and ascending",
        );
      }
    }
    this.#bounds = [...boundsMs];
    this.#counts = new Array(boundsMs.length + 1).fill(0);
  }

  /** Number of observations. */
  get count(): number {
    return this.#count;
  }

  /** Sum of observations, ms. */
  get sum(): number {
    return this.#sum;
  }

  /** Records one latency in ms; negative or non-finite values are clamped to 0. */
  observe(ms: number): void {
    const v = Number.isFinite(ms) && ms > 0 ? ms : 0;
    // Prometheus buckets are "less than or equal", so the first bound >= v.
    let i = 0;
    while (i < this.#bounds.length && v > this.#bounds[i]) i++;
    this.#counts[i]++;
    this.#sum += v;
    this.#count++;
  }

  /** Cumulative `[le, count]` pairs (without `+Inf`). */
  buckets(): [le: number, count: number][] {
    let acc = 0;
    return this.#bounds.map((le, i) => {
      acc += this.#counts[i];
      return [le, acc];
    });
  }

  /**
   * Adds another histogram's observations. Its buckets must be these
   * bounds (a per-request histogram folded into a per-backend one).
   */
  merge(other: HistogramData): void {
    if (
      other.buckets.length !== this.#bounds.length ||
      other.buckets.some(([le], i) => le !== this.#bounds[i])
    ) {
      throw new RangeError("Cannot merge histograms: bucket bounds differ");
    }
    let prev = 0;
    other.buckets.forEach(([, cum], i) => {
      this.#counts[i] += cum - prev;
      prev = cum;
    });
    this.#counts[this.#bounds.length] += other.count - prev;
    this.#sum += other.sum;
    this.#count += other.count;
  }

  /** A copy of the data for export. */
  data(): HistogramData {
    return { buckets: this.buckets(), sum: this.#sum, count: this.#count };
  }

  /**
   * Estimates the q-quantile (0..1) in ms by linear interpolation inside the
   * bucket that holds it, as Prometheus' `histogram_quantile` does; null
   * with no observations. Values past the last bound report that bound,
   * since nothing better is known about them.
   */
  quantile(q: number): number | null {
    if (this.#count === 0) return null;
    const rank = Math.min(1, Math.max(0, q)) * this.#count;
    let acc = 0;
    for (let i = 0; i < this.#bounds.length; i++) {
      const inBucket = this.#counts[i];
      if (inBucket > 0 && acc + inBucket >= rank) {
        const lower = i === 0 ? 0 : this.#bounds[i - 1];
        const upper = this.#bounds[i];
        return lower + (upper - lower) * ((rank - acc) / inBucket);
      }
      acc += inBucket;
    }
    return this.#bounds[this.#bounds.length - 1] ?? this.#sum / this.#count;
  }
}
