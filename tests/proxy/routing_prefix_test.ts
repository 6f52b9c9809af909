/**
 * The prompt's prefix in routing, end to end through the relay: it is read
 * whenever a policy has a choice to make (also for a request the admission
 * queue releases later), and a pick with no choice still records it (after
 * the request left), so affinity never falls back on an older record.
 * Found by a hostile review of a change that skipped the prefix with one
 * backend up; kept as the cases that change got wrong.
 *
 * No engines: targets answer through `FakeTarget.sender`.
 */
import assert from "node:assert/strict";
import { Admission } from "../../lib/proxy/admission.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import type { RouteTarget } from "../../lib/proxy/pool.ts";
import type { RouteInfo } from "../../lib/proxy/route_info.ts";
import { createHandler, type RelayDeps, type RequestLogLine } from "../../lib/proxy/relay.ts";
import { Http1Error, type Http1Response } from "../../lib/http1/types.ts";
import { eventually, FakePool, FakeTarget } from "../_helpers/fake_pool.ts";

const P = "http://proxy.test";

function ok(): Promise<Http1Response> {
  const body = new TextEncoder().encode("{}");
  return Promise.resolve({
    status: 200,
    statusText: "OK",
    headers: [["content-type", "application/json"], ["content-length", String(body.byteLength)]],
    body,
  });
}

function targets(n: number, models?: string[][]): FakeTarget[] {
  return Array.from({ length: n }, (_, i) => {
    const t = new FakeTarget(i + 1, models ? { models: models[i] } : {});
    t.sender = ok;
    return t;
  });
}

function relay(pool: FakePool, over: Partial<RelayDeps>) {
  const lines: RequestLogLine[] = [];
  const h = createHandler({
    pool,
    policy: createPolicy("least-inflight"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1 << 20,
    onRequestLog: (l) => lines.push(l),
    ...over,
  });
  return { h, lines };
}

function completion(
  prompt: string,
  headers: Record<string, string> = {},
  model = "fake-model",
): Request {
  return new Request(`${P}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ model, prompt, max_tokens: 1 }),
  });
}

function chat(messages: { role: string; content: string }[]): Request {
  return new Request(`${P}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "fake-model", messages, max_tokens: 1 }),
  });
}

/** A policy that records what it was asked to choose between. */
function spyPolicy() {
  const calls: { ids: number[]; prefix: readonly number[] | undefined }[] = [];
  const policy = {
    name: "spy",
    usesPrefix: true,
    select: (c: readonly RouteTarget[], route: RouteInfo) => {
      calls.push({ ids: c.map((t) => t.id), prefix: route.prefix });
      return c[c.length - 1];
    },
    saturated: () => false,
  };
  return { policy: policy as unknown as RelayDeps["policy"], calls };
}

// A request held by the admission queue is routed when it is released: if
// a second backend came up meanwhile, that is a real choice, and it gets the
// prefix like any other.
Deno.test("a held request that ends up choosing between two backends gets the prefix", async () => {
  const t = targets(2);
  t[1].routable = false; // only instance 1 is up when the request arrives
  let saturated = true;
  const admission = new Admission({ saturated: () => saturated, pollMs: 5 });
  const spy = spyPolicy();
  const { h } = relay(new FakePool(t), { policy: spy.policy, admission });

  const pending = h(completion("x".repeat(200))); // three full 64-char blocks
  await eventually(() => admission.stats().depth === 1);
  // Instance 2 comes up and instance 1 frees a slot: a real choice now.
  t[1].routable = true;
  saturated = false;
  admission.wake();
  const res = await pending;
  assert.equal(res.status, 200);
  await res.body?.cancel();

  assert.equal(spy.calls.length, 1);
  assert.deepEqual(spy.calls[0].ids, [1, 2], "the held request chose between two backends");
  assert.equal(
    spy.calls[0].prefix?.length,
    3,
    "a choice between two backends was made without the prompt's prefix",
  );
});

// A backend that flaps (its tunnel or health check down for a moment, common
// over SSH) must not pull a conversation back when it returns: the turn sent
// while the survivor was alone is recorded against the survivor, so its
// longer prefix wins over the flapping backend's older, shorter one.
Deno.test("a backend that flapped does not pull a conversation back to its shorter prefix", async () => {
  const t = targets(2);
  const pool = new FakePool(t);
  const policy = createPolicy("cache-aware");
  // Wired as proxy_app.ts wires it.
  const admission = new Admission({ saturated: (x, e) => policy.saturated!(x, e) });
  const { h, lines } = relay(pool, { policy, admission });
  const send = async (req: Request) => {
    const res = await h(req);
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    await eventually(() => t.every((x) => x.inFlight === 0));
    return lines[lines.length - 1].instance!;
  };
  const system = { role: "system", content: "You are a helpful assistant. ".repeat(10) };
  const turn1 = [system, { role: "user", content: "First question, fairly long. ".repeat(5) }];
  const turn2 = [
    ...turn1,
    { role: "assistant", content: "First answer, also long enough. ".repeat(5) },
    { role: "user", content: "Second question, fairly long. ".repeat(5) },
  ];
  const turn3 = [
    ...turn2,
    { role: "assistant", content: "Second answer, also long enough. ".repeat(5) },
    { role: "user", content: "Third question. ".repeat(5) },
  ];

  const first = await send(chat(turn1));
  const flapping = t.find((x) => x.id === first)!;
  const survivor = t.find((x) => x.id !== first)!;
  flapping.routable = false; // its tunnel drops for a moment
  assert.equal(await send(chat(turn2)), survivor.id);
  flapping.routable = true; // and comes back
  assert.equal(
    await send(chat(turn3)),
    survivor.id,
    "turn 3 went back to the backend holding only turn 1, not the one that served turn 2",
  );
});

// A retry routes over the backends routable now, not the list of the first attempt.
Deno.test("a retry after a transport failure routes over the current routable list", async () => {
  const t = targets(2);
  t[1].routable = false;
  t[0].sender = () => {
    // Instance 1 fails before sending and leaves; instance 2 comes up meanwhile.
    t[0].routable = false;
    t[1].routable = true;
    return Promise.reject(new Http1Error("no channel", { sent: false }));
  };
  const { h, lines } = relay(new FakePool(t), { policy: createPolicy("least-inflight") });
  const res = await h(completion("hello"));
  assert.equal(res.status, 200, "the retry must see instance 2, which is routable by then");
  await res.body?.cancel();
  assert.equal(lines[0].instance, 2);
  assert.equal(lines[0].attempts, 2);
  assert.equal(t[0].acquires, 1, "instance 1 was not retried from a stale list");
});

Deno.test("a pin still wins, and model eligibility still applies, with one backend up", async () => {
  for (const over of [{}, { admission: new Admission({ saturated: () => false }) }]) {
    const t = targets(3, [["a"], ["b"], ["a"]]);
    const spy = spyPolicy();
    // The fleet's models whatever their state, as Fleet.knownModels gives them.
    const pool = Object.assign(new FakePool(t), { knownModels: () => new Set(["a", "b"]) });
    const { h, lines } = relay(pool, { policy: spy.policy, ...over });
    // Several routable, pinned: the pin goes through without the policy.
    let res = await h(completion("x".repeat(200), { "x-vastproxy-instance": "1" }, "a"));
    assert.equal(res.status, 200);
    await res.body?.cancel();
    assert.equal(lines.at(-1)!.instance, 1);
    assert.equal(spy.calls.length, 0);
    // One backend up and it serves another model of a multi-model fleet:
    // still 503 for the model (its servers are down), not routed to it.
    t[0].routable = false;
    t[2].routable = false;
    res = await h(completion("x".repeat(200), {}, "a"));
    assert.equal(res.status, 503);
    await res.body?.cancel();
    // Three up, the model served by two: the policy chooses between those two, with the prefix.
    t[0].routable = true;
    t[2].routable = true;
    res = await h(completion("x".repeat(200), {}, "a"));
    assert.equal(res.status, 200);
    await res.body?.cancel();
    assert.deepEqual(spy.calls.at(-1)!.ids, [1, 3]);
    assert.equal(spy.calls.at(-1)!.prefix?.length, 3);
  }
});
