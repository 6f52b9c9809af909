/**
 * Review of the bench's Deno floor relay (path g): a plain byte relay must
 * pass a half-close on, as `ssh -L` does, instead of closing both sides when
 * one side stops sending.
 */
import assert from "node:assert/strict";
import { tcpServer } from "../_helpers/echo_server.ts";
import { freePort } from "../_helpers/sshd.ts";
import { waitPort } from "../../bench/_fixture.ts";

const RELAY = new URL("../../bench/floor/relay.ts", import.meta.url).pathname;

Deno.test("bench floor relay (review): a client's half-close still gets the answer", async () => {
  // Answers only once the client has said everything (EOF), like a server
  // reading a request body that ends with the connection's write side.
  const server = tcpServer(async (c) => {
    const buf = new Uint8Array(1024);
    let total = 0;
    for (;;) {
      const n = await c.read(buf);
      if (n === null) break;
      total += n;
    }
    const reply = new TextEncoder().encode(`got ${total} bytes`);
    for (let at = 0; at < reply.length;) at += await c.write(reply.subarray(at));
  });
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", RELAY, String(port), String(server.port), "30"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const conn = await (async () => {
    await waitPort(port, 20_000);
    return await Deno.connect({ hostname: "127.0.0.1", port });
  })();
  const timer = setTimeout(() => conn.close(), 10_000); // bounds the reads below
  try {
    await conn.write(new TextEncoder().encode("hello"));
    await conn.closeWrite();
    let text = "";
    const buf = new Uint8Array(1024);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        break;
      }
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.equal(text, "got 5 bytes", "the relay closed both sides at the client's EOF");
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
    try {
      child.kill();
    } catch { /* exited */ }
    await child.status;
    await server.close();
  }
});
