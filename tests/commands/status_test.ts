/**
 * `vastproxy status` against a real proxy (`startProxy` on a small simulated
 * fleet, with a client token), and against nothing at all.
 */
import assert from "node:assert/strict";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { runCli } from "../../lib/cli/cli.ts";
import { statusCommand } from "../../lib/commands/status.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import type { StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { type RunningProxy, startProxy } from "../../lib/app/proxy_app.ts";
import { type SimFleet, startSimFleet } from "../../lib/sim/fleet.ts";
import { eventually } from "../_helpers/e2e_fleet.ts";
import { freePort } from "../_helpers/sshd.ts";
import { testServeConfig, testTunnelFactory } from "../_helpers/config.ts";

const PROXY_TOKEN = "status-test-proxy-token-4f1e";

/** A 3-instance sim fleet behind a proxy that wants `PROXY_TOKEN`, all healthy. */
async function withProxy(fn: (proxy: RunningProxy, sim: SimFleet) => Promise<void>) {
  const sim = await startSimFleet({ instances: 3, tokenDelayMs: [0, 1] });
  const logger = new MemoryLogger();
  const config = testServeConfig({
    apiKey: sim.apiKey,
    apiUrl: sim.apiUrl,
    authToken: PROXY_TOKEN,
    sshKeys: [sim.clientKeyPath],
    knownHosts: sim.knownHostsPath,
    pollIntervalMs: 500,
    drainTimeoutMs: 500,
  });
  let proxy: RunningProxy | undefined;
  try {
    proxy = await startProxy(config, {
      logger,
      tunnelFactory: testTunnelFactory(sim.clientKeyPath, sim.knownHostsPath, { logger }),
    });
    const p = proxy;
    await eventually("3 healthy backends", () => p.status().counts.healthy === 3);
    await fn(proxy, sim);
  } finally {
    await proxy?.shutdown(500);
    await sim.close();
  }
}

Deno.test("statusCommand() prints one table row per backend of a running proxy", async () => {
  await withProxy(async (proxy) => {
    const io = memoryIo({ env: { VASTPROXY_AUTH_TOKEN: PROXY_TOKEN } });
    assert.equal(await statusCommand({ url: proxy.url }, io, { columns: 200 }), 0);
    const out = io.stdout();
    assert.match(out, /healthy 3\/3/);
    assert.match(out, /\bID\b.*\bSTATE\b.*\bMODEL\b/);
    const backends = proxy.status().backends;
    assert.equal(backends.length, 3);
    for (const b of backends) {
      const row = out.split("\n").find((l) => l.includes(String(b.id)));
      assert.ok(row, `no row for ${b.id} in:\n${out}`);
      assert.match(row, /healthy/);
      assert.ok(row.includes(b.models[0]), `${b.models[0]} in ${row}`);
    }
    assert.ok(out.includes("🐇") && out.includes("🐢"), "both SSH paths shown");
    assert.equal(io.stderr(), "");
  });
});

Deno.test("statusCommand() --json prints the status JSON without any secret", async () => {
  await withProxy(async (proxy, sim) => {
    const io = memoryIo();
    const code = await statusCommand(
      { url: `${proxy.url}/`, authToken: PROXY_TOKEN, json: true },
      io,
    );
    assert.equal(code, 0);
    const parsed = JSON.parse(io.stdout()) as StatusSnapshot;
    assert.equal(parsed.backends.length, 3);
    assert.deepEqual(
      parsed.backends.map((b) => b.id).sort(),
      sim.instances.map((i) => i.id).sort(),
    );
    const secrets = [
      PROXY_TOKEN,
      sim.apiKey,
      ...sim.instances.map((i) => String(i.record.jupyter_token)),
    ];
    for (const s of secrets) assert.ok(!io.stdout().includes(s), "a secret leaked into --json");
  });
});

Deno.test("statusCommand() without the proxy's token exits 1 and names --auth-token", async () => {
  await withProxy(async (proxy) => {
    const io = memoryIo();
    assert.equal(await statusCommand({ url: proxy.url }, io), 1);
    assert.match(io.stderr(), /rejected the request \(401\).*--auth-token/);
    assert.equal(io.stdout(), "");
    const wrong = memoryIo();
    assert.equal(await statusCommand({ url: proxy.url, authToken: "nope" }, wrong), 1);
    assert.match(wrong.stderr(), /--auth-token or set VASTPROXY_AUTH_TOKEN/);
  });
});

Deno.test("statusCommand() on a port nobody listens on exits 1 saying it cannot reach it", async () => {
  const url = `http://127.0.0.1:${freePort()}`;
  const io = memoryIo();
  assert.equal(await statusCommand({ url }, io), 1);
  assert.match(io.stderr(), new RegExp(`cannot reach vastproxy at ${url}.*is it running\\?`));
  assert.equal(io.stdout(), "");
});

Deno.test("vastproxy status --url with a non-http URL is a usage error (exit 2)", async () => {
  const io = memoryIo();
  assert.equal(await runCli(["status", "--url", "ftp://127.0.0.1:8080"], io), 2);
  assert.match(io.stderr(), /--url: .*not an http\(s\) URL/);
});
