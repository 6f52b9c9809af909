import assert from "node:assert/strict";
import { createAdminHandler } from "../../lib/proxy/admin.ts";
import { LatencyHistogram } from "../../lib/proxy/histogram.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { createHandler } from "../../lib/proxy/relay.ts";
import type { StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { backendSnapshot, FakePool, FakeTarget, statusSnapshot } from "../_helpers/fake_pool.ts";

const P = "http://proxy.test";
const INSTANCE_TOKEN = "f".repeat(64);

function admin(status: () => StatusSnapshot, histograms?: () => Map<number, LatencyHistogram>) {
  return createAdminHandler({ status, histograms });
}

Deno.test("admin /vastproxy/status serves the snapshot as JSON without tokens", async () => {
  const snap = statusSnapshot([
    backendSnapshot({ id: 1 }),
    backendSnapshot({ id: 2, state: "unhealthy" }),
  ]);
  // Wire it through the relay, with tokens configured everywhere, to check none leaks.
  const pool = new FakePool([new FakeTarget(1, { auth: `Bearer ${INSTANCE_TOKEN}` })]);
  const h = createHandler({
    pool,
    policy: createPolicy("least-inflight"),
    stickyHeader: null,
    authToken: "proxy-secret-token",
    maxBodyBytes: 1024,
    admin: admin(() => snap),
  });
  const res = await h(
    new Request(`${P}/vastproxy/status`, {
      headers: { authorization: "Bearer proxy-secret-token" },
    }),
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/json");
  const text = await res.text();
  assert.deepEqual(JSON.parse(text), snap);
  assert.doesNotMatch(text, /proxy-secret-token/);
  assert.doesNotMatch(text, new RegExp(INSTANCE_TOKEN));
});

Deno.test("admin /vastproxy/healthz is 200 with a healthy backend, else 503", async () => {
  let snap = statusSnapshot([
    backendSnapshot({ id: 1 }),
    backendSnapshot({ id: 2, state: "connecting" }),
  ]);
  const h = admin(() => snap);
  const ok = h(new Request(`${P}/vastproxy/healthz`));
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { status: "ok", healthy: 1, total: 2 });
  snap = statusSnapshot([backendSnapshot({ id: 2, state: "unhealthy" })]);
  const down = h(new Request(`${P}/vastproxy/healthz`));
  assert.equal(down.status, 503);
  assert.deepEqual(await down.json(), { status: "unavailable", healthy: 0, total: 1 });
  snap = statusSnapshot([]);
  const empty = h(new Request(`${P}/vastproxy/healthz/`));
  assert.equal(empty.status, 503);
  await empty.body?.cancel();
});

Deno.test("admin /vastproxy/metrics serves Prometheus text with histograms", async () => {
  const hist = new LatencyHistogram();
  hist.observe(120);
  const h = admin(
    () => statusSnapshot([backendSnapshot({ id: 4, requests: 1 })]),
    () => new Map([[4, hist]]),
  );
  const res = h(new Request(`${P}/vastproxy/metrics`));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await res.text();
  assert.match(text, /^vastproxy_requests_total\{instance="4"\} 1$/m);
  assert.match(text, /^vastproxy_request_duration_seconds_bucket\{instance="4",le="\+Inf"\} 1$/m);
});

Deno.test("admin answers 404 JSON for unknown /vastproxy/ paths and 405 for other methods", async () => {
  const h = admin(() => statusSnapshot([]));
  const missing = h(new Request(`${P}/vastproxy/nope`));
  assert.equal(missing.status, 404);
  const body = await missing.json();
  assert.equal(body.error.code, "not_found");
  const post = h(new Request(`${P}/vastproxy/status`, { method: "POST" }));
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD");
  await post.body?.cancel();
  const head = h(new Request(`${P}/vastproxy/status`, { method: "HEAD" }));
  assert.equal(head.status, 200);
  assert.equal(head.body, null);
});

Deno.test("relay sends /vastproxy/* to admin and dot segments cannot escape it", async () => {
  const pool = new FakePool([new FakeTarget(1, { models: ["m"] })]);
  const h = createHandler({
    pool,
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1024,
    admin: admin(() => statusSnapshot([backendSnapshot({ id: 1 })])),
  });
  const status = await h(new Request(`${P}/vastproxy/./status`));
  assert.equal((await status.json()).backends[0].id, 1);
  // `/vastproxy/../v1/models` is `/v1/models`: the proxy's model list, not admin.
  const models = await h(new Request(`${P}/vastproxy/../v1/models`));
  assert.equal((await models.json()).object, "list");
  const unknown = await h(new Request(`${P}/vastproxy/x/../../vastproxy/nothing`));
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error.code, "not_found");
});
