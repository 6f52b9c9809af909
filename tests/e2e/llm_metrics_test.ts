/**
 * End to end (issue #15): the `openai` client streams with
 * `stream_options.include_usage` through vastproxy and a real sshd to a fake
 * vLLM; /vastproxy/status and /vastproxy/metrics then show the TTFT and token
 * counts the relay measured and the engine load scraped through the tunnel.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { sshdAvailable } from "../_helpers/sshd.ts";
import { startE2eFleet } from "../_helpers/e2e_fleet.ts";
import type { StatusSnapshot } from "../../lib/proxy/snapshot.ts";

Deno.test({
  name: "serve e2e: streamed usage shows as TTFT, tokens and engine load in status and metrics",
  ignore: !sshdAvailable(),
  async fn() {
    const fleet = await startE2eFleet({ models: ["qwen"], tokens: 6, tokenDelayMs: 120 });
    try {
      await fleet.waitHealthy(1);
      const id = fleet.ids[0];
      const status = async (): Promise<StatusSnapshot> =>
        await (await fetch(`${fleet.proxy.url}/vastproxy/status`)).json();
      const client = new OpenAI({ baseURL: `${fleet.proxy.url}/v1`, apiKey: "k" });
      const stream = await client.chat.completions.create({
        model: "qwen",
        messages: [{ role: "user", content: "count to six" }],
        stream: true,
        stream_options: { include_usage: true },
      });
      let usage: number | undefined;
      let sawRunning = false;
      for await (const chunk of stream) {
        usage = chunk.usage?.completion_tokens ?? usage;
        // The engine's own count, scraped through the tunnel mid-stream.
        if (!sawRunning) sawRunning = (await status()).backends[0].engineLoad?.running === 1;
      }
      assert.equal(usage, 6);

      /** The backend once `ok` holds for it (bounded), else as last seen. */
      const backendWhen = async (ok: (b: StatusSnapshot["backends"][0]) => boolean) => {
        let b = (await status()).backends[0];
        for (let i = 0; i < 100 && !ok(b); i++) {
          await new Promise((r) => setTimeout(r, 20));
          b = (await status()).backends[0];
        }
        return b;
      };
      // The relay records when the response ends, which the SDK's last read may precede.
      let b = await backendWhen((b) => (b.llm?.outputTokens ?? 0) > 0);
      assert.equal(b.id, id);
      assert.equal(b.llm?.outputTokens, 6);
      assert.ok((b.llm?.ttftP50Ms ?? 0) > 0, "TTFT measured");
      assert.ok((b.llm?.itlP50Ms ?? 0) > 0, "ITL measured");
      assert.ok((b.llm?.tokensPerSec ?? 0) > 0, "tokens/s measured");
      assert.ok(sawRunning, "the engine's running count was scraped mid-stream");
      b = await backendWhen((b) => b.engineLoad?.running === 0);
      assert.equal(b.engineLoad?.running, 0);
      assert.equal(b.engineLoad?.stale, false);
      assert.equal(b.engineLoad?.kvCacheUsage, 0);

      const metrics = await (await fetch(`${fleet.proxy.url}/vastproxy/metrics`)).text();
      const lines = metrics.split("\n");
      assert.ok(lines.includes(`vastproxy_output_tokens_total{instance="${id}",model="qwen"} 6`));
      assert.ok(lines.includes(`vastproxy_ttft_seconds_count{instance="${id}",model="qwen"} 1`));
      assert.ok(lines.includes(`vastproxy_itl_seconds_count{instance="${id}",model="qwen"} 5`));
      assert.ok(lines.includes(`vastproxy_engine_requests_running{instance="${id}"} 0`));
    } finally {
      await fleet.close();
    }
  },
});
