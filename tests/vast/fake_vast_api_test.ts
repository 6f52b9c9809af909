import assert from "node:assert/strict";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";

const KEY = "fake-key-0001";

async function call(url: string, init: RequestInit = {}, key: string | null = KEY) {
  const headers = new Headers(init.headers);
  if (key !== null) headers.set("authorization", `Bearer ${key}`);
  const res = await fetch(url, { ...init, headers });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) };
}

Deno.test("startFakeVastApi() answers auth errors like vast: 403 without key, 401 wrong key", async () => {
  const api = startFakeVastApi({ apiKey: KEY });
  try {
    assert.equal((await call(`${api.url}/api/v0/instances/`, {}, null)).status, 403);
    const wrong = await call(`${api.url}/api/v0/instances/`, {}, "nope");
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.json(), {
      success: false,
      error: "auth_error",
      msg: "Invalid user key",
    });
  } finally {
    await api.close();
  }
});

Deno.test("startFakeVastApi() rejects an unknown after_token with 400 invalid_token", async () => {
  const api = startFakeVastApi({ apiKey: KEY, instances: [makeInstanceRecord()] });
  try {
    const res = await call(`${api.url}/api/v1/instances/?limit=25&after_token=bogus`);
    assert.equal(res.status, 400);
    assert.equal(res.json().error, "invalid_token");
  } finally {
    await api.close();
  }
});

Deno.test("startFakeVastApi() serves one instance, PUT state, and 404 no_such_instance", async () => {
  const api = startFakeVastApi({ apiKey: KEY, instances: [makeInstanceRecord({ id: 5 })] });
  try {
    assert.equal((await call(`${api.url}/api/v0/instances/5/?owner=me`)).json().instances.id, 5);
    assert.equal((await call(`${api.url}/api/v0/instances/6/?owner=me`)).json().instances, null);
    const put = await call(`${api.url}/api/v0/instances/5/`, {
      method: "PUT",
      body: JSON.stringify({ state: "stopped" }),
    });
    assert.equal(put.status, 200);
    assert.equal(api.state.find(5)?.actual_status, "stopped");
    const missing = await call(`${api.url}/api/v0/instances/6/`, { method: "PUT", body: "{}" });
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.json(), {
      success: false,
      error: "no_such_instance",
      msg: "Instance 6 not found.",
    });
  } finally {
    await api.close();
  }
});

Deno.test("startFakeVastApi() close() answers a hanging request", async () => {
  const api = startFakeVastApi({ apiKey: KEY });
  api.state.failNext(1, "hang");
  const pending = call(`${api.url}/api/v0/instances/`);
  while (api.state.requestCount === 0) await new Promise((r) => setTimeout(r, 0));
  await api.close();
  assert.equal((await pending).status, 503);
  await api.close(); // idempotent
});

Deno.test("makeInstanceRecord() copies the fixture and applies overrides", () => {
  const a = makeInstanceRecord({ id: 1, label: null });
  const b = makeInstanceRecord();
  assert.equal(a.id, 1);
  assert.equal(a.label, null);
  assert.equal(b.id, 25078234);
  (a.extra_env as unknown[]).length = 0;
  assert.equal((b.extra_env as unknown[]).length, 13);
});
