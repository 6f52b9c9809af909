/**
 * vast.ai API faults against the real wiring on a FakeClock: 5xx for a while,
 * 429 storms, garbage, `instances: null`, empty pages and a hanging API leave
 * the fleet exactly as it was and traffic flowing; backoff shows in the logs
 * and in the request spacing; the watcher recovers on its own. Instances that
 * change their SSH endpoint or token are rebuilt without dropping traffic.
 * Minutes of API backoff run in well under a second of real time.
 */
import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import type { FaultKind } from "../../lib/sim/fake_vast_api.ts";
import { VastClient } from "../../lib/vast/client.ts";
import { VastApiError } from "../../lib/vast/errors.ts";
import { startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";
import {
  FIRST_ID,
  type LocalProxy,
  randomToken,
  startLocalProxy,
  virtualBaseUrl,
} from "./_local_proxy.ts";
import { fromWebResponse, type RequestHandler } from "../_helpers/fake_tunnel.ts";

const POLL_MS = 1_000;

/** An in-memory engine per tunnel address: answers at once, records what it saw. */
class VirtualUpstream {
  /** `Authorization` seen per instance index, in order. */
  auth = new Map<number, string[]>();
  /** Bodies held open by `/hold` requests, to finish later. */
  held: ReadableStreamDefaultController<Uint8Array>[] = [];
  handler: RequestHandler = (r, tunnel) => {
    const auth = r.headers.find(([n]) => n === "authorization")?.[1] ?? "";
    return fromWebResponse(this.#answer(new URL(r.target, tunnel.baseUrl()), auth));
  };
  #answer = (url: URL, authorization: string): Response => {
    const index = Number(url.port) - 41_000;
    this.auth.set(index, [...(this.auth.get(index) ?? []), authorization]);
    if (url.pathname === "/v1/models") {
      return Response.json({ object: "list", data: [{ id: "m" }] });
    }
    if (url.pathname === "/hold") {
      const body = new ReadableStream<Uint8Array>({
        start: (c) => {
          c.enqueue(new TextEncoder().encode("first;"));
          this.held.push(c);
        },
      });
      return new Response(body);
    }
    return Response.json({ index });
  };
}

/** Records the fake time of every vast API request; aborts ones hanging for 300 ms of real time. */
function vastFetchOn(clock: FakeClock, times: number[]): typeof fetch {
  return async (input, init) => {
    times.push(clock.now());
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(new Error("client gave up after 300 ms")), 300);
    const outer = init?.signal;
    const onAbort = () => ctrl.abort(outer?.reason);
    outer?.addEventListener("abort", onAbort, { once: true });
    try {
      const res = await fetch(input, { ...init, signal: ctrl.signal });
      // Read here so the timer also covers the body.
      const text = await res.text();
      return new Response(text, { status: res.status, headers: res.headers });
    } finally {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onAbort);
    }
  };
}

interface Harness {
  p: LocalProxy;
  clock: FakeClock;
  up: VirtualUpstream;
  apiTimes: number[];
  /** Ticks fake time in `stepMs` steps (yielding to real I/O) until `done()`; checks `each()` every step. */
  drive(what: string, done: () => boolean, each?: () => Promise<void> | void): Promise<void>;
  /** Sends one request through the real listener; it must be answered 200 by an instance. */
  served(): Promise<void>;
  fleetView(): string;
}

async function withHarness(
  fn: (h: Harness) => Promise<void>,
  opts: { instances?: number } = {},
): Promise<void> {
  const clock = new FakeClock(Date.now());
  const up = new VirtualUpstream();
  const apiTimes: number[] = [];
  const p = await startLocalProxy({
    instances: opts.instances ?? 3,
    engines: false,
    clock,
    handler: up.handler,
    vastFetch: vastFetchOn(clock, apiTimes),
    pollIntervalMs: POLL_MS,
    healthIntervalMs: 2_000,
    drainTimeoutMs: 120_000,
  });
  const h: Harness = {
    p,
    clock,
    up,
    apiTimes,
    async drive(what, done, each) {
      for (let step = 0; step < 3_000; step++) {
        if (done()) return;
        await clock.tick(250);
        await new Promise((r) => setTimeout(r, 1));
        await each?.();
      }
      throw new Error(`never happened: ${what}\n${p.logger.text()}`);
    },
    async served() {
      const res = await fetch(`${p.proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"model":"m","messages":[]}',
      });
      const text = await res.text();
      assert.equal(res.status, 200, text);
      assert.ok(res.headers.get("x-vastproxy-instance"));
    },
    fleetView: () =>
      p.proxy.status().backends.map((b) => `${b.id}:${b.state}:${b.drained}`).join(","),
  };
  try {
    await h.drive("3 healthy", () => p.proxy.status().counts.healthy === p.ids.length);
    await fn(h);
  } finally {
    await p.close();
  }
}

/** Scripts `n` faults, then drives until they were all served and a listing succeeded again. */
async function survive(h: Harness, kind: FaultKind, n: number): Promise<void> {
  const before = h.fleetView();
  const tunnelsBefore = h.p.tunnels.opened.length;
  const requestsBefore = h.p.api.state.requestCount;
  h.p.api.state.failNext(n, kind);
  let step = 0;
  await h.drive(
    `${kind} ×${n} healed`,
    () =>
      h.p.api.state.pendingFaults === 0 && h.p.api.state.requestCount > requestsBefore + n &&
      h.p.proxy.status().apiError === null,
    async () => {
      assert.equal(h.fleetView(), before, `fleet changed during ${kind}`);
      if (step++ % 20 === 0) await h.served();
    },
  );
  assert.equal(h.fleetView(), before);
  assert.equal(h.p.tunnels.opened.length, tunnelsBefore, "no tunnel was rebuilt");
  await h.served();
}

/** Retry delays the client logged, in order. */
function loggedRetryDelays(h: Harness): number[] {
  return h.p.logger.records
    .map((r) => /retrying in (\d+) ms/.exec(r.msg)?.[1])
    .filter((d): d is string => d !== undefined)
    .map(Number);
}

Deno.test("vast API faults: 5xx for a while keeps the fleet, backs off visibly, recovers", async () => {
  await withHarness(async (h) => {
    await survive(h, 500, 6);
    await survive(h, 502, 3);
    await survive(h, 503, 3);
    await survive(h, 504, 3);
    const delays = loggedRetryDelays(h);
    assert.ok(delays.length >= 10, `retries logged: ${delays}`);
    // Within one listing the retry delays grow (1 s doubling, half jitter).
    assert.ok(delays.slice(0, 4).every((d, i, a) => i === 0 || d >= a[i - 1]), `${delays}`);
    const failed = h.p.logger.records.filter((r) =>
      r.msg === "vast.ai listing failed; keeping the known fleet"
    );
    assert.ok(failed.length >= 1);
    assert.ok(failed.some((r) => Number(r.fields.failures) >= 1));
  });
});

Deno.test("vast API faults: a 429 storm (text and JSON bodies) is not hammered", async () => {
  await withHarness(async (h) => {
    const from = h.apiTimes.length;
    await survive(h, "429-text", 12);
    await survive(h, "429-json", 12);
    const times = h.apiTimes.slice(from);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    // Never two calls within half the base retry delay while rate-limited.
    assert.ok(Math.min(...gaps) >= 500, `gaps: ${gaps}`);
    assert.ok(h.p.logger.text().includes("rate limit hit (HTTP 429"));
    // The watcher's own backoff grew while the storm lasted.
    const watcherBackoff = h.p.logger.records.filter((r) =>
      r.msg === "vast.ai listing failed; keeping the known fleet"
    ).map((r) => Number(r.fields.failures));
    assert.ok(Math.max(...watcherBackoff) >= 2, `failures: ${watcherBackoff}`);
  });
});

Deno.test("vast API faults: garbage, instances:null, an empty page and a hang change nothing", async () => {
  await withHarness(async (h) => {
    await survive(h, "garbage", 3);
    assert.ok(h.p.logger.text().includes("unreadable answer"));
    // One odd-but-successful answer never drops a backend (two in a row would).
    await survive(h, "nullInstances", 1);
    await survive(h, "emptyPage", 1);
    await survive(h, "hang", 2);
    // Retried inside the same listing, as a network failure.
    assert.ok(h.p.logger.records.some((r) => r.fields.kind === "network"), h.p.logger.text());
  });
});

Deno.test("vast API faults: a changed token or SSH endpoint rebuilds only that backend, without dropping traffic", async () => {
  await withHarness(async (h) => {
    const [a, b, c] = h.p.ids;
    const opened = (id: number) => h.p.tunnels.opened.filter((t) => t.instanceId === id).length;
    // A request held open on b: its old backend must let it finish.
    const held = await fetch(`${h.p.proxy.url}/hold`, {
      headers: { "x-vastproxy-instance": String(b) },
    });
    assert.equal(held.headers.get("x-vastproxy-instance"), String(b));
    const heldBody = held.text();

    const newToken = randomToken();
    h.p.api.state.update(b, { jupyter_token: newToken });
    h.p.api.state.update(c, { ssh_port: 2222 });
    await h.drive(
      "b and c rebuilt and healthy",
      () => opened(b) === 2 && opened(c) === 2 && h.p.proxy.status().counts.healthy === 3,
      async () => {
        // Traffic pinned to the untouched backend is never dropped.
        const res = await fetch(`${h.p.proxy.url}/x`, {
          headers: { "x-vastproxy-instance": String(a) },
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("x-vastproxy-instance"), String(a));
        await res.body?.cancel();
      },
    );
    assert.equal(opened(a), 1, "the untouched backend kept its tunnel");
    assert.equal(
      h.p.tunnels.opened.find((t) =>
        t.instanceId === c && t.spec.endpoints
          .some((e) => e.port === 2222)
      )?.instanceId,
      c,
    );

    // The held request still completes on the old connection.
    h.up.held[0].enqueue(new TextEncoder().encode("second"));
    h.up.held[0].close();
    assert.equal(await heldBody, "first;second");
    await h.drive(
      "old backend of b closed",
      () => h.p.tunnels.opened.filter((t) => t.instanceId === b)[0].closeCalls.length > 0,
    );

    // New requests to b carry the new token.
    const res = await fetch(`${h.p.proxy.url}/y`, {
      headers: { "x-vastproxy-instance": String(b) },
    });
    await res.body?.cancel();
    assert.equal(h.up.auth.get(b - FIRST_ID)?.at(-1), `Bearer ${newToken}`);
    assert.equal(h.p.baseUrlOf(b), virtualBaseUrl(b - FIRST_ID));
  });
});

Deno.test("VastClient gives up on a hanging API after its own timeout, naming the fix", async () => {
  const api = startFakeVastApi({ apiKey: "k".repeat(20), instances: [] });
  try {
    api.state.failNext(1, "hang");
    const client = new VastClient({
      apiKey: "k".repeat(20),
      apiUrl: api.url,
      timeoutMs: 150,
      maxRetries: 0,
    });
    const started = Date.now();
    await assert.rejects(client.listInstances(), (err: unknown) => {
      assert.ok(err instanceof VastApiError);
      assert.equal(err.kind, "network");
      assert.match(err.message, /did not answer within 150 ms.*check your network or --api-url/);
      assert.ok(!err.message.includes("k".repeat(20)));
      return true;
    });
    assert.ok(Date.now() - started < 2_000);
  } finally {
    await api.close();
  }
});
