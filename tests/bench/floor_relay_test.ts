import assert from "node:assert/strict";
import { echoServer, tcpServer } from "../_helpers/echo_server.ts";
import { freePort } from "../_helpers/sshd.ts";
import { rawExchange } from "../faults/_local_proxy.ts";
import { waitPort } from "../../bench/_fixture.ts";
import { assertEchoedConcurrently, assertExits, countToEnd } from "../_helpers/byte_pipe.ts";

const RELAY = new URL("../../bench/floor/relay.ts", import.meta.url).pathname;

/** The Deno relay on a free port in front of `upstreamPort`, living at most `seconds`. */
function spawnRelay(upstreamPort: number, seconds: number, stderr: "piped" | "null") {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", RELAY, String(port), String(upstreamPort), String(seconds)],
    stdout: "null",
    stderr,
  }).spawn();
  /** Ends the relay if it still runs and waits for it. */
  const stop = async () => {
    try {
      child.kill();
    } catch { /* exited */ }
    await child.status;
  };
  return { port, child, stop };
}

Deno.test("bench floor relay (path g): bytes pass unchanged both ways, and it exits by itself", async () => {
  const echo = echoServer();
  const { port, child, stop } = spawnRelay(echo.port, 2, "piped");
  try {
    await waitPort(port, 20_000);
    // Several connections at once, each with its own upstream, and a payload
    // far larger than one read, so a mixed-up or truncated relay shows.
    await assertEchoedConcurrently(port, [1, 300, 200_000]);
    await assertExits(
      child,
      0,
      10_000,
      "the relay should exit after MAX_SECONDS",
      async () => new TextDecoder().decode((await child.output()).stderr),
    );
  } finally {
    await stop();
    await echo.close();
  }
});

Deno.test("bench floor relay: bad arguments are refused with a usage line", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", RELAY, "0", "x"],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /usage: relay\.ts LISTEN_PORT UPSTREAM_PORT/);
});

Deno.test("bench floor relay: a client's half-close still gets the answer", async () => {
  // Answers only once the client has said everything (EOF), like a server
  // reading a request body that ends with the connection's write side.
  const server = tcpServer(async (c) => {
    const reply = new TextEncoder().encode(`got ${await countToEnd(c)} bytes`);
    for (let at = 0; at < reply.length;) at += await c.write(reply.subarray(at));
  });
  const { port, stop } = spawnRelay(server.port, 30, "null");
  try {
    await waitPort(port, 20_000);
    const text = await rawExchange(port, "hello", { halfClose: true, timeoutMs: 10_000 });
    assert.equal(text, "got 5 bytes", "the relay closed both sides at the client's EOF");
  } finally {
    await stop();
    await server.close();
  }
});
