/**
 * End to end: the official `openai` client → vastproxy → real OpenSSH sshd →
 * fake vLLM engines, with the fleet discovered from a fake vast.ai API.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { sshdAvailable } from "../_helpers/sshd.ts";
import { eventually, startE2eFleet } from "../_helpers/e2e_fleet.ts";

const ignore = !sshdAvailable();
const CLIENT_KEY = "client-side-key-must-not-leak";

Deno.test({
  name: "serve e2e: openai client, round-robin split, sticky header, model union and 404",
  ignore,
  async fn(t) {
    const fleet = await startE2eFleet({
      models: ["qwen", "qwen", "llama"],
      policy: "round-robin",
      stickyHeader: "X-Session-ID",
    });
    try {
      await fleet.waitHealthy(3);
      const client = new OpenAI({ baseURL: `${fleet.proxy.url}/v1`, apiKey: CLIENT_KEY });

      await t.step("plain chat completion", async () => {
        const r = await client.chat.completions.create({
          model: "qwen",
          messages: [{ role: "user", content: "hi" }],
        });
        assert.equal(r.object, "chat.completion");
        assert.ok((r.choices[0].message.content ?? "").length > 0);
      });

      await t.step("streaming chat completion yields several chunks and a stop", async () => {
        const stream = await client.chat.completions.create({
          model: "llama",
          messages: [{ role: "user", content: "stream please" }],
          stream: true,
        });
        let chunks = 0;
        let text = "";
        let finish: string | null = null;
        for await (const chunk of stream) {
          chunks++;
          text += chunk.choices[0]?.delta?.content ?? "";
          finish = chunk.choices[0]?.finish_reason ?? finish;
        }
        assert.ok(chunks >= 3, `got ${chunks} chunks`);
        assert.ok(text.length > 0);
        assert.equal(finish, "stop");
        // Only the llama engine may have served it (model-aware routing).
        assert.ok(fleet.engines[2].stats.completedStreams >= 1);
      });

      await t.step("the engines saw the instance token, never the client's key", () => {
        assert.equal(fleet.engines.length, 3);
        for (const [i, engine] of fleet.engines.entries()) {
          // Health checks alone put requests on every engine: an empty list
          // would mean the check below checked nothing.
          assert.ok(engine.stats.authHeaders.length > 0, `engine ${i} saw no request`);
          for (const h of engine.stats.authHeaders) {
            assert.equal(h, `Bearer ${fleet.tokens[i]}`);
          }
        }
      });

      await t.step("30 round-robin requests split 10/10/10", async () => {
        const before = fleet.engines.map((e) => e.stats.requests);
        const counts = new Map<string, number>();
        for (let i = 0; i < 30; i++) {
          const res = await fetch(`${fleet.proxy.url}/health`);
          await res.body?.cancel();
          assert.equal(res.status, 200);
          const id = res.headers.get("x-vastproxy-instance")!;
          counts.set(id, (counts.get(id) ?? 0) + 1);
        }
        assert.deepEqual([...counts.values()], [10, 10, 10]);
        assert.deepEqual(
          fleet.engines.map((e, i) => e.stats.requests - before[i] >= 10),
          [true, true, true],
        );
      });

      await t.step("sticky header keeps a session on one backend", async () => {
        for (const session of ["alice", "bob", "carol"]) {
          const seen = new Set<string>();
          for (let i = 0; i < 5; i++) {
            const res = await fetch(`${fleet.proxy.url}/health`, {
              headers: { "x-session-id": session },
            });
            await res.body?.cancel();
            seen.add(res.headers.get("x-vastproxy-instance")!);
          }
          assert.equal(seen.size, 1, `${session} moved between ${[...seen]}`);
        }
      });

      await t.step("X-VastProxy-Instance pins a request to that instance", async () => {
        for (const id of fleet.ids) {
          const res = await fetch(`${fleet.proxy.url}/health`, {
            headers: { "x-vastproxy-instance": String(id) },
          });
          await res.body?.cancel();
          assert.equal(res.headers.get("x-vastproxy-instance"), String(id));
        }
      });

      await t.step("/v1/models is the union of the fleet's models", async () => {
        const models = await client.models.list();
        const ids = models.data.map((m) => m.id).sort();
        assert.deepEqual(ids, ["llama", "qwen"]);
      });

      await t.step("an unserved model gets 404 model_not_found", async () => {
        await assert.rejects(
          client.chat.completions.create({
            model: "gpt-9",
            messages: [{ role: "user", content: "hi" }],
          }),
          (err: unknown) => {
            assert.ok(err instanceof OpenAI.NotFoundError, String(err));
            assert.equal(err.code, "model_not_found");
            return true;
          },
        );
      });

      await t.step("status shows direct SSH, models and GPU metrics from nvidia-smi", async () => {
        await eventually(
          "GPU metrics",
          () => {
            const backends = fleet.proxy.status().backends;
            return backends.length === 3 && backends.every((b) => b.gpus.length === 2);
          },
        );
        const res = await fetch(`${fleet.proxy.url}/vastproxy/status`);
        const text = await res.text();
        const status = JSON.parse(text);
        assert.equal(status.counts.healthy, 3);
        assert.equal(status.backends.length, 3);
        for (const b of status.backends) {
          assert.equal(b.ssh, "direct");
          assert.equal(b.gpus[0].name, "NVIDIA H100 80GB HBM3");
          assert.equal(b.gpus[1].powerDraw, null);
        }
        for (const token of fleet.tokens) assert.ok(!text.includes(token));
        assert.ok(!fleet.logger.text().includes(fleet.tokens[0]));
        assert.ok(!fleet.logger.text().includes(CLIENT_KEY));
      });
    } finally {
      await fleet.close();
    }
  },
});

Deno.test({
  name: "serve e2e: a stopped engine fails over, goes unhealthy, and comes back",
  ignore,
  async fn() {
    const fleet = await startE2eFleet({ models: ["m", "m", "m"], policy: "round-robin" });
    try {
      await fleet.waitHealthy(3);
      // maxRetries: 0 turns the SDK's own retries off, so only the proxy's
      // retry can turn a request that met the dead engine into a success.
      const client = new OpenAI({
        baseURL: `${fleet.proxy.url}/v1`,
        apiKey: CLIENT_KEY,
        maxRetries: 0,
      });
      const dead = fleet.ids[1];
      await fleet.engines[1].close();
      // Its port now refuses connections: the request provably never reached
      // an engine, the one case the proxy must retry elsewhere. The first
      // request is pinned to the dead instance while health checks still
      // call it healthy, so the proxy really meets the refusal.
      for (let i = 0; i < 9; i++) {
        const pin = i === 0 ? { headers: { "x-vastproxy-instance": String(dead) } } : {};
        const { data, response } = await client.chat.completions.create({
          model: "m",
          messages: [{ role: "user", content: `q${i}` }],
        }, pin).withResponse();
        assert.equal(data.object, "chat.completion");
        // The fake engine's 8-token answer, whole: a retried body is not a truncated one.
        assert.equal(data.choices[0].message.content, " The quick brown fox jumps over the lazy");
        const servedBy = response.headers.get("x-vastproxy-instance");
        assert.ok(
          servedBy === String(fleet.ids[0]) || servedBy === String(fleet.ids[2]),
          `served by ${servedBy}`,
        );
      }
      // The dead instance was tried (and failed) at least once: the successes
      // above are the proxy's retries, not requests that never went there.
      const deadErrors = fleet.proxy.status().backends.find((b) => b.id === dead)?.errors ?? 0;
      assert.ok(deadErrors >= 1, `dead backend errors: ${deadErrors}`);
      await eventually(
        "dead backend unhealthy",
        () => fleet.proxy.status().backends.find((b) => b.id === dead)?.state === "unhealthy",
      );
      await fleet.engines[1].restart();
      await fleet.waitHealthy(3);
    } finally {
      await fleet.close();
    }
  },
});

Deno.test({
  name: "serve e2e: killing one instance's sshd takes only that backend down",
  ignore,
  async fn() {
    const fleet = await startE2eFleet({ models: ["m", "m"], policy: "round-robin" });
    try {
      await fleet.waitHealthy(2);
      await fleet.sshds[0].kill("SIGKILL");
      const gone = fleet.ids[0];
      await eventually("backend down after sshd died", () => {
        const b = fleet.proxy.status().backends.find((b) => b.id === gone);
        return b !== undefined && b.state !== "healthy";
      }, 5_000);
      for (let i = 0; i < 6; i++) {
        const res = await fetch(`${fleet.proxy.url}/v1/models`);
        assert.equal(res.status, 200);
        await res.body?.cancel();
        const r = await fetch(`${fleet.proxy.url}/health`);
        await r.body?.cancel();
        assert.equal(r.status, 200);
        assert.equal(r.headers.get("x-vastproxy-instance"), String(fleet.ids[1]));
      }
      await fleet.sshds[0].restart();
      await fleet.waitHealthy(2);
    } finally {
      await fleet.close();
    }
  },
});

Deno.test({
  name: "serve e2e: a client that disconnects mid-stream closes the engine's stream within 1 s",
  ignore,
  async fn() {
    const fleet = await startE2eFleet({ models: ["m"], tokenDelayMs: 50, tokens: 400 });
    try {
      await fleet.waitHealthy(1);
      const ctrl = new AbortController();
      const res = await fetch(`${fleet.proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "m", messages: [], stream: true }),
        signal: ctrl.signal,
      });
      const reader = res.body!.getReader();
      await reader.read(); // first chunk arrived: the stream is live end to end
      assert.equal(fleet.engines[0].stats.closedMidStream, 0);
      const cancelledAt = Date.now();
      ctrl.abort();
      await reader.cancel().catch(() => {});
      await eventually(
        "engine saw the close",
        () => fleet.engines[0].stats.closedMidStream === 1,
        1_000,
      );
      assert.ok(Date.now() - cancelledAt <= 1_000);
      await eventually(
        "in-flight back to 0",
        () => fleet.proxy.status().counts.inFlight === 0,
        2_000,
      );
      // A cancellation is not the backend's fault.
      assert.equal(fleet.proxy.status().backends[0].errors, 0);
      assert.equal(fleet.proxy.status().backends[0].state, "healthy");
    } finally {
      await fleet.close();
    }
  },
});
