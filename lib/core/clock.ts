/**
 * Injectable time. Loops, backoff and timeouts take a `Clock` so tests drive
 * them with `FakeClock.tick()` instead of sleeping.
 */

/** Source of time and delays. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("Aborted", "AbortError");
}

/**
 * Longest delay a timer can hold (2^31-1 ms, about 24.8 days). A longer one
 * fires after 1 ms instead (with a TimeoutOverflowWarning), so a generous
 * `--poll-interval 1000h` would poll the vast.ai API in a tight loop.
 */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The wall clock and real timers. */
export const realClock: Clock = {
  now: () => Date.now(),
  sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const onAbort = () => {
        clearTimeout(timer);
        reject(abortReason(signal!));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      }, Math.min(MAX_TIMER_MS, Math.max(0, ms)));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  },
};

interface Sleeper {
  at: number;
  seq: number;
  resolve: () => void;
}

/**
 * A clock that only moves when told. `tick(ms)` advances time and resolves
 * every sleeper that is due, in order, letting microtasks run between them so
 * chained sleeps behave as they would in real time.
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  #sleepers: Sleeper[] = [];

  /** Starts at `start` ms since the epoch (default 1_700_000_000_000). */
  constructor(start = 1_700_000_000_000) {
    this.#now = start;
  }

  /** Current fake time. */
  now(): number {
    return this.#now;
  }

  /** Number of pending sleeps; lets a test wait until a loop is parked. */
  get pending(): number {
    return this.#sleepers.length;
  }

  /** A sleep that resolves once `tick` moves time past `now() + ms`. */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const sleeper: Sleeper = { at: this.#now + Math.max(0, ms), seq: this.#seq++, resolve };
      const onAbort = () => {
        this.#sleepers = this.#sleepers.filter((s) => s !== sleeper);
        reject(abortReason(signal!));
      };
      sleeper.resolve = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#sleepers.push(sleeper);
    });
  }

  /** Advances time by `ms`, waking due sleepers in time order. */
  async tick(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      await flushMicrotasks();
      const due = this.#sleepers
        .filter((s) => s.at <= target)
        .sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.#sleepers = this.#sleepers.filter((s) => s !== due);
      this.#now = Math.max(this.#now, due.at);
      due.resolve();
    }
    this.#now = target;
    await flushMicrotasks();
  }
}

/** Lets pending promise callbacks run (several turns, for chained awaits). */
export async function flushMicrotasks(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await Promise.resolve();
}
