/**
 * `SshTunnel.request()` — HTTP straight over ssh2 channels — against a real
 * sshd and the fake engine: bodies both ways, a large body under
 * back-pressure, SSE, and a cancelled stream reaching the engine as a close.
 */
import assert from "node:assert/strict";
import { testTunnelFactory } from "../_helpers/config.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { Http1Error } from "../../lib/http1/types.ts";
import { send } from "../_helpers/http1.ts";
import { sshdAvailable, startSshd, testSpec, waitFor } from "../_helpers/sshd.ts";

const ignore = !sshdAvailable();

Deno.test({
  name: "SshTunnel.request speaks HTTP over channels to a real sshd and engine",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const engine = await startFakeEngine({ tokenDelayMs: 0 });
    const t = testTunnelFactory(sshd.clientKeyPath, `${sshd.dir}/known_hosts`, {
      readyTimeoutMs: 2_000,
      // The defaults this test was written against.
      backoffBaseMs: 1_000,
      backoffMaxMs: 60_000,
    }).open(testSpec(31, [{ host: "127.0.0.1", port: sshd.port, path: "direct" }], engine.port));
    const req = (method: string, path: string, body: string | null = null, signal?: AbortSignal) =>
      send(t, path, { method, headers: [["content-type", "application/json"]], body, signal });
    try {
      await waitFor("up", () => t.status().state === "up");

      const echo = await (await req("POST", "/echo?q=1", '{"hi":"ü"}')).json();
      assert.equal(echo.method, "POST");
      assert.equal(echo.query, "?q=1");
      assert.equal(echo.body, '{"hi":"ü"}');
      assert.equal(echo.headers.host, `127.0.0.1:${engine.port}`);

      // Sequential requests ride the pooled keep-alive channel the first one opened.
      for (let i = 0; i < 20; i++) {
        const r = await req("POST", "/v1/chat/completions", '{"model":"fake-model","messages":[]}');
        assert.equal(r.status, 200);
        assert.equal((await r.json()).object, "chat.completion");
      }
      assert.equal(engine.stats.connections, 1, "21 requests, one channel");

      const n = 3 * 1024 * 1024 + 7;
      let got = 0;
      for await (const chunk of (await req("GET", `/bytes?n=${n}`)).body!) got += chunk.length;
      assert.equal(got, n);

      const sse = await (await req("GET", "/sse?n=5&interval=1")).text();
      assert.equal(sse.match(/^data: /gm)?.length, 6);
      assert.ok(sse.endsWith("data: [DONE]\n\n"));

      // A client leaving mid-stream must close the engine's side within 1 s.
      const ac = new AbortController();
      const stream = await req("GET", "/sse?n=500&interval=10", null, ac.signal);
      const reader = stream.body!.getReader();
      await reader.read();
      const cancelledAt = Date.now();
      ac.abort(new DOMException("client disconnected", "AbortError"));
      await reader.read().catch(() => {});
      await waitFor("engine saw the close", () => engine.stats.closedMidStream === 1, 1_000);
      assert.ok(Date.now() - cancelledAt <= 1_000);
    } finally {
      await t.close();
      await engine.close();
      await sshd.stop();
    }
    // Closed: refused before anything is sent, so the relay could retry elsewhere.
    await assert.rejects(req("GET", "/health"), (e: Error) => e instanceof Http1Error && !e.sent);
  },
});
