/**
 * The request log around the end of a request (from the hostile review of
 * batched bookkeeping, kept after that change was reverted): a finished
 * request's line reaches the log when the process leaves on its own paths
 * (a second signal, a rejected API key, SIGTERM after the drain), lines keep
 * the order in which requests ended whichever layer answered them, and a
 * failing log sink costs its line, never a response or the process.
 */
import assert from "node:assert/strict";
import { runProxy } from "../../lib/commands/serve.ts";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { makeInstanceRecord, startFakeVastApi } from "../../lib/sim/fake_vast_api.ts";
import type { TunnelFactory, TunnelOptions } from "../../lib/tunnel/tunnel.ts";
import type { BackendSpec } from "../../lib/core/backend_spec.ts";
import { type FakeTunnel, FakeTunnelFactory } from "../_helpers/fake_tunnel.ts";
import { testServeConfig } from "../_helpers/config.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { randomToken, rawExchange, startLocalProxy, until } from "../faults/_local_proxy.ts";
import { ApiKeyRejectedError, startProxy } from "../../lib/app/proxy_app.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { freePort } from "../_helpers/sshd.ts";

const KEY = "review-vast-key-7f3a91";
const ID = 5_100_001;

/**
 * `runProxy` as `vastproxy serve` runs it, over one fake engine, with its
 * signals in the test's hands: `signal(1)` is a first SIGTERM, `signal(2)`
 * a second one. `url` resolves once it listens and its backend is healthy.
 */
async function serveOne(drainTimeoutMs: number) {
  const token = randomToken();
  const engine = await startFakeEngine({ model: "m", token });
  const api = startFakeVastApi({
    apiKey: KEY,
    instances: [makeInstanceRecord({ id: ID, label: null, jupyter_token: token })],
  });
  const tunnels = new FakeTunnelFactory({ now: Date.now });
  const tunnelFactory: TunnelFactory = {
    open(spec: BackendSpec, o?: TunnelOptions): FakeTunnel {
      const t = tunnels.open(spec, o);
      t.up({ baseUrl: engine.url });
      return t;
    },
  };
  const io = memoryIo();
  let listener: ((count: number) => void) | undefined;
  io.onSignal = (l) => {
    listener = l;
    return () => {
      listener = undefined;
    };
  };
  const ready = Promise.withResolvers<string>();
  const config = testServeConfig({
    apiKey: KEY,
    apiUrl: api.url,
    healthIntervalMs: 60_000,
    drainTimeoutMs,
  });
  const run = runProxy(config, io, {
    deps: { tunnelFactory },
    onReady: (url) => ready.resolve(url),
  });
  const url = ready.promise.then(async (url) => {
    await untilAsync("healthy", async () => {
      const res = await fetch(`${url}/vastproxy/healthz`);
      await res.body?.cancel();
      return res.status === 200;
    });
    return url;
  });
  return {
    io,
    run,
    url,
    signal: (count: number) => listener!(count),
    async close() {
      await run.catch(() => {});
      await api.close();
      await engine.close();
    },
  };
}

Deno.test({
  name: "request log: a second signal still writes the lines of requests that already finished",
  async fn() {
    // Long enough that the drain is still running when the second signal comes.
    const { io, run, signal, close, ...served } = await serveOne(30_000);
    const long = new AbortController();
    let longDone: Promise<unknown> = Promise.resolve();
    try {
      const url = await served.url;
      // One request that outlives the drain, so the drain is still running
      // when the second signal arrives, and one that ends during it.
      longDone = fetch(`${url}/delay?ms=20000`, { signal: long.signal })
        .then((r) => r.text()).catch(() => {});
      const short = fetch(`${url}/delay?ms=1500&which=short`);
      await untilAsync("both requests in flight", async () => {
        const s = await (await fetch(`${url}/vastproxy/status`)).json();
        return s.counts.inFlight === 2;
      });
      signal(1); // SIGTERM: drain
      const res = await short;
      assert.equal(res.status, 200);
      await res.text();
      // The short request is answered: its line exists. A second signal now
      // leaves without waiting for the long one, and the process exits
      // right after runProxy returns (main.ts calls Deno.exit).
      signal(2);
      const code = await run;
      assert.equal(code, 130);
      const printed = io.stderr(); // exactly what was written before the exit
      assert.match(printed, /second signal/);
      assert.match(
        printed,
        /request .*method=GET path=\/delay instance=5100001 status=200/,
        `the finished request's line was lost on the forced exit:\n${printed}`,
      );
    } finally {
      long.abort();
      await longDone;
      // runProxy returned while its shutdown goes on in the background: let
      // it finish before closing what it talks to.
      await until("the background shutdown", () => io.stderr().includes("stopped"), 10_000)
        .catch(() => {});
      await close();
    }
  },
});

Deno.test("request log: request lines keep the order the requests ended in", async () => {
  const lines: RequestLogLine[] = [];
  const p = await startLocalProxy({ instances: 1, onRequestLog: (l) => lines.push(l) });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    lines.length = 0;
    const port = Number(new URL(p.proxy.url).port);
    // Two requests pipelined on one connection: the relay answers the first
    // (/v1/models), the Host check answers the second (403). The first ended
    // first, so its line must come first.
    const text = await rawExchange(
      port,
      "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" +
        "GET /v1/models?second HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert.match(text, /HTTP\/1\.1 200/);
    assert.match(text, /HTTP\/1\.1 403/);
    await until("both lines", () => {
      p.proxy.status(); // flushes
      return lines.length >= 2;
    });
    assert.deepEqual(
      lines.map((l) => l.status),
      [200, 403],
      "lines written out of the order the requests ended in",
    );
  } finally {
    await p.close();
  }
});

Deno.test("request log: a start-up that ends in 'API key rejected' keeps its lines", async () => {
  // The listener is up during the first listing; a request answered then
  // (a load balancer's health check) has a line. When the listing says the
  // key is bad, startProxy rejects and serve exits 2 at once (Deno.exit).
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const lines: RequestLogLine[] = [];
  const vastFetch: typeof fetch = async () => {
    const res = await fetch(`${url}/vastproxy/healthz`);
    await res.body?.cancel();
    return new Response('{"error":"invalid key"}', { status: 401 });
  };
  const config = testServeConfig({
    apiKey: KEY,
    apiUrl: "http://127.0.0.1:9", // never asked: vastFetch answers
    listen: { hostname: "127.0.0.1", port },
  });
  const outcome = await startProxy(config, {
    logger: new MemoryLogger(),
    vastFetch,
    onRequestLog: (l) => lines.push(l),
  }).then(async (p) => {
    await p.shutdown(0);
    return p;
  }, (err) => err);
  assert.ok(outcome instanceof ApiKeyRejectedError, String(outcome));
  // Checked at once: this is all the process prints before it exits.
  assert.deepEqual(
    lines.map((l) => `${l.path} ${l.status}`),
    ["/vastproxy/healthz 503"],
    "the health check's line was lost when start-up failed",
  );
});

/** Like `until`, for an async check; each check is bounded by the overall timeout. */
async function untilAsync(what: string, check: () => Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await check();
    } catch { /* not ready yet */ }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("request log: a failing log sink costs its line, never a response or the numbers", async () => {
  const p = await startLocalProxy({
    instances: 1,
    onRequestLog: () => {
      throw new Error("log sink down");
    },
  });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${p.proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: "m",
          messages: [{ role: "user", content: "hi" }],
          max_tokens: 5,
        }),
      });
      assert.equal(res.status, 200);
      await res.json();
    }
    // Each line throws; the LLM numbers recorded beside them still count.
    assert.equal(p.proxy.status().backends[0].llm?.outputTokens, 10);
    assert.ok(
      p.logger.records.some((r) =>
        r.msg === "request log line failed" && /sink down/.test(String(r.fields.error))
      ),
      p.logger.text(),
    );
  } finally {
    await p.close();
  }
});

Deno.test({
  name: "request log: SIGTERM writes the line of a client cut off after the drain",
  async fn() {
    const { io, run, signal, close, ...served } = await serveOne(200);
    let conn: Deno.Conn | undefined;
    try {
      const url = await served.url;
      // A client that asks for a large body and never reads it: its
      // response cannot finish, so the drain ends by closing it.
      conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(url).port) });
      await conn.write(
        new TextEncoder().encode("GET /bytes?n=268435456 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
      );
      await untilAsync("the stalled request in flight", async () => {
        const s = await (await fetch(`${url}/vastproxy/status`)).json();
        return s.counts.inFlight === 1;
      });
      signal(1);
      assert.equal(await run, 0);
      assert.match(io.stderr(), /request .*method=GET path=\/bytes instance=5100001 status=200/);
    } finally {
      try {
        conn?.close();
      } catch { /* closed */ }
      await close();
    }
  },
});
