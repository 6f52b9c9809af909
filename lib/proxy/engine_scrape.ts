/**
 * Scraping an engine's `/metrics` through the tunnel (issue #15), beside the
 * health check and the GPU read: `scrapeEngineMetrics()` is one exchange,
 * `EngineScraper` is the state a `Backend` keeps between exchanges (the last
 * load, the counters an interval hit rate needs, the back-off for engines
 * that do not serve metrics). As with GPU metrics, a failure only marks the
 * numbers stale; it never touches health or the tunnel (DESIGN.md §5).
 */
import type { Clock } from "../core/clock.ts";
import type { Engine } from "../core/backend_spec.ts";
import type { Logger } from "../core/logger.ts";
import {
  type EngineLoad,
  type EngineReading,
  MAX_METRICS_BYTES,
  type PrefixCounters,
  readEngineMetrics,
} from "./engine_metrics.ts";
import { ownGet, type Sender } from "./own_get.ts";

/** The last scrape's load, frozen: when it was read and whether later scrapes failed. */
export type EngineLoadView = Readonly<EngineLoad & { at: number; stale: boolean }>;

/** What one scrape found. `unsupported`: the engine does not serve metrics (404, 501, no known series). */
export type ScrapeResult =
  | { ok: true; reading: EngineReading }
  | { ok: false; error: string; unsupported: boolean };

/** Inputs of `scrapeEngineMetrics()`. */
export interface ScrapeOptions {
  engine: Engine;
  /** Instance token sent as `Authorization: Bearer`; null sends none. */
  token: string | null;
  clock: Clock;
  timeoutMs: number;
  /** Counters of the previous scrape, for an interval prefix hit rate. */
  previous: PrefixCounters | null;
  /** Aborts the scrape (backend closing). */
  signal?: AbortSignal;
}

/** Longest pause between scrapes of an engine that does not serve metrics. */
const MAX_BACKOFF_MS = 10 * 60_000;
const decoder = new TextDecoder();

/**
 * `GET /metrics` through `send`, parsed for `engine`. Never throws: every
 * failure becomes `{ ok: false }`, with `unsupported` set when retrying each
 * interval would be pointless (SGLang without `--enable-metrics` answers
 * 404, llama.cpp without `--metrics` 501).
 */
export async function scrapeEngineMetrics(
  send: Sender,
  opts: ScrapeOptions,
): Promise<ScrapeResult> {
  // The classic text format: prometheus_client would otherwise offer OpenMetrics.
  const got = await ownGet(send, "/metrics", {
    token: opts.token,
    accept: "text/plain; version=0.0.4",
    clock: opts.clock,
    timeoutMs: opts.timeoutMs,
    maxBytes: MAX_METRICS_BYTES,
    signal: opts.signal,
  });
  if (!got.ok) {
    return { ok: false, error: got.error, unsupported: got.status === 404 || got.status === 501 };
  }
  const reading = readEngineMetrics(opts.engine, decoder.decode(got.body), opts.previous);
  const l = reading.load;
  if (l.running === null && l.waiting === null && l.kvCacheUsage === null) {
    return { ok: false, error: "GET /metrics has no known engine series", unsupported: true };
  }
  return { ok: true, reading };
}

/** Collaborators of an `EngineScraper`. */
export interface EngineScraperDeps {
  /** Instance id, for log lines. */
  id: number;
  clock: Clock;
  logger: Logger;
  /** The health interval: the base of the back-off. */
  intervalMs: number;
}

/**
 * One backend's scrape state. `once()` runs at most one scrape at a time
 * (a second call joins the first), skips while backing off, and replaces
 * the load whole; readers get frozen objects.
 */
export class EngineScraper {
  #deps: EngineScraperDeps;
  #load: EngineLoadView | null = null;
  #counters: PrefixCounters | null = null;
  #running: Promise<void> | undefined;
  #unsupported = 0;
  #notBefore = 0;
  #warned = false;

  constructor(deps: EngineScraperDeps) {
    this.#deps = deps;
  }

  /** The last load read, or null before the first success. */
  get load(): EngineLoadView | null {
    return this.#load;
  }

  /** The status view: the load without its read time (`stale` says what matters), or null. */
  snapshot(): (EngineLoad & { stale: boolean }) | null {
    const l = this.#load;
    if (!l) return null;
    const { running, waiting, kvCacheUsage, prefixHitRate, stale } = l;
    return Object.freeze({ running, waiting, kvCacheUsage, prefixHitRate, stale });
  }

  /** Old numbers (the tunnel went down): keep them, flagged stale. */
  markStale(): void {
    if (this.#load && !this.#load.stale) this.#load = Object.freeze({ ...this.#load, stale: true });
  }

  /** One scrape unless one is running (joined) or the engine is being backed off. */
  once(send: Sender, opts: Omit<ScrapeOptions, "previous" | "clock">): Promise<void> {
    if (this.#running) return this.#running;
    if (this.#deps.clock.now() < this.#notBefore) return Promise.resolve();
    this.#running = this.#scrape(send, opts).finally(() => (this.#running = undefined));
    return this.#running;
  }

  async #scrape(send: Sender, opts: Omit<ScrapeOptions, "previous" | "clock">): Promise<void> {
    const { clock, logger, id } = this.#deps;
    const r = await scrapeEngineMetrics(send, {
      ...opts,
      clock,
      previous: this.#counters,
    });
    if (r.ok) {
      this.#load = Object.freeze({ ...r.reading.load, at: clock.now(), stale: false });
      this.#counters = r.reading.counters;
      this.#unsupported = 0;
      this.#notBefore = 0;
      this.#warned = false;
      return;
    }
    this.markStale();
    if (r.unsupported) {
      // Doubling pause: an engine started without metrics stays that way
      // until restarted, and each scrape costs it a request.
      this.#unsupported++;
      const pause = Math.min(MAX_BACKOFF_MS, this.#deps.intervalMs * 2 ** this.#unsupported);
      this.#notBefore = clock.now() + pause;
      if (this.#unsupported === 1) {
        logger.log("info", "engine metrics not served; retrying less often", {
          id,
          error: r.error,
        });
      }
      return;
    }
    // Logged once per stale period, not once per interval.
    if (!this.#warned) {
      this.#warned = true;
      logger.log("warn", "engine metrics unavailable", { id, error: r.error });
    }
  }
}
