/**
 * `RequestAbort` (the cancellation the server and the relay make per
 * request instead of an `AbortController`) and `abortOf`, which gives the
 * HTTP/1.1 client one view of a request's `signal`, `abort`, or both.
 */
import assert from "node:assert/strict";
import { abortOf, RequestAbort } from "../../lib/http1/request_abort.ts";

Deno.test("RequestAbort: aborts once, calls each callback once, keeps the first reason", () => {
  const a = new RequestAbort();
  assert.equal(a.aborted, false);
  assert.equal(a.reason, undefined);
  const calls: string[] = [];
  const one = () => calls.push("one");
  const two = () => calls.push("two");
  const three = () => calls.push("three");
  a.onAbort(one);
  a.onAbort(two);
  a.onAbort(three);
  a.offAbort(two);
  const reason = new DOMException("client disconnected", "AbortError");
  a.abort(reason);
  assert.equal(a.aborted, true);
  assert.equal(a.reason, reason);
  assert.deepEqual(calls, ["one", "three"], "in order, without the forgotten one");
  a.abort(new Error("later"));
  assert.equal(a.reason, reason, "a second abort changes nothing");
  a.onAbort(() => calls.push("late"));
  assert.deepEqual(calls, ["one", "three"], "no callback after the abort, nor twice");
});

Deno.test("RequestAbort: offAbort of the only callback leaves nothing to call", () => {
  const a = new RequestAbort();
  let n = 0;
  const fn = () => n++;
  a.onAbort(fn);
  a.offAbort(fn);
  a.offAbort(() => {}); // unknown: ignored
  a.abort("x");
  assert.equal(n, 0);
  // A callback registered from inside another runs no more: the abort is over.
  const b = new RequestAbort();
  b.onAbort(() => b.onAbort(() => n++));
  b.abort("y");
  assert.equal(n, 0);
});

Deno.test("abortOf: nothing, the view itself, or a signal seen through the same view", () => {
  assert.equal(abortOf(undefined, undefined), null);
  const a = new RequestAbort();
  assert.equal(abortOf(undefined, a), a, "no wrapper for the relay's RequestAbort");

  const ac = new AbortController();
  const v = abortOf(ac.signal, undefined)!;
  assert.equal(v.aborted, false);
  let n = 0;
  const fn = () => n++;
  v.onAbort(fn);
  v.offAbort(fn);
  v.onAbort(() => n += 10);
  const reason = new DOMException("gone", "AbortError");
  ac.abort(reason);
  assert.equal(v.aborted, true);
  assert.equal(v.reason, reason);
  assert.equal(n, 10, "the forgotten listener did not run");
});

Deno.test("abortOf: with a signal and a view, either one aborts, with its own reason", () => {
  for (const which of ["signal", "view"]) {
    const ac = new AbortController();
    const a = new RequestAbort();
    const v = abortOf(ac.signal, a)!;
    const calls: string[] = [];
    v.onAbort(() => calls.push("fn"));
    const dropped = () => calls.push("dropped");
    v.onAbort(dropped);
    v.offAbort(dropped);
    assert.equal(v.aborted, false);
    const reason = new Error(which);
    if (which === "signal") ac.abort(reason);
    else a.abort(reason);
    assert.equal(v.aborted, true, which);
    assert.equal(v.reason, reason, which);
    assert.deepEqual(calls, ["fn"], which);
  }
});

Deno.test("RequestAbort: a callback forgotten by an earlier one during the abort is not called, as with AbortSignal", () => {
  // An AbortSignal never calls a listener removed while it dispatches (e.g.
  // the first listener's cleanup stops a second watcher). RequestAbort
  // promises the same order and semantics.
  for (const kind of ["signal", "view"] as const) {
    const calls: string[] = [];
    const first = () => {
      calls.push("first");
      off(second);
    };
    const second = () => calls.push("second");
    const third = () => calls.push("third");
    let off: (fn: () => void) => void;
    let fire: () => void;
    if (kind === "signal") {
      const c = new AbortController();
      off = (fn) => c.signal.removeEventListener("abort", fn);
      for (const fn of [first, second, third]) c.signal.addEventListener("abort", fn);
      fire = () => c.abort();
    } else {
      const a = new RequestAbort();
      off = (fn) => a.offAbort(fn);
      for (const fn of [first, second, third]) a.onAbort(fn);
      fire = () => a.abort("x");
    }
    fire();
    assert.deepEqual(calls, ["first", "third"], kind);
  }
});
