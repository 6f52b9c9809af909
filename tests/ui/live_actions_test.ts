/**
 * Keys typed into the live table reach the real proxy: the UI drives
 * `RunningProxy.actions`, which change backend state and call the vast API.
 */
import assert from "node:assert/strict";
import { startProxy } from "../../lib/app/proxy_app.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";
import { LiveUI, UiLogBuffer } from "../../lib/ui/live.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { testServeConfig } from "../_helpers/config.ts";
import { FakeTunnelFactory } from "../_helpers/fake_tunnel.ts";
import { eventually } from "../_helpers/e2e_fleet.ts";

const KEY = "live-actions-key-0042";
/** SGLang instances: abort-all only exists there. */
const SGLANG_ENV = [["SGLANG_MODEL", "m"], ["SGLANG_ARGS", "--port 18000"]];

Deno.test("LiveUI keys: x drains the selected backend, d then y destroys it through the vast API", async () => {
  const engine = await startFakeEngine({ model: "m", engine: "sglang" });
  const api = startFakeVastApi({
    apiKey: KEY,
    instances: [
      makeInstanceRecord({ id: 501, jupyter_token: null, extra_env: SGLANG_ENV }),
      makeInstanceRecord({ id: 502, jupyter_token: null, extra_env: SGLANG_ENV }),
    ],
  });
  const factory = new FakeTunnelFactory({
    autoUp: { baseUrl: engine.url, path: "direct", endpoint: "127.0.0.1:22" },
  });
  const proxy = await startProxy(testServeConfig({ apiKey: KEY, apiUrl: api.url }), {
    logger: new MemoryLogger(),
    tunnelFactory: factory,
  });
  let input!: ReadableStreamDefaultController<Uint8Array>;
  const stdin = new ReadableStream<Uint8Array>({ start: (c) => void (input = c) });
  const quit = Promise.withResolvers<void>();
  let frame = "";
  const destroyed: number[] = [];
  const ui = new LiveUI({
    stdout: {
      write: (p) => {
        frame = new TextDecoder().decode(p);
        return p.length;
      },
      columns: () => ({ columns: 160, rows: 40 }),
    },
    stdin,
    snapshot: () => proxy.status(),
    actions: {
      ...proxy.actions,
      destroy: (id) => {
        destroyed.push(id);
        return proxy.actions.destroy(id);
      },
      quit: () => quit.resolve(),
    },
    color: false,
    logBuffer: new UiLogBuffer(),
    intervalMs: 50,
  });
  const stop = new AbortController();
  const running = ui.start(stop.signal);
  const type = (keys: string) => input.enqueue(new TextEncoder().encode(keys));
  const backend = (id: number) => proxy.status().backends.find((b) => b.id === id)!;
  try {
    await eventually("both healthy", () => proxy.status().counts.healthy === 2, 5_000);
    // The first row (501) is selected; move to 502 and drain it.
    type("\x1b[B");
    type("x");
    await eventually("502 drained", () => backend(502).drained, 2_000);
    assert.equal(backend(502).state, "draining");
    assert.equal(backend(501).drained, false);
    assert.deepEqual(proxy.fleet.routable().map((b) => b.id), [501]);
    // x again undrains.
    type("x");
    await eventually("502 back", () => !backend(502).drained, 2_000);

    // d asks; n cancels; nothing reaches the API. Keys are handled in order
    // and each redraws, so once a frame without the question is on screen
    // the "n" was handled, and a destroy it wrongly started would be recorded.
    type("d");
    await eventually("question shown", () => frame.includes("Destroy instance 502"), 2_000);
    type("n");
    await eventually("question gone", () => !frame.includes("Destroy instance"), 2_000);
    assert.deepEqual(destroyed, []);
    assert.equal(api.state.requests.filter((r) => r.method === "DELETE").length, 0);
    // d then y destroys the selected instance through the vast API.
    type("dy");
    await eventually(
      "DELETE sent",
      () => api.state.requests.some((r) => r.method === "DELETE"),
      2_000,
    );
    assert.deepEqual(destroyed, [502]);
    const del = api.state.requests.filter((r) => r.method === "DELETE");
    assert.deepEqual(del.map((r) => r.path), ["/api/v0/instances/502/"]);
    assert.equal(api.state.find(502), undefined);

    // a sends SGLang's abort-all to the selected backend's engine.
    type("\x1b[A");
    type("a");
    await eventually("abort_all reached the engine", () => engine.stats.aborts === 1, 2_000);

    type("q");
    await quit.promise;
  } finally {
    stop.abort();
    ui.stop();
    await running.catch(() => {});
    await proxy.shutdown(0);
    await api.close();
    await engine.close();
  }
});
