/**
 * Polls the vast.ai listing and turns it into fleet diffs (DESIGN §4, STYLE
 * 10–11). `pollOnce()` is the step tests call; `start()` only repeats it and
 * hands each diff to one consumer, awaited, in order: nothing is dropped.
 *
 * Diff rules:
 * - `added`: an id seen for the first time (eligible or not: ineligible
 *   instances are shown, not proxied; `eligible` is a field of the spec).
 * - `changed`: the fleet must act: the connection (`connectionKey`: endpoints,
 *   port, token), `status` or `eligible` differ. `rebuild` is true when the
 *   connection differs, i.e. the tunnel must be replaced.
 * - `updated`: only display fields differ (label without a label filter, $/h,
 *   GPU, model hint, start time). Nothing to rebuild; just refresh the view.
 * - `removed`: an id missing from two consecutive successful listings, so one
 *   odd answer (an empty page, `instances: null`) never drops the fleet. A
 *   failed listing changes nothing at all.
 * A poll where nothing differs yields `null`, not an empty diff.
 */
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import { type BackendSpec, connectionKey } from "../core/backend_spec.ts";
import type { FleetDiff } from "../core/fleet_diff.ts";
import { backoffDelay } from "../core/backoff.ts";
import { resolveInstance } from "./instance.ts";
import type { VastInstanceRecord } from "./schema.ts";
import { errorText } from "../core/errors.ts";

/** The one thing the watcher needs from the API client. */
export interface InstanceLister {
  /** All instances of the account; rejects on failure. */
  listInstances(signal?: AbortSignal): Promise<VastInstanceRecord[]>;
}

/** Construction options. */
export interface WatcherOptions {
  client: InstanceLister;
  clock: Clock;
  /** Delay between polls after a success, ms. */
  pollIntervalMs: number;
  /** `--label` / `--instance`. */
  filters: { label: string | null; instances: readonly number[] };
  /** `--remote-port`, or null to detect per instance. */
  remotePort: number | null;
  logger: Logger;
  /** Jitter source for error backoff [Math.random]. */
  random?: () => number;
  /** Ceiling of the error backoff, ms [max(60000, pollIntervalMs)]. */
  maxBackoffMs?: number;
}

/** Keeps the current view of the account's instances and reports its changes. */
export class Watcher {
  #opts: WatcherOptions;
  #known = new Map<number, BackendSpec>();
  /** Consecutive successful listings each known id has been missing from. */
  #missing = new Map<number, number>();
  #lastError: string | null = null;
  #consecutiveErrors = 0;

  /** See `WatcherOptions`. */
  constructor(opts: WatcherOptions) {
    this.#opts = opts;
  }

  /** The current view, sorted by id (copies; the watcher owns the state). */
  known(): BackendSpec[] {
    return [...this.#known.values()].sort((a, b) => a.id - b.id).map((s) => structuredClone(s));
  }

  /** The last poll's error message, or null after a successful poll. */
  lastError(): string | null {
    return this.#lastError;
  }

  /**
   * Lists once and applies the result. Returns the diff, or null when nothing
   * changed. On failure rejects with the client's error after recording it for
   * `lastError()`; the known view is untouched.
   */
  async pollOnce(signal?: AbortSignal): Promise<FleetDiff | null> {
    let records: VastInstanceRecord[];
    try {
      records = await this.#opts.client.listInstances(signal);
    } catch (err) {
      if (!signal?.aborted) {
        this.#consecutiveErrors++;
        this.#lastError = err instanceof Error ? err.message : String(err);
      }
      throw err;
    }
    this.#consecutiveErrors = 0;
    this.#lastError = null;
    return this.#apply(records);
  }

  #apply(records: VastInstanceRecord[]): FleetDiff | null {
    const { filters, remotePort } = this.#opts;
    const diff: FleetDiff = { added: [], changed: [], updated: [], removed: [] };
    const seen = new Set<number>();
    for (const record of records) {
      // vast should never list an id twice; if it does, the first one wins.
      if (seen.has(record.id)) continue;
      seen.add(record.id);
      const after = resolveInstance(record, {
        remotePort,
        label: filters.label,
        instances: filters.instances,
      });
      this.#missing.delete(after.id);
      const before = this.#known.get(after.id);
      this.#known.set(after.id, after);
      if (!before) {
        diff.added.push(after);
      } else if (!sameSpec(before, after)) {
        const rebuild = connectionKey(before) !== connectionKey(after);
        if (rebuild || before.status !== after.status || before.eligible !== after.eligible) {
          diff.changed.push({ before, after, rebuild });
        } else {
          diff.updated.push({ before, after });
        }
      }
    }
    for (const [id, spec] of this.#known) {
      if (seen.has(id)) continue;
      const misses = (this.#missing.get(id) ?? 0) + 1;
      if (misses >= 2) {
        this.#known.delete(id);
        this.#missing.delete(id);
        diff.removed.push(spec);
      } else {
        this.#missing.set(id, misses);
      }
    }
    const empty = diff.added.length + diff.changed.length + diff.updated.length +
        diff.removed.length === 0;
    return empty ? null : diff;
  }

  /**
   * Polls until `signal` aborts, delivering each diff to `onDiff` and awaiting
   * it before polling again, so diffs arrive in order and a slow consumer
   * delays polling instead of losing events. Errors are logged and backed off
   * (from one poll interval, doubling, with jitter); a consumer that throws is logged
   * and the loop goes on (its diff is already part of `known()`).
   */
  async start(
    signal: AbortSignal,
    onDiff: (diff: FleetDiff) => void | Promise<void>,
  ): Promise<void> {
    const { clock, logger, pollIntervalMs } = this.#opts;
    while (!signal.aborted) {
      try {
        const diff = await this.pollOnce(signal);
        if (diff) {
          try {
            await onDiff(diff);
          } catch (err) {
            logger.log("error", "fleet update failed", { error: errorText(err) });
          }
        }
      } catch (err) {
        if (signal.aborted) return;
        logger.log("warn", "vast.ai listing failed; keeping the known fleet", {
          error: errorText(err),
          failures: this.#consecutiveErrors,
        });
      }
      try {
        await clock.sleep(this.#nextDelay(pollIntervalMs), signal);
      } catch {
        return; // aborted
      }
    }
  }

  /** The regular interval, or a growing backoff while polls keep failing. */
  #nextDelay(pollIntervalMs: number): number {
    if (this.#consecutiveErrors === 0) return pollIntervalMs;
    // Attempt n≥1 lands in [interval·2^(n-1), interval·2^n]: never sooner than
    // a normal poll, since a failing API is the last one to hammer.
    return backoffDelay(this.#consecutiveErrors, {
      baseMs: pollIntervalMs,
      maxMs: this.#opts.maxBackoffMs ?? Math.max(60_000, pollIntervalMs),
      random: this.#opts.random,
    });
  }
}

function sameSpec(a: BackendSpec, b: BackendSpec): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
