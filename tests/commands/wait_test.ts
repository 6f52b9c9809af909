import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { waitCommand } from "../../lib/commands/wait.ts";

function statusBody(healthy: number, total: number) {
  return {
    version: "0.1.0",
    listen: "127.0.0.1:8080",
    policy: "least-inflight",
    time: 0,
    startedAt: 0,
    counts: { total, healthy, inFlight: 0, requests: 0, errors: 0 },
    dph: 0,
    apiError: null,
    backends: Array.from(
      { length: total },
      (_, i) => ({ id: i + 1, state: i < healthy ? "healthy" : "connecting" }),
    ),
  };
}

/** A fetch that answers from a script of responses (or throws to mimic a refused connection). */
function scriptedFetch(script: (() => Response)[]) {
  const seen: Request[] = [];
  const fn = (input: RequestInfo | URL, init?: RequestInit) => {
    seen.push(new Request(input, init));
    const next = script.length > 1 ? script.shift()! : script[0];
    return Promise.resolve().then(next);
  };
  return { fetch: fn as typeof fetch, seen };
}

Deno.test("waitCommand() returns 0 once enough backends are healthy", async () => {
  const clock = new FakeClock();
  const { fetch, seen } = scriptedFetch([
    () => Response.json(statusBody(0, 2)),
    () => Response.json(statusBody(1, 2)),
    () => Response.json(statusBody(2, 2)),
  ]);
  const io = memoryIo();
  const done = waitCommand({ healthy: "2", timeout: "1m", authToken: "tok" }, io, { clock, fetch });
  for (let i = 0; i < 5; i++) await clock.tick(1_000);
  assert.equal(await done, 0);
  assert.equal(seen.length, 3);
  assert.equal(seen[0].url, "http://127.0.0.1:8080/vastproxy/status");
  assert.equal(seen[0].headers.get("authorization"), "Bearer tok");
  assert.match(io.stdout(), /waiting: 0\/2 healthy/);
  assert.match(io.stdout(), /ready: 2\/2 backends healthy/);
  assert.ok(!io.stdout().includes("tok"));
});

Deno.test("waitCommand() returns 1 on timeout and prints progress only when it changes", async () => {
  const clock = new FakeClock();
  const { fetch, seen } = scriptedFetch([() => Response.json(statusBody(0, 1))]);
  const io = memoryIo();
  const done = waitCommand({ healthy: "1", timeout: "5s" }, io, { clock, fetch });
  for (let i = 0; i < 10; i++) await clock.tick(1_000);
  assert.equal(await done, 1);
  assert.ok(seen.length >= 5 && seen.length <= 7, `polled ${seen.length} times`);
  assert.equal(io.stdout().match(/waiting:/g)?.length, 1);
  assert.match(io.stderr(), /timed out after 5s/);
});

Deno.test("waitCommand() keeps waiting while the proxy is not running yet", async () => {
  const clock = new FakeClock();
  const { fetch } = scriptedFetch([
    () => {
      throw new TypeError("error trying to connect: Connection refused");
    },
    () => Response.json(statusBody(1, 1)),
  ]);
  const io = memoryIo();
  const done = waitCommand({}, io, { clock, fetch });
  for (let i = 0; i < 3; i++) await clock.tick(1_000);
  assert.equal(await done, 0);
  assert.match(
    io.stdout(),
    /cannot reach vastproxy at http:\/\/127\.0\.0\.1:8080.*is it running\?/,
  );
});

Deno.test("waitCommand() against a real closed port times out with exit 1", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const io = memoryIo();
  const code = await waitCommand({ url: `http://127.0.0.1:${port}`, timeout: "300ms" }, io, {
    pollMs: 100,
  });
  assert.equal(code, 1);
  assert.match(io.stderr(), /timed out/);
});

Deno.test("waitCommand() stops at once with 2 when the proxy rejects the token", async () => {
  const { fetch } = scriptedFetch([() => new Response("no", { status: 401 })]);
  const io = memoryIo();
  assert.equal(await waitCommand({}, io, { clock: new FakeClock(), fetch }), 2);
  assert.match(io.stderr(), /--auth-token/);
});
