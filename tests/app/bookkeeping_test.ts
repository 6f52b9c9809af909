/**
 * The proxy works out each request's log line and LLM numbers in batches
 * (DeferredWork), not after each response. Readers must not see that: the
 * status snapshot and the admin API flush the batch first, and a line
 * nobody asks for still arrives by itself, with its duration taken when the
 * request ended.
 */
import assert from "node:assert/strict";
import { startLocalProxy, until } from "../faults/_local_proxy.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import type { StatusSnapshot } from "../../lib/proxy/snapshot.ts";

const CHAT = JSON.stringify({
  model: "m",
  messages: [{ role: "user", content: "hi" }],
  max_tokens: 5,
});

async function complete(url: string): Promise<void> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: CHAT,
  });
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.usage.completion_tokens, 5);
}

Deno.test("bookkeeping: status read right after a completion already counts its tokens", async () => {
  const lines: RequestLogLine[] = [];
  const p = await startLocalProxy({ instances: 1, onRequestLog: (l) => lines.push(l) });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    await complete(p.proxy.url);
    // No wait: the snapshot flushes the batch the completion's numbers sit in.
    assert.equal(p.proxy.status().backends[0].llm?.outputTokens, 5);
    await complete(p.proxy.url);
    const viaApi: StatusSnapshot = await (await fetch(`${p.proxy.url}/vastproxy/status`)).json();
    assert.equal(viaApi.backends[0].llm?.outputTokens, 10, "the admin API flushes as well");
    const metrics = await (await fetch(`${p.proxy.url}/vastproxy/metrics`)).text();
    assert.match(metrics, /vastproxy_output_tokens_total\{[^}]*\} 10\b/);
    assert.deepEqual(
      lines.filter((l) => l.path === "/v1/chat/completions").map((l) => l.status),
      [200, 200],
      "the snapshot flushed the log lines queued with the numbers",
    );
  } finally {
    await p.close();
  }
});

Deno.test("bookkeeping: a request's line arrives by itself, with the duration it had", async () => {
  const lines: RequestLogLine[] = [];
  const p = await startLocalProxy({ instances: 1, onRequestLog: (l) => lines.push(l) });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const t0 = performance.now();
    await complete(p.proxy.url);
    const took = performance.now() - t0;
    // Nobody reads the status here: the batch's own timer must deliver it.
    await until("the request's line", () => lines.some((l) => l.path === "/v1/chat/completions"));
    const line = lines.find((l) => l.path === "/v1/chat/completions")!;
    assert.equal(line.status, 200);
    assert.equal(line.instance, p.ids[0]);
    assert.ok(
      line.durationMs <= took + 1,
      `duration ${line.durationMs} ms is the request's (${took} ms), not the batch's wait`,
    );
  } finally {
    await p.close();
  }
});
