/**
 * `--mark-label LABEL`: keep a vast.ai label on the instances that are
 * serving, so the user's console shows which ones the proxy uses. Driven by
 * backend state events: healthy → set the label; unhealthy, refused,
 * removed or rebuilt → clear it. A label is only cleared while it is still
 * ours — if the user renamed the instance meanwhile, their label stays.
 *
 * Label calls go through one queue (one at a time, in order), because the
 * vast API rate-limits per endpoint and a set racing a clear for the same
 * instance could leave the wrong answer behind.
 */
import type { Logger } from "../core/logger.ts";
import type { BackendEvent } from "../proxy/backend.ts";
import { errorText } from "../core/errors.ts";

/** Sets or clears an instance's vast label (`VastClient.setLabel` fits). */
export interface LabelSetter {
  /** `label: null` clears it. Rejects on failure. */
  setLabel(id: number, label: string | null): Promise<unknown>;
}

/** Collaborators of `Marks`. */
export interface MarksDeps {
  client: LabelSetter;
  /** The instance's label as last listed by vast; undefined once the fleet forgot it. */
  labelOf: (id: number) => string | null | undefined;
  logger: Logger;
  /** Attempts per wanted change before giving up (default 3). */
  maxAttempts?: number;
}

type Want = "set" | "clear";

interface Entry {
  /** What the instance's label should become. */
  want: Want | null;
  /** Attempts made for the current `want`. */
  attempts: number;
  /**
   * What we last wrote (LABEL or null), or undefined before our first write.
   * vast's listing lags our writes by up to a poll interval; until it moves
   * on from `listedAtWrite`, our own write is the truth.
   */
  written: string | null | undefined;
  /** The listed label at the time of our last write. */
  listedAtWrite: string | null;
  /** Last label seen, for instances the fleet has already dropped. */
  lastSeen: string | null;
}

/** Keeps `LABEL` on healthy instances and takes it off the others. */
export class Marks {
  #label: string;
  #deps: MarksDeps;
  #entries = new Map<number, Entry>();
  #queue: Promise<void> = Promise.resolve();

  /** Marks instances with `label`. */
  constructor(label: string, deps: MarksDeps) {
    this.#label = label;
    this.#deps = deps;
  }

  /** Feed backend events here (e.g. from `Fleet`'s `onEvent`). */
  onEvent(event: BackendEvent): void {
    if (event.type !== "state") return;
    const entry = this.#entry(event.id);
    if (event.to === "healthy") this.#want(entry, "set");
    else if (
      event.to === "unhealthy" || event.to === "hostkey-mismatch" || event.to === "removed" ||
      event.to === "discovered"
    ) this.#want(entry, "clear");
    // `connecting` and `draining` change nothing: a manual drain keeps the
    // label, and a removal's drain ends in `removed`.
    void this.flush();
  }

  /**
   * Runs every pending change (retrying earlier failures) and resolves when
   * the queue is empty. Call it on each health interval to retry failures.
   */
  flush(): Promise<void> {
    const run = this.#queue.then(() => this.#drain());
    this.#queue = run.catch(() => {});
    return run;
  }

  /** On exit: takes our label off every instance still carrying it. */
  clearAll(): Promise<void> {
    for (const entry of this.#entries.values()) {
      entry.want = "clear";
      entry.attempts = 0;
    }
    return this.flush();
  }

  #entry(id: number): Entry {
    let e = this.#entries.get(id);
    if (!e) {
      e = { want: null, attempts: 0, written: undefined, listedAtWrite: null, lastSeen: null };
      this.#entries.set(id, e);
    }
    const seen = this.#deps.labelOf(id);
    if (seen !== undefined) e.lastSeen = seen;
    return e;
  }

  #want(entry: Entry, want: Want): void {
    if (entry.want !== want) entry.attempts = 0;
    entry.want = want;
  }

  async #drain(): Promise<void> {
    const max = this.#deps.maxAttempts ?? 3;
    for (const [id, entry] of this.#entries) {
      if (entry.want === null) continue;
      const want = entry.want;
      const listed = this.#current(id, entry);
      const current = this.#effective(entry, listed);
      if (want === "set" && current === this.#label) {
        // Already there (a previous run's, or ours): nothing to write.
        entry.want = null;
        continue;
      }
      if (want === "clear" && current !== this.#label) {
        // Not ours (never set, already cleared, or the user renamed it): leave it.
        entry.want = null;
        continue;
      }
      try {
        await this.#deps.client.setLabel(id, want === "set" ? this.#label : null);
        entry.written = want === "set" ? this.#label : null;
        entry.listedAtWrite = listed;
        this.#deps.logger.log("info", want === "set" ? "label set" : "label cleared", {
          id,
          label: this.#label,
        });
        // Only settle if nothing new was asked for during the call.
        if (entry.want === want) entry.want = null;
      } catch (err) {
        entry.attempts++;
        const giveUp = entry.attempts >= max;
        this.#deps.logger.log("warn", `could not ${want} label`, {
          id,
          label: this.#label,
          error: errorText(err),
          attempt: entry.attempts,
          retry: !giveUp,
        });
        if (giveUp && entry.want === want) entry.want = null;
      }
    }
  }

  /** The label vast last listed, or the last one seen once the fleet dropped the instance. */
  #current(id: number, entry: Entry): string | null {
    const seen = this.#deps.labelOf(id);
    if (seen !== undefined) entry.lastSeen = seen;
    return seen === undefined ? entry.lastSeen : seen;
  }

  /**
   * The label the instance really has now: our last write while vast's
   * listing still shows what it showed then, else the listing (which has
   * caught up, or shows a change the user made since).
   */
  #effective(entry: Entry, listed: string | null): string | null {
    if (entry.written !== undefined && listed === entry.listedAtWrite) return entry.written;
    entry.written = undefined;
    return listed;
  }
}
