/**
 * A request's cancellation without an `AbortController` on the hot path.
 *
 * Making an `AbortController` and adding and removing an "abort" listener
 * on its signal costs several microseconds in Deno, paid by every request,
 * while almost none is ever cancelled. Both ends of the proxy pay it per
 * request: the server for each client request (_server_conn.ts), the relay
 * for each exchange with an engine (relay.ts → client.ts). `RequestAbort` is
 * a plain object with a flag and at most a few callbacks instead; an
 * `AbortSignal` is made only for code that asks for one.
 *
 * `AbortView` is what a listener needs of either kind (state, reason and
 * callbacks), so the HTTP/1.1 client serves `Http1Request.signal` and
 * `Http1Request.abort` with one code path (`abortOf`).
 */

/** The listening side of a cancellation: a `RequestAbort` or a wrapped `AbortSignal`. */
export interface AbortView {
  readonly aborted: boolean;
  /** Why it was aborted (undefined until then). */
  readonly reason: unknown;
  /** Calls `fn` once on abort (never when already aborted: check `aborted` first). */
  onAbort(fn: () => void): void;
  /** Forgets `fn` (registered with `onAbort`). */
  offAbort(fn: () => void): void;
}

/**
 * A cancellation that makes its `AbortController` only when someone asks for
 * `signal`. Aborting aborts that signal (if made) first, then calls the
 * `onAbort` callbacks, synchronously, as an `AbortSignal` dispatches.
 */
export class RequestAbort implements AbortView {
  #aborted = false;
  #reason: unknown = undefined;
  #controller: AbortController | null = null;
  // One callback is the common case (the relay's, the client's): no array for it.
  #one: (() => void) | null = null;
  #more: (() => void)[] | null = null;

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#reason;
  }

  /** An `AbortSignal` that follows this; made on first use. */
  get signal(): AbortSignal {
    if (this.#controller === null) {
      this.#controller = new AbortController();
      if (this.#aborted) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Aborts once with `reason`; later calls do nothing. */
  abort(reason: unknown): void {
    if (this.#aborted) return;
    this.#aborted = true;
    this.#reason = reason;
    this.#controller?.abort(reason);
    const one = this.#one;
    this.#one = null;
    one?.();
    // As an AbortSignal: a callback an earlier one forgets (offAbort) while
    // this runs is not called, so the list stays live until it is empty.
    const more = this.#more;
    if (more !== null) {
      while (more.length > 0) more.shift()!();
      this.#more = null;
    }
  }

  onAbort(fn: () => void): void {
    if (this.#aborted) return;
    if (this.#one === null && this.#more === null) this.#one = fn;
    else (this.#more ??= []).push(fn);
  }

  offAbort(fn: () => void): void {
    if (this.#one === fn) this.#one = null;
    else if (this.#more !== null) {
      const i = this.#more.indexOf(fn);
      if (i !== -1) this.#more.splice(i, 1);
    }
  }
}

/**
 * The cancellation of a request that may carry an `AbortSignal`, a cheaper
 * `AbortView`, both (either one cancels), or neither (null). Only a signal
 * costs a wrapper; the view alone is returned as it is.
 */
export function abortOf(
  signal: AbortSignal | undefined,
  view: AbortView | undefined,
): AbortView | null {
  if (signal === undefined) return view ?? null;
  const fromSignal = signalView(signal);
  return view === undefined ? fromSignal : eitherView(view, fromSignal);
}

/** `signal` as an `AbortView`: its callbacks are its "abort" listeners. */
export function signalView(signal: AbortSignal): AbortView {
  return {
    get aborted() {
      return signal.aborted;
    },
    get reason() {
      return signal.reason;
    },
    onAbort: (fn) => signal.addEventListener("abort", fn),
    offAbort: (fn) => signal.removeEventListener("abort", fn),
  };
}

/** Aborted when `a` or `b` is, with the reason of the one that was (`a`'s when both). */
function eitherView(a: AbortView, b: AbortView): AbortView {
  return {
    get aborted() {
      return a.aborted || b.aborted;
    },
    get reason() {
      return a.aborted ? a.reason : b.reason;
    },
    // Both may fire, one after the other: listeners must be idempotent,
    // as the client's are (a destroyed channel, a settled promise).
    onAbort: (fn) => {
      a.onAbort(fn);
      b.onAbort(fn);
    },
    offAbort: (fn) => {
      a.offAbort(fn);
      b.offAbort(fn);
    },
  };
}
