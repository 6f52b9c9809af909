import assert from "node:assert/strict";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { runCli } from "../../lib/cli/cli.ts";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";

const KEY = "test-key-0123456789";

Deno.test("vastproxy list prints a table of the account's instances", async () => {
  const api = startFakeVastApi({
    apiKey: KEY,
    instances: [
      makeInstanceRecord({ id: 101, label: "pool-a" }),
      makeInstanceRecord({ id: 102, actual_status: "loading", label: "pool-b", ports: null }),
    ],
  });
  try {
    const io = memoryIo({ env: { HOME: "/h" } });
    const code = await runCli(["list", "--api-url", api.url, "--api-key", KEY], io);
    assert.equal(code, 0, io.stderr());
    const out = io.stdout();
    assert.match(out, /101/);
    assert.match(out, /102/);
    assert.match(out, /loading/);
    assert.match(out, /151\.237\.25\.16:29283/); // direct SSH of the fixture
    assert.match(out, /ssh6\.vast\.ai:19840/);
    assert.match(out, /vllm/);
    assert.ok(!out.includes("\x1b["), "no ANSI without a TTY");
    assert.ok(!out.includes(KEY));
  } finally {
    await api.close();
  }
});

Deno.test("vastproxy list --json filters by --label and never prints the token", async () => {
  const token = "f".repeat(64);
  const api = startFakeVastApi({
    apiKey: KEY,
    instances: [
      makeInstanceRecord({ id: 201, label: "keep", jupyter_token: token }),
      makeInstanceRecord({ id: 202, label: "other" }),
    ],
  });
  try {
    const io = memoryIo({ env: { HOME: "/h", VAST_API_KEY: KEY } });
    const code = await runCli(["list", "--api-url", api.url, "--json", "--label", "keep"], io);
    assert.equal(code, 0, io.stderr());
    const rows = JSON.parse(io.stdout());
    assert.deepEqual(rows.map((r: { id: number }) => r.id), [201]);
    assert.equal(rows[0].port, 18000);
    assert.equal(rows[0].engine, "vllm");
    assert.ok(!io.stdout().includes(token));
  } finally {
    await api.close();
  }
});

Deno.test("vastproxy list exits 2 when the API key is rejected", async () => {
  const api = startFakeVastApi({ apiKey: KEY, instances: [] });
  try {
    const io = memoryIo({ env: { HOME: "/h" } });
    const code = await runCli(["list", "--api-url", api.url, "--api-key", "wrong-key-xyz"], io);
    assert.equal(code, 2);
    assert.match(io.stderr(), /rejected/i);
    assert.ok(!io.stderr().includes("wrong-key-xyz"));
  } finally {
    await api.close();
  }
});
