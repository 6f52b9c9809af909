/**
 * startProxy() wiring without SSH: fake tunnels point straight at fake
 * engines, so shutdown behaviour is tested with real sockets but no sshd.
 */
import assert from "node:assert/strict";
import type { ServeConfig } from "../../lib/cli/config_types.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { startProxy } from "../../lib/app/proxy_app.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";
import { testServeConfig } from "../_helpers/config.ts";
import { FakeTunnelFactory } from "../_helpers/fake_tunnel.ts";

function config(apiUrl: string): ServeConfig {
  return testServeConfig({
    apiKey: "server-test-key",
    apiUrl,
    healthIntervalMs: 100,
    drainTimeoutMs: 300,
  });
}

Deno.test("startProxy().shutdown() finishes even when a client stalls mid-upload", async () => {
  const engine = await startFakeEngine({ model: "m" });
  const api = startFakeVastApi({
    apiKey: "server-test-key",
    instances: [makeInstanceRecord({ id: 11, jupyter_token: null })],
  });
  const factory = new FakeTunnelFactory({
    autoUp: { baseUrl: engine.url, path: "direct", endpoint: "127.0.0.1:22" },
  });
  const logger = new MemoryLogger();
  const proxy = await startProxy(config(api.url), { logger, tunnelFactory: factory });
  try {
    const deadline = Date.now() + 5_000;
    while (proxy.status().counts.healthy < 1 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(proxy.status().counts.healthy, 1);
    // A client that sends headers and half its body, then goes quiet.
    const port = Number(new URL(proxy.url).port);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
        'Content-Length: 1000\r\n\r\n{"model":',
    ));
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    await proxy.shutdown(300);
    const took = Date.now() - started;
    assert.ok(took < 4_000, `shutdown took ${took} ms`);
    assert.match(logger.text(), /stopped/);
    conn.close();
  } finally {
    await proxy.shutdown(0);
    await api.close();
    await engine.close();
  }
});
