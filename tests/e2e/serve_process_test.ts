/**
 * `vastproxy serve` as a real process: configuration from flags and env,
 * real sshd, SIGTERM drains in-flight streams, --mark-label is set while
 * healthy and cleared on exit, and a second signal exits at once.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { type FakeEngine, startFakeEngine } from "../../lib/sim/fake_engine.ts";
import {
  type FakeVastApi,
  makeInstanceRecord,
  startFakeVastApi,
} from "../../lib/sim/fake_vast_api.ts";
// The permissions the released binary gets: serve must work within them.
import { RUNTIME_PERMISSIONS, RUNTIME_V8_ARG } from "../../scripts/compile.ts";
import { freePort, generateKey, type Sshd, sshdAvailable, startSshd } from "../_helpers/sshd.ts";

const KEY = "proc-test-vast-key-51c2";
const TOKEN = "a1".repeat(32);
const PROXY_TOKEN = "proxy-token-for-clients-9d";

interface World {
  api: FakeVastApi;
  engine: FakeEngine;
  sshd: Sshd;
  dir: string;
  port: number;
  close(): Promise<void>;
}

async function startWorld(): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: "vastproxy-proc-" });
  const key = `${dir}/id_ed25519`;
  await generateKey(key);
  const engine = await startFakeEngine({ model: "m", token: TOKEN, tokenDelayMs: 40, tokens: 30 });
  const sshd = await startSshd({ clientKeyPath: key });
  const api = startFakeVastApi({
    apiKey: KEY,
    instances: [makeInstanceRecord({
      id: 777,
      label: null,
      public_ipaddr: "127.0.0.1",
      ports: { "22/tcp": [{ HostIp: "0.0.0.0", HostPort: String(sshd.port) }] },
      ssh_host: "127.0.0.1",
      ssh_port: freePort(),
      image_runtype: "ssh_direc ssh_proxy",
      jupyter_token: TOKEN,
      extra_env: [["VLLM_ARGS", `--port ${engine.port}`], ["VLLM_MODEL", "m"]],
    })],
  });
  return {
    api,
    engine,
    sshd,
    dir,
    port: freePort(),
    async close() {
      await api.close();
      await sshd.stop();
      await engine.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

function spawnServe(w: World, extra: string[] = []) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...RUNTIME_PERMISSIONS,
      RUNTIME_V8_ARG,
      "main.ts",
      "--api-url",
      w.api.url,
      "--ssh-key",
      `${w.dir}/id_ed25519`,
      "--known-hosts",
      `${w.dir}/known_hosts`,
      "--listen",
      `127.0.0.1:${w.port}`,
      "--health-interval",
      "300ms",
      "--poll-interval",
      "500ms",
      "--no-tui",
      ...extra,
    ],
    cwd: new URL("../..", import.meta.url).pathname,
    // The key and the client token come from the environment, as a CI job would pass them.
    env: { VAST_API_KEY: KEY, VASTPROXY_AUTH_TOKEN: PROXY_TOKEN, NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function waitHealthy(port: number, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/vastproxy/healthz`, {
        headers: { authorization: `Bearer ${PROXY_TOKEN}` },
      });
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error("proxy never became healthy");
    await new Promise((r) => setTimeout(r, 100));
  }
}

function labelsSent(api: FakeVastApi): (string | null)[] {
  return api.state.requests
    .filter((r) => r.method === "PUT" && r.path === "/api/v0/instances/777/")
    .map((r) => (JSON.parse(r.body ?? "{}") as { label?: string }).label ?? null);
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  return text;
}

Deno.test({
  name: "serve process: SIGTERM lets an in-flight stream finish, clears its mark, exits 0",
  ignore: !sshdAvailable(),
  async fn() {
    const w = await startWorld();
    const child = spawnServe(w, ["--mark-label", "vastproxy-live", "--drain-timeout", "10s"]);
    const stderr = collect(child.stderr);
    const stdout = collect(child.stdout);
    try {
      await waitHealthy(w.port);
      // Marked healthy through the API.
      const deadline = Date.now() + 5_000;
      while (!labelsSent(w.api).includes("vastproxy-live") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(labelsSent(w.api), ["vastproxy-live"]);
      w.api.state.update(777, { label: "vastproxy-live" });

      const client = new OpenAI({
        baseURL: `http://127.0.0.1:${w.port}/v1`,
        apiKey: PROXY_TOKEN,
      });
      const stream = await client.chat.completions.create({
        model: "m",
        messages: [{ role: "user", content: "long answer" }],
        stream: true,
      });
      const iter = stream[Symbol.asyncIterator]();
      const first = await iter.next();
      assert.equal(first.done, false);
      // 30 tokens × 40 ms: the stream is still running when the signal arrives.
      child.kill("SIGTERM");
      let chunks = 1;
      let finish: string | null = null;
      for (let r = await iter.next(); !r.done; r = await iter.next()) {
        chunks++;
        finish = r.value.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, "stop", "the in-flight stream completed");
      assert.ok(chunks >= 10, `only ${chunks} chunks`);
      const status = await child.status;
      assert.equal(status.code, 0, await stderr);
      const log = await stderr;
      assert.match(log, /shutting down/);
      assert.match(log, /stopped/);
      // Cleared on exit, since the label was still ours.
      assert.deepEqual(labelsSent(w.api), ["vastproxy-live", ""]);
      for (const secret of [KEY, TOKEN, PROXY_TOKEN]) {
        assert.ok(!log.includes(secret), "a secret reached the log");
        assert.ok(!(await stdout).includes(secret));
      }
      // One line per request, with the instance that served it.
      assert.match(
        log,
        /request .*method=POST path=\/v1\/chat\/completions instance=777 status=200/,
      );
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.status;
      await stderr;
      await stdout;
      await w.close();
    }
  },
});

Deno.test({
  name: "serve process: a second signal exits at once without waiting for the drain",
  ignore: !sshdAvailable(),
  async fn() {
    const w = await startWorld();
    const child = spawnServe(w, ["--drain-timeout", "60s"]);
    const stderr = collect(child.stderr);
    const stdout = collect(child.stdout);
    try {
      await waitHealthy(w.port);
      const res = await fetch(`http://127.0.0.1:${w.port}/sse?n=2000&interval=20`, {
        headers: { authorization: `Bearer ${PROXY_TOKEN}` },
      });
      const reader = res.body!.getReader();
      const started = Date.now();
      child.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 300));
      child.kill("SIGTERM");
      const status = await child.status;
      assert.notEqual(status.code, 0);
      assert.ok(Date.now() - started < 10_000, "did not wait for the 60 s drain");
      assert.match(await stderr, /second signal/);
      await reader.cancel().catch(() => {});
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.status;
      await stderr;
      await stdout;
      await w.close();
    }
  },
});

Deno.test({
  name: "serve process: a rejected API key exits 2 with 'API key rejected'",
  async fn() {
    const api = startFakeVastApi({ apiKey: "the-right-key", instances: [] });
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          ...RUNTIME_PERMISSIONS,
          RUNTIME_V8_ARG,
          "main.ts",
          "--api-url",
          api.url,
          "--listen",
          `127.0.0.1:${freePort()}`,
          "--no-tui",
          "--known-hosts",
          "/tmp/vastproxy-test-known-hosts",
        ],
        cwd: new URL("../..", import.meta.url).pathname,
        env: { VAST_API_KEY: "a-wrong-key-1234", NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const err = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 2, err);
      assert.match(err, /API key rejected/);
      assert.ok(!err.includes("a-wrong-key-1234"));
    } finally {
      await api.close();
    }
  },
});
