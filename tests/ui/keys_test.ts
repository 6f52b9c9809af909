import assert from "node:assert/strict";
import type { BackendSnapshot, StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { KeyController, parseKeys, promptFor } from "../../lib/ui/keys.ts";

const enc = (s: string) => new TextEncoder().encode(s);

function fleet(ids: number[]): StatusSnapshot {
  return {
    version: "0.1.0",
    listen: "127.0.0.1:8080",
    policy: "least-inflight",
    time: 0,
    startedAt: 0,
    counts: { total: ids.length, healthy: ids.length, inFlight: 0, requests: 0, errors: 0 },
    dph: 0,
    apiError: null,
    backends: ids.map((id) => ({ id, gpuLabel: "RTX 4090 ×2" }) as BackendSnapshot),
  };
}

const SNAP = fleet([11, 22, 33]);

Deno.test("parseKeys() reads letters, arrows, Ctrl-C and Esc", () => {
  assert.deepEqual(parseKeys(enc("q")), ["q"]);
  assert.deepEqual(parseKeys(enc("\x1b[A")), ["up"]);
  assert.deepEqual(parseKeys(enc("\x1b[B")), ["down"]);
  assert.deepEqual(parseKeys(enc("\x1bOA")), ["up"]);
  assert.deepEqual(parseKeys(enc("\x03")), ["ctrl-c"]);
  assert.deepEqual(parseKeys(enc("\x1b")), ["esc"]);
  assert.deepEqual(parseKeys(enc("?")), ["?"]);
  assert.deepEqual(parseKeys(enc("\x1b[C")), ["other"]);
});

Deno.test("parseKeys() splits several keys in one chunk", () => {
  assert.deepEqual(parseKeys(enc("x\x1b[B\x1b[Bdy")), ["x", "down", "down", "d", "y"]);
  assert.deepEqual(parseKeys(enc("ranz")), ["r", "a", "n", "other"]);
});

Deno.test("KeyController.handle() quits on q and Ctrl-C", () => {
  assert.deepEqual(new KeyController().handle("q", SNAP), { type: "quit" });
  assert.deepEqual(new KeyController().handle("ctrl-c", SNAP), { type: "quit" });
});

Deno.test("KeyController.handle() acts on the selected backend", () => {
  const k = new KeyController();
  assert.deepEqual(k.handle("x", SNAP), { type: "drain-toggle", id: 11 });
  assert.equal(k.handle("down", SNAP), undefined);
  assert.deepEqual(k.handle("x", SNAP), { type: "drain-toggle", id: 22 });
  assert.deepEqual(k.handle("r", SNAP), { type: "reconnect", id: 22 });
  assert.deepEqual(k.handle("a", SNAP), { type: "abort-all", id: 22 });
});

Deno.test("KeyController.handle() moves the selection and clamps at the ends", () => {
  const k = new KeyController();
  k.handle("up", SNAP);
  assert.equal(k.state.selected, 11);
  for (let i = 0; i < 5; i++) k.handle("down", SNAP);
  assert.equal(k.state.selected, 33);
  k.handle("up", SNAP);
  assert.equal(k.state.selected, 22);
  // The selected backend disappears: selection falls back to the first row.
  k.sync(fleet([11, 33]));
  assert.equal(k.state.selected, 11);
  k.sync(fleet([]));
  assert.equal(k.state.selected, undefined);
  assert.equal(k.handle("x", fleet([])), undefined);
});

Deno.test("KeyController.handle() destroys only after d then y", () => {
  const k = new KeyController();
  k.handle("down", SNAP);
  assert.equal(k.handle("d", SNAP), undefined);
  assert.deepEqual(k.state.confirm, { action: "destroy", id: 22 });
  assert.match(promptFor(k.state, SNAP)!, /Destroy instance 22 \(RTX 4090 ×2\).*\[y\/N\]/);
  assert.deepEqual(k.handle("y", SNAP), { type: "destroy", id: 22 });
  assert.equal(k.state.confirm, undefined);
  assert.equal(promptFor(k.state, SNAP), undefined);
});

Deno.test("KeyController.handle() cancels the destroy prompt on any other key", () => {
  for (const key of ["n", "esc", "d", "x", "q", "down"] as const) {
    const k = new KeyController();
    k.handle("d", SNAP);
    assert.equal(k.handle(key, SNAP), undefined, key);
    assert.equal(k.state.confirm, undefined);
    assert.equal(k.handle("y", SNAP), undefined, "a late y does nothing");
  }
  const k = new KeyController();
  k.handle("d", SNAP);
  assert.deepEqual(k.handle("ctrl-c", SNAP), { type: "quit" });
});

Deno.test("KeyController.handle() toggles help with ? and closes it with Esc", () => {
  const k = new KeyController();
  k.handle("?", SNAP);
  assert.equal(k.state.help, true);
  k.handle("?", SNAP);
  assert.equal(k.state.help, false);
  k.handle("?", SNAP);
  k.handle("esc", SNAP);
  assert.equal(k.state.help, false);
});
