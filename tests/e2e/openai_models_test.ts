/**
 * End to end for issue #13 items 1 and 2: the official `openai` client →
 * vastproxy → real sshd → fake vLLM engines, in a fleet with one Whisper
 * instance and two chat instances that disagree on `max_model_len`.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { sshdAvailable } from "../_helpers/sshd.ts";
import { startE2eFleet } from "../_helpers/e2e_fleet.ts";

Deno.test({
  name: "serve e2e: models.list keeps vLLM's fields, uploads reach the model's instance",
  ignore: !sshdAvailable(),
  async fn(t) {
    const fleet = await startE2eFleet({
      models: ["whisper-large-v3", "qwen", "qwen"],
      maxModelLens: [448, 32768, 8192],
      // Round-robin would send every other upload to a chat instance if
      // routing ignored multipart bodies.
      policy: "round-robin",
    });
    try {
      await fleet.waitHealthy(3);
      const client = new OpenAI({ baseURL: `${fleet.proxy.url}/v1`, apiKey: "k", maxRetries: 0 });
      const [whisperId, qwenA, qwenB] = fleet.ids;

      await t.step(
        "models.list passes vLLM's fields through; max_model_len is the smallest",
        async () => {
          type VllmModel = OpenAI.Models.Model & {
            max_model_len: number;
            root: string;
            parent: string | null;
            permission: { object: string }[];
            instances: number[];
          };
          const page = await client.models.list();
          const byId = new Map((page.data as VllmModel[]).map((m) => [m.id, m]));
          assert.deepEqual([...byId.keys()].sort(), ["qwen", "whisper-large-v3"]);
          const qwen = byId.get("qwen")!;
          assert.equal(qwen.max_model_len, 8192);
          assert.equal(qwen.root, "qwen");
          assert.equal(qwen.parent, null);
          assert.equal(qwen.owned_by, "vllm");
          assert.equal(qwen.permission[0].object, "model_permission");
          assert.deepEqual(qwen.instances, [qwenA, qwenB]);
          assert.equal(byId.get("whisper-large-v3")!.max_model_len, 448);
        },
      );

      await t.step("/vastproxy/status shows each instance's own max_model_len", async () => {
        const status = await (await fetch(`${fleet.proxy.url}/vastproxy/status`)).json();
        const lens = Object.fromEntries(
          status.backends.map((b: { id: number; maxModelLen: unknown }) => [b.id, b.maxModelLen]),
        );
        assert.deepEqual(lens, {
          [whisperId]: { "whisper-large-v3": 448 },
          [qwenA]: { qwen: 32768 },
          [qwenB]: { qwen: 8192 },
        });
      });

      await t.step("every audio.transcriptions upload lands on the Whisper instance", async () => {
        const audio = new Uint8Array(200_000).map((_, i) => (i * 31) & 255);
        const chatRequests = fleet.engines.slice(1).map((e) => e.stats.requests);
        for (let i = 0; i < 6; i++) {
          const r = await client.audio.transcriptions.create({
            file: new File([audio], "talk.wav", { type: "audio/wav" }),
            model: "whisper-large-v3",
          });
          assert.equal(r.text, `whisper-large-v3 heard ${audio.length} bytes of talk.wav`);
        }
        // Health checks still reach the chat engines; uploads never did.
        for (const [i, e] of fleet.engines.slice(1).entries()) {
          const uploads = e.stats.paths.slice(chatRequests[i])
            .filter((p) => p.startsWith("POST /v1/audio"));
          assert.deepEqual(uploads, []);
        }
      });

      await t.step("an upload for a model nobody serves gets 404 model_not_found", async () => {
        await assert.rejects(
          client.audio.transcriptions.create({
            file: new File([new Uint8Array(10)], "x.wav"),
            model: "whisper-tiny",
          }),
          (err: unknown) => err instanceof OpenAI.NotFoundError && err.code === "model_not_found",
        );
      });
    } finally {
      await fleet.close();
    }
  },
});
