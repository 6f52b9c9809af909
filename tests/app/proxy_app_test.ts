/**
 * startProxy() wiring without SSH: fake tunnels point straight at fake
 * engines, so shutdown behaviour is tested with real sockets but no sshd.
 */
import assert from "node:assert/strict";
import type { ServeConfig } from "../../lib/app/serve_config.ts";
import { FakeClock } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { startProxy } from "../../lib/app/proxy_app.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";
import { testServeConfig } from "../_helpers/config.ts";
import { FakeTunnelFactory } from "../_helpers/fake_tunnel.ts";
import { eventually } from "../_helpers/e2e_fleet.ts";
import { packetCipherInstalled } from "../../lib/tunnel/packet_cipher.ts";

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
  // Shutdown's drain timeout and grace period run on this clock, so the
  // test moves time past them instead of waiting them out.
  const clock = new FakeClock();
  const proxy = await startProxy(config(api.url), { logger, tunnelFactory: factory, clock });
  let conn: Deno.TcpConn | undefined;
  try {
    await eventually("healthy", () => proxy.status().counts.healthy === 1);
    // A client that sends headers and half its body, then goes quiet.
    const port = Number(new URL(proxy.url).port);
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
        'Content-Length: 1000\r\n\r\n{"model":',
    ));
    // Deno.serve signals nothing when it has read these bytes (no handler
    // output yet): a short real-time wait is the only handle on that.
    await new Promise((r) => setTimeout(r, 50));
    let finished = false;
    const stopping = proxy.shutdown(300).then(() => finished = true);
    // The stalled upload holds the drain open until its timeout (300 ms of
    // clock time), then the grace period (1 s) lets shutdown move on.
    await eventually("drain timer", () => clock.pending > 0);
    await clock.tick(299);
    assert.equal(finished, false, "shutdown did not wait for the stalled client");
    for (let i = 0; i < 50 && !finished; i++) {
      await clock.tick(100);
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.ok(finished, "shutdown still waiting after 5 s of clock time");
    await stopping;
    assert.match(logger.text(), /stopped/);
  } finally {
    // Closing the stalled client first lets a shutdown that failed the test still end.
    conn?.close();
    await proxy.shutdown(0);
    await api.close();
    await engine.close();
  }
});

Deno.test("startProxy() applies --ssh-native-crypto to ssh2's AES-GCM, and the default restores the JavaScript cipher", async () => {
  const api = startFakeVastApi({ apiKey: "server-test-key", instances: [] });
  const logger = new MemoryLogger();
  try {
    for (const native of [true, false]) {
      const proxy = await startProxy(
        { ...config(api.url), sshNativeCrypto: native },
        { logger, tunnelFactory: new FakeTunnelFactory({}) },
      );
      try {
        assert.equal(packetCipherInstalled(), !native, `sshNativeCrypto ${native}`);
      } finally {
        await proxy.shutdown(100);
      }
    }
  } finally {
    await api.close();
  }
});

Deno.test("startProxy() gives memory back once per quiet spell: probes are not traffic, uploads and requests are (idle_gc.ts)", async () => {
  const engine = await startFakeEngine({ model: "m" });
  const api = startFakeVastApi({
    apiKey: "server-test-key",
    instances: [makeInstanceRecord({ id: 12, jupyter_token: null })],
  });
  const factory = new FakeTunnelFactory({
    autoUp: { baseUrl: engine.url, path: "direct", endpoint: "127.0.0.1:22" },
  });
  const logger = new MemoryLogger();
  const clock = new FakeClock();
  let collections = 0;
  const proxy = await startProxy(
    testServeConfig({
      apiKey: "server-test-key",
      apiUrl: api.url,
      healthIntervalMs: 600_000,
      bodyTimeoutMs: 3_600_000,
    }),
    { logger, tunnelFactory: factory, clock, gc: () => collections++ },
  );
  // 64 MiB of growth: the one-minute step (32 MiB), not the burst step (128 MiB).
  const held = new Uint8Array(64 * 1024 * 1024).fill(1);
  let upload: Deno.TcpConn | undefined;
  const chat = async () => {
    const res = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  };
  // Fake time in 1-s steps, a real turn between them for sockets.
  const advance = async (ms: number, each?: () => Promise<void>) => {
    for (let t = 1_000; t <= ms; t += 1_000) {
      await clock.tick(1_000);
      await new Promise((r) => setTimeout(r, 0));
      if (each && t % 5_000 === 0) await each();
    }
  };
  try {
    await eventually("healthy", () => proxy.status().counts.healthy === 1);
    await advance(10_000);
    await chat();
    // A load balancer's probe every 5 s is not traffic.
    const probe = async () => {
      const res = await fetch(`${proxy.url}/vastproxy/healthz`);
      await res.body?.cancel();
    };
    await advance(50_000, probe);
    assert.equal(collections, 0, "under a minute of quiet keeps the heap");
    // A relayed request starts the minute again.
    await chat();
    await advance(55_000, probe);
    assert.equal(collections, 0, "the minute starts again at the last relayed request");
    // An upload still arriving is under way, however long it takes.
    upload = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(proxy.url).port) });
    await upload.write(new TextEncoder().encode(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
        'Content-Length: 1000\r\n\r\n{"model":',
    ));
    // The server reads the head in its own time: a short real wait, as above.
    await new Promise((r) => setTimeout(r, 50));
    await advance(180_000);
    assert.equal(collections, 0, "nothing is collected under a pending upload");
    upload.close();
    upload = undefined;
    await advance(70_000, probe);
    assert.equal(collections, 1, "collected once the quiet spell reached a minute");
    assert.match(logger.text(), /idle: gave memory back/);
    await advance(120_000, probe);
    assert.equal(collections, 1, "one collection per quiet spell");
  } finally {
    upload?.close();
    assert.equal(held[held.length - 1], 1);
    await proxy.shutdown(0);
    await api.close();
    await engine.close();
  }
});
