/**
 * Work that follows a request but that nobody waits for (its log line, its
 * LLM numbers), run in batches rather than right after each response.
 *
 * Why: at concurrency 1 every request wakes the proxy from sleep on caches
 * other processes used meanwhile, and whatever runs after the answer went
 * out sits between the client's next request and its handling. Run per
 * request, this bookkeeping cost 20–60 µs of latency at concurrency 1 for a
 * few microseconds of work (docs/BENCHMARKS.md, fifth pass); run once per
 * batch, it costs what it costs under load.
 *
 * Readers of what the tasks produce (the status snapshot, the admin API,
 * shutdown) call `flush()` first, so they never see a stale number.
 */

/** Options of `DeferredWork`. */
export interface DeferredWorkOptions {
  /** Longest a task waits for its batch, ms. */
  maxDelayMs: number;
  /** Queued tasks at which a batch runs at once (bounds memory under load). */
  maxQueued: number;
  /** Where a task's error goes; a failing task never stops the others. */
  onError?: (err: unknown) => void;
  /**
   * Runs `fn` after `ms` and returns a cancel function. Defaults to an
   * unref'd `setTimeout`: queued bookkeeping must not keep the process alive.
   */
  schedule?: (fn: () => void, ms: number) => () => void;
}

function realSchedule(fn: () => void, ms: number): () => void {
  const id = setTimeout(fn, ms);
  Deno.unrefTimer(id as unknown as number);
  return () => clearTimeout(id);
}

/** A queue of tasks run together, at most `maxDelayMs` after the first was queued. */
export class DeferredWork {
  #opts: Required<DeferredWorkOptions>;
  #queue: (() => void)[] = [];
  #cancel: (() => void) | null = null;
  #running = false;

  constructor(opts: DeferredWorkOptions) {
    // Not `{ ...defaults, ...opts }`: an option present but undefined
    // (passed through from a caller's own optional field) means the default.
    this.#opts = {
      maxDelayMs: opts.maxDelayMs,
      maxQueued: opts.maxQueued,
      onError: opts.onError ?? (() => {}),
      schedule: opts.schedule ?? realSchedule,
    };
  }

  /** Tasks waiting for their batch. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queues `task`; it runs with its batch, in the order tasks were queued. */
  defer(task: () => void): void {
    this.#queue.push(task);
    if (this.#running) return; // the running batch takes it
    if (this.#queue.length >= this.#opts.maxQueued) {
      this.flush();
      return;
    }
    this.#cancel ??= this.#opts.schedule(() => {
      this.#cancel = null;
      this.flush();
    }, this.#opts.maxDelayMs);
  }

  /** Runs every queued task now, including any a task queues meanwhile. */
  flush(): void {
    if (this.#running) return;
    if (this.#cancel !== null) {
      this.#cancel();
      this.#cancel = null;
    }
    this.#running = true;
    try {
      // Index walk: tasks queued by a task join this batch.
      for (let i = 0; i < this.#queue.length; i++) {
        try {
          this.#queue[i]();
        } catch (err) {
          try {
            this.#opts.onError(err);
          } catch { /* the error sink failed too: nothing left to tell */ }
        }
      }
    } finally {
      this.#queue.length = 0;
      this.#running = false;
    }
  }
}
