/**
 * `vastproxy demo` as a real process, started with exactly the permissions
 * of `deno task demo`: it serves the simulated fleet, the official openai
 * client streams through it, `status` and `wait` read it like any proxy,
 * and SIGTERM ends it cleanly.
 */
import assert from "node:assert/strict";
import OpenAI from "openai";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { runCli } from "../../lib/cli/cli.ts";
import { demoCommand } from "../../lib/commands/demo.ts";
import type { StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { freePort } from "../_helpers/sshd.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

/** The `deno run` flags of the `demo` task in deno.json: its permissions and V8 flags. */
function demoTaskPermissions(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  const words = String(config.tasks.demo).split(/\s+/);
  return words.filter((w) => w.startsWith("--allow-") || w.startsWith("--v8-flags="));
}

/** Drains a child's stream into a string the test can read at any time. */
function collect(stream: ReadableStream<Uint8Array>): { text: () => string; done: Promise<void> } {
  let text = "";
  const decoder = new TextDecoder();
  const done = (async () => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  })();
  return { text: () => text, done };
}

/** Waits until `/v1/models` (healthy backends only) lists `model`. */
async function untilServed(base: string, model: string, child: () => string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ids = await fetch(`${base}/v1/models`)
      .then((r) => r.json())
      .then((j: { data?: { id: string }[] }) => (j.data ?? []).map((m) => m.id))
      .catch(() => [] as string[]);
    if (ids.includes(model)) return;
    if (Date.now() > deadline) {
      throw new Error(`${model} never served; the demo's log:\n${child()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function untilHealthy(base: string, child: () => string, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`${base}/vastproxy/healthz`);
      await res.body?.cancel();
      if (res.status === 200) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`demo never became healthy; its log:\n${child()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("demo e2e: serves 3 simulated instances to the openai client, status/wait, SIGTERM exits 0", async () => {
  const perms = demoTaskPermissions();
  assert.ok(perms.includes("--allow-net"), `demo task permissions: ${perms.join(" ")}`);
  const port = freePort();
  const base = `http://127.0.0.1:${port}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...perms,
      "main.ts",
      "demo",
      "--no-tui",
      "--listen",
      `127.0.0.1:${port}`,
      "--instances",
      "3",
      "--health-interval",
      "300ms",
      "--poll-interval",
      "500ms",
    ],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out = collect(child.stdout);
  const err = collect(child.stderr);
  let exited = false;
  const status = child.status.finally(() => exited = true);
  try {
    await untilHealthy(base, err.text);

    // The banner: where to point clients and a curl line to paste.
    assert.match(out.text(), new RegExp(`OpenAI base URL ${base}/v1`));
    const curl = /try: (curl -N \S+ -H 'content-type: application\/json' -d '(.+)')$/m
      .exec(out.text());
    assert.ok(curl, `no curl line in:\n${out.text()}`);
    const model = JSON.parse(curl[2]).model as string;
    // healthz is 200 once any backend is; the curl line's model may be
    // another's, still starting (under a loaded machine that took seconds).
    await untilServed(base, model, err.text);

    const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused" });
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: "user", content: "hello demo" }],
      stream: true,
    });
    let tokens = 0;
    let finish: string | null = null;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) tokens++;
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.ok(tokens >= 8, `got ${tokens} tokens`);
    assert.equal(finish, "stop");

    const io = memoryIo({ env: { NO_COLOR: "1" } });
    assert.equal(
      await runCli(["wait", "--url", base, "--healthy", "3", "--timeout", "20s"], io),
      0,
    );
    assert.match(io.stdout(), /ready: 3\/3 backends healthy/);

    const snap = await (await fetch(`${base}/vastproxy/status`)).json() as StatusSnapshot;
    assert.equal(snap.backends.length, 3);
    const statusIo = memoryIo({ env: { NO_COLOR: "1" } });
    assert.equal(await runCli(["status", "--url", base], statusIo), 0);
    const rows = statusIo.stdout().split("\n").filter((l) => /^\s*\d{6,}\s/.test(l));
    assert.equal(rows.length, 3, statusIo.stdout());
    for (const b of snap.backends) {
      assert.ok(rows.some((r) => r.includes(String(b.id)) && r.includes("healthy")), `row ${b.id}`);
    }

    child.kill("SIGTERM");
    const timer = setTimeout(() => !exited && child.kill("SIGKILL"), 5_000);
    const code = (await status).code;
    clearTimeout(timer);
    assert.equal(code, 0, err.text());
    await Promise.all([out.done, err.done]);
    assert.match(err.text(), /INFO\s+stopped/);
  } finally {
    if (!exited) child.kill("SIGKILL");
    await status;
    await Promise.all([out.done, err.done]);
  }
});

Deno.test("vastproxy demo --instances outside 1–256 is a usage error naming the flag (exit 2)", async () => {
  for (const bad of ["0", "257", "abc", "2.5", "-1"]) {
    const io = memoryIo();
    assert.equal(await runCli(["demo", "--no-tui", "--instances", bad], io), 2, bad);
    assert.match(io.stderr(), /--instances: .* is not a number of instances from 1 to 256/, bad);
  }
  const io = memoryIo();
  assert.equal(await runCli(["demo", "--no-tui", "--policy", "random"], io), 2);
  assert.match(io.stderr(), /--policy: unknown policy "random"/);
});

Deno.test("demoCommand() falls back to a free port when 8080 is taken, says so, and stops on a signal", async () => {
  let stop: ((count: number) => void) | undefined;
  const io = {
    ...memoryIo(),
    onSignal(listener: (count: number) => void) {
      stop = listener;
      return () => stop = undefined;
    },
  };
  const seen: string[] = [];
  const done = demoCommand({ "no-tui": true }, { instances: "2" }, io, {
    portFree: (host, port) => {
      seen.push(`${host}:${port}`);
      return false;
    },
  });
  const deadline = Date.now() + 10_000;
  while (!/OpenAI base URL/.test(io.stdout())) {
    if (Date.now() > deadline) throw new Error(`no banner; stderr:\n${io.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(seen, ["127.0.0.1:8080"]);
  assert.match(io.stderr(), /127\.0\.0\.1:8080 is in use, so the demo listens on a free port/);
  const url = /OpenAI base URL (http:\/\/127\.0\.0\.1:(\d+))\/v1/.exec(io.stdout())!;
  assert.notEqual(url[2], "8080");
  assert.match(io.stdout(), /2 simulated instances/);
  const res = await fetch(`${url[1]}/vastproxy/status`);
  assert.equal(res.status, 200);
  await res.body?.cancel();
  stop!(1);
  assert.equal(await done, 0);
});
