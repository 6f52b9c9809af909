import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import {
  type FakeVastApi,
  makeInstanceRecord,
  startFakeVastApi,
} from "../../lib/sim/fake_vast_api.ts";
import { VastClient, type VastClientOptions } from "../../lib/vast/client.ts";
import { VastApiError } from "../../lib/vast/errors.ts";

const KEY = "k3y-5ecret-0123456789abcdef";

/** Records every sleep so tests can assert the backoff that happened. */
class RecordingClock extends FakeClock {
  readonly sleeps: number[] = [];
  override sleep(ms: number, signal?: AbortSignal): Promise<void> {
    this.sleeps.push(ms);
    return super.sleep(ms, signal);
  }
}

/** Lets real I/O (the fake server) make progress; not a timed sleep. */
const macrotask = () => new Promise<void>((r) => setTimeout(r, 0));

/** Settles `p`, advancing the fake clock whenever the client parks in a backoff sleep. */
async function drive<T>(clock: FakeClock, p: Promise<T>): Promise<T> {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < 5_000 && !done; i++) {
    await macrotask();
    if (clock.pending > 0) await clock.tick(60_000);
  }
  return p;
}

function ids(n: number, from = 1000): ReturnType<typeof makeInstanceRecord>[] {
  return Array.from({ length: n }, (_, i) => makeInstanceRecord({ id: from + i }));
}

async function withFake(
  fakeOpts: {
    instances?: ReturnType<typeof makeInstanceRecord>[];
    pageSize?: number;
    v1?: boolean;
  },
  fn: (
    ctx: { api: FakeVastApi; client: VastClient; clock: RecordingClock; logger: MemoryLogger },
  ) => Promise<void>,
  clientOpts: Partial<VastClientOptions> = {},
): Promise<void> {
  const api = startFakeVastApi({ apiKey: KEY, ...fakeOpts });
  const clock = new RecordingClock();
  const logger = new MemoryLogger(() => clock.now());
  const client = new VastClient({
    apiKey: KEY,
    apiUrl: api.url,
    clock,
    logger,
    random: () => 0,
    timeoutMs: 2_000,
    pageIntervalMs: 0,
    ...clientOpts,
  });
  try {
    await fn({ api, client, clock, logger });
  } finally {
    await api.close();
  }
}

async function rejection(p: Promise<unknown>): Promise<VastApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof VastApiError, `expected VastApiError, got ${err}`);
    return err;
  }
  throw new Error("expected a rejection");
}

Deno.test("VastClient.listInstances() follows next_token over 3 pages", async () => {
  await withFake({ instances: ids(60), pageSize: 25 }, async ({ api, client }) => {
    const records = await client.listInstances();
    assert.deepEqual(records.map((r) => r.id), ids(60).map((r) => r.id));
    const urls = api.state.requests.map((r) => new URL(r.url));
    assert.deepEqual(urls.map((u) => u.pathname), Array(3).fill("/api/v1/instances/"));
    assert.deepEqual(urls.map((u) => u.searchParams.get("limit")), ["25", "25", "25"]);
    assert.equal(urls[0].searchParams.has("after_token"), false);
    assert.match(urls[1].searchParams.get("after_token")!, /^tok_/);
    assert.notEqual(
      urls[1].searchParams.get("after_token"),
      urls[2].searchParams.get("after_token"),
    );
  });
});

Deno.test("VastClient.listInstances() paces v1 pages one second apart (vast's rate limit)", async () => {
  await withFake({ instances: ids(60), pageSize: 25 }, async ({ api, client, clock }) => {
    const records = await drive(clock, client.listInstances());
    assert.equal(records.length, 60);
    assert.equal(api.state.requests.length, 3);
    assert.deepEqual(clock.sleeps, [1_000, 1_000]);
  }, { pageIntervalMs: 1_000 });
});

Deno.test("VastClient sends the key only as a Bearer header, never in a URL", async () => {
  await withFake({ instances: ids(30), pageSize: 10 }, async ({ api, client }) => {
    await client.listInstances();
    await client.setLabel(1000, "x");
    await client.destroy(1001);
    assert.equal(api.state.requestCount, 5);
    for (const req of api.state.requests) {
      assert.equal(req.headers.get("authorization"), `Bearer ${KEY}`);
      assert.equal(req.url.includes(KEY), false);
      assert.equal(decodeURIComponent(req.url).includes(KEY), false);
    }
  });
});

Deno.test("VastClient.listInstances() falls back to v0 on a v1 404 and remembers it", async () => {
  await withFake({ instances: ids(3), v1: false }, async ({ api, client }) => {
    assert.deepEqual((await client.listInstances()).map((r) => r.id), [1000, 1001, 1002]);
    assert.deepEqual(api.state.requests.map((r) => r.path), [
      "/api/v1/instances/",
      "/api/v0/instances/",
    ]);
    assert.equal(new URL(api.state.requests[1].url).searchParams.get("owner"), "me");
    await client.listInstances();
    assert.deepEqual(api.state.requests.slice(2).map((r) => r.path), ["/api/v0/instances/"]);
  });
});

Deno.test("VastClient: 401 is an auth error, not retried, without the key", async () => {
  await withFake({ instances: ids(1) }, async ({ api, client, clock }) => {
    const err = await rejection(drive(clock, client.listInstances()));
    assert.equal(err.kind, "auth");
    assert.equal(err.status, 401);
    assert.equal(err.retryable, false);
    assert.match(err.message, /API key rejected \(HTTP 401\).*check --api-key \/ VAST_API_KEY/);
    assert.equal(err.message.includes("wrong-key"), false);
    assert.equal(api.state.requestCount, 1);
    assert.deepEqual(clock.sleeps, []);
  }, { apiKey: "wrong-key" });
});

Deno.test("VastClient retries 429 (text and JSON) with backoff, then succeeds", async () => {
  await withFake({ instances: ids(2) }, async ({ api, client, clock, logger }) => {
    api.state.failNext(1, "429-text");
    api.state.failNext(1, "429-json");
    const records = await drive(clock, client.listInstances());
    assert.deepEqual(records.map((r) => r.id), [1000, 1001]);
    assert.equal(api.state.requestCount, 3);
    assert.deepEqual(clock.sleeps, [1000, 2000]);
    const warns = logger.records.filter((r) => r.level === "warn");
    assert.equal(warns.length, 2);
    assert.equal(warns[0].fields.kind, "rate-limited");
    assert.equal(logger.text().includes(KEY), false);
  });
});

Deno.test("VastClient gives up on a persistent 500 after maxRetries", async () => {
  await withFake({ instances: ids(1) }, async ({ api, client, clock }) => {
    api.state.failNext(10, 500);
    const err = await rejection(drive(clock, client.listInstances()));
    assert.equal(err.kind, "server");
    assert.equal(err.status, 500);
    assert.equal(err.retryable, true);
    assert.match(err.message, /HTTP 500/);
    assert.equal(api.state.requestCount, 3);
    assert.deepEqual(clock.sleeps, [1000, 2000]);
  }, { maxRetries: 2 });
});

Deno.test("VastClient times out a hanging request as a network error", async () => {
  await withFake({ instances: ids(1) }, async ({ api, client, clock }) => {
    api.state.failNext(1, "hang");
    const err = await rejection(drive(clock, client.listInstances()));
    assert.equal(err.kind, "network");
    assert.match(err.message, /did not answer within 200 ms/);
    assert.equal(api.state.requestCount, 1);
  }, { timeoutMs: 200, maxRetries: 0 });
});

Deno.test("VastClient retries after a timeout and then succeeds", async () => {
  await withFake({ instances: ids(1) }, async ({ api, client, clock }) => {
    api.state.failNext(1, "hang");
    const records = await drive(clock, client.listInstances());
    assert.equal(records.length, 1);
    assert.equal(api.state.requestCount, 2);
    assert.deepEqual(clock.sleeps, [1000]);
  }, { timeoutMs: 200 });
});

Deno.test("VastClient reports a non-JSON 200 as bad-response without retrying", async () => {
  await withFake({ instances: ids(1) }, async ({ api, client, clock }) => {
    api.state.failNext(1, "garbage");
    const err = await rejection(drive(clock, client.listInstances()));
    assert.equal(err.kind, "bad-response");
    assert.equal(err.retryable, false);
    assert.equal(api.state.requestCount, 1);
  });
});

Deno.test("VastClient treats instances: null as an empty listing", async () => {
  await withFake({ instances: ids(3) }, async ({ api, client }) => {
    api.state.failNext(1, "nullInstances");
    assert.deepEqual(await client.listInstances(), []);
    assert.equal((await client.listInstances()).length, 3);
  });
});

Deno.test("VastClient skips one malformed record, logging its id and field", async () => {
  const bad = makeInstanceRecord({ id: 4242, ssh_port: "22" });
  const noId = makeInstanceRecord({ id: "nope" as unknown as number });
  await withFake({ instances: [...ids(2), bad] }, async ({ api, client, logger }) => {
    assert.deepEqual((await client.listInstances()).map((r) => r.id), [1000, 1001]);
    const warn = logger.records.find((r) => r.level === "warn")!;
    assert.match(warn.msg, /instance 4242: field ssh_port/);
    assert.equal(warn.fields.instance, "4242");
    assert.equal(warn.fields.field, "ssh_port");
    api.state.instances = [noId, ...ids(1)];
    assert.equal((await client.listInstances()).length, 1);
    assert.match(logger.text(), /instance nope: field id/);
  });
});

Deno.test("VastClient.setLabel() and destroy() use the right method, path and body", async () => {
  await withFake({ instances: ids(3) }, async ({ api, client }) => {
    await client.setLabel(1001, "vastproxy-healthy");
    await client.setLabel(1002, null);
    await client.destroy(1000);
    const reqs = api.state.requests.map((r) => [r.method, r.path, r.body]);
    assert.deepEqual(reqs, [
      ["PUT", "/api/v0/instances/1001/", '{"label":"vastproxy-healthy"}'],
      ["PUT", "/api/v0/instances/1002/", '{"label":""}'],
      ["DELETE", "/api/v0/instances/1000/", ""],
    ]);
    assert.equal(api.state.find(1001)?.label, "vastproxy-healthy");
    assert.equal(api.state.find(1002)?.label, "");
    assert.equal(api.state.find(1000), undefined);
    const err = await rejection(client.destroy(1000));
    assert.equal(err.kind, "not-found");
    assert.match(err.message, /instance 1000 not found .*destroyed/);
  });
});

Deno.test("VastClient stops paginating when next_token repeats", async () => {
  let calls = 0;
  const fetchStub = (() => {
    calls++;
    const body = { instances: [makeInstanceRecord({ id: calls })], next_token: "same" };
    return Promise.resolve(new Response(JSON.stringify(body)));
  }) as typeof fetch;
  const client = new VastClient({ apiKey: KEY, apiUrl: "http://127.0.0.1:9", fetch: fetchStub });
  const err = await rejection(client.listInstances());
  assert.equal(err.kind, "bad-response");
  assert.match(err.message, /repeated a next_token/);
  assert.equal(calls, 2);
});

Deno.test("VastClient retries network failures and says what to check", async () => {
  let calls = 0;
  const fetchStub = (() => {
    calls++;
    return Promise.reject(new TypeError("connection refused"));
  }) as typeof fetch;
  const clock = new RecordingClock();
  const client = new VastClient({
    apiKey: KEY,
    apiUrl: "http://127.0.0.1:9",
    fetch: fetchStub,
    clock,
    random: () => 0.5,
    maxRetries: 1,
  });
  const err = await rejection(drive(clock, client.listInstances()));
  assert.equal(err.kind, "network");
  assert.match(err.message, /Cannot reach the vast.ai API at http:\/\/127.0.0.1:9.*--api-url/);
  assert.equal(calls, 2);
  assert.deepEqual(clock.sleeps, [750]); // 1000 ms minus half of the 0.5 jitter share
});

Deno.test("VastClient passes an abort during backoff through as the abort reason", async () => {
  await withFake({ instances: ids(1) }, async ({ api, client, clock }) => {
    api.state.failNext(5, 502);
    const ctl = new AbortController();
    const p = client.listInstances(ctl.signal);
    while (clock.pending === 0) await macrotask();
    ctl.abort(new Error("stop"));
    await assert.rejects(p, { message: "stop" });
    assert.equal(api.state.requestCount, 1);
  });
});
