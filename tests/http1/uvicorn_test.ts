/**
 * The relay against a real uvicorn (issue #10 item 6): requests spaced
 * around uvicorn's default 5 s keep-alive timeout all succeed and reach the
 * app exactly once (the app counts), and an SSE stream is relayed intact.
 * Skipped, loudly, when `/usr/bin/python3` has no uvicorn, except under
 * CI=true, where it must run.
 */
import assert from "node:assert/strict";
import type { Handler } from "../../lib/proxy/relay.ts";
import { FakeTarget, relayOver } from "../_helpers/fake_pool.ts";

const PYTHON = "/usr/bin/python3";

const APP = `
import asyncio, json

counts = {}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    path = scope["path"]
    if path == "/sse":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"data: %d\\n\\n" % i, "more_body": True})
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"data: [DONE]\\n\\n"})
        return
    if path == "/counts":
        out = json.dumps(counts).encode()
    else:
        key = path + "?" + scope["query_string"].decode()
        counts[key] = counts.get(key, 0) + 1
        out = json.dumps({"key": key, "count": counts[key], "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
`;

async function uvicornAvailable(): Promise<string | null> {
  try {
    const r = await new Deno.Command(PYTHON, {
      args: ["-c", "import uvicorn"],
      stdout: "null",
      stderr: "null",
    }).output();
    return r.success ? null : `${PYTHON} cannot import uvicorn`;
  } catch (err) {
    return `${PYTHON} cannot run: ${err instanceof Error ? err.message : String(err)}`;
  }
}

const missing = await uvicornAvailable();
const ci = Deno.env.get("CI") === "true";
if (missing && !ci) {
  console.warn(
    `\n*** SKIPPING tests/http1/uvicorn_test.ts: ${missing} (apt-get install python3-uvicorn) ***\n`,
  );
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts uvicorn on a free port with its default keep-alive (5 s), runs `fn`, stops it. */
async function withUvicorn(fn: (h: Handler, url: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vastproxy-uvicorn-" });
  await Deno.writeTextFile(`${dir}/app.py`, APP);
  const port = freePort();
  const child = new Deno.Command(PYTHON, {
    args: [
      "-m",
      "uvicorn",
      "app:app",
      "--app-dir",
      dir,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--log-level",
      "warning",
    ],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const target = new FakeTarget(1, { baseUrl: `http://127.0.0.1:${port}` });
  try {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        (await Deno.connect({ hostname: "127.0.0.1", port })).close();
        break;
      } catch {
        if (Date.now() > deadline) throw new Error("uvicorn did not start within 15 s");
        await sleep(100);
      }
    }
    const h = relayOver([target]);
    await fn(h, `http://127.0.0.1:${port}`);
  } finally {
    target.close();
    try {
      child.kill("SIGTERM");
    } catch { /* exited */ }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "uvicorn: requests spaced around its 5 s keep-alive all succeed, each seen once",
  ignore: missing !== null && !ci,
  async fn() {
    assert.equal(missing, null, `CI=true requires uvicorn: ${missing}`);
    await withUvicorn(async (h) => {
      const gapsMs = [0, 2900, 3100, 4900, 5100];
      const keys: string[] = [];
      for (const [i, gap] of gapsMs.entries()) {
        await sleep(gap);
        const res = await h(
          new Request(`http://proxy.test/v1/chat?i=${i}`, { method: "POST", body: `b${i}` }),
        );
        assert.equal(res.status, 200, `request ${i} after ${gap} ms`);
        const j = await res.json();
        assert.deepEqual(j, { key: `/v1/chat?i=${i}`, count: 1, body: `b${i}` });
        keys.push(j.key);
      }
      const counts = await (await h(new Request("http://proxy.test/counts"))).json();
      assert.deepEqual(counts, Object.fromEntries(keys.map((k) => [k, 1])));
    });
  },
});

Deno.test({
  name: "uvicorn: an SSE stream is relayed intact",
  ignore: missing !== null && !ci,
  async fn() {
    assert.equal(missing, null, `CI=true requires uvicorn: ${missing}`);
    await withUvicorn(async (h) => {
      const res = await h(new Request("http://proxy.test/sse", { method: "POST", body: "{}" }));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "text/event-stream");
      assert.equal(
        await res.text(),
        "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\ndata: [DONE]\n\n",
      );
    });
  },
});
