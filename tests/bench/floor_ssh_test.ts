import assert from "node:assert/strict";
import { echoServer } from "../_helpers/echo_server.ts";
import { freePort, type Sshd, sshdAvailable, startSshd } from "../_helpers/sshd.ts";
import { waitPort } from "../../bench/_fixture.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";

const FORWARD = new URL("../../bench/floor/ssh_forward.ts", import.meta.url).pathname;
const ignore = !sshdAvailable();

/** The SSH floor in `mode` on a free port, through `sshd` to `enginePort`, living at most `seconds`. */
function spawnFloor(
  mode: string,
  sshd: Pick<Sshd, "port" | "clientKeyPath">,
  enginePort: number,
  seconds: number,
) {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys=homedir,hostname,osRelease",
      FORWARD,
      mode,
      String(port),
      String(sshd.port),
      String(enginePort),
      sshd.clientKeyPath,
      String(seconds),
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stop = async () => {
    try {
      child.kill();
    } catch { /* exited */ }
    await child.output();
  };
  return { port, child, stop };
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error(`connection ended after ${at} of ${n} bytes`);
    at += got;
  }
  return out;
}

Deno.test({
  name:
    "bench SSH floor (path h): bytes pass unchanged both ways over sshd, and it exits by itself",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const echo = echoServer();
    const { port, child, stop } = spawnFloor("bytes", sshd, echo.port, 4);
    try {
      await waitPort(port, 20_000);
      // Connections at once, each on its own channel, one far larger than a
      // channel window and a packet, so a mixed-up or truncated relay shows.
      const sizes = [1, 300, 300_000];
      await Promise.all(sizes.map(async (size, k) => {
        const conn = await Deno.connect({ hostname: "127.0.0.1", port });
        try {
          const sent = new Uint8Array(size).map((_, i) => (i * 31 + k * 7) & 0xff);
          const [, back] = await Promise.all([
            (async () => {
              for (let at = 0; at < size;) at += await conn.write(sent.subarray(at));
            })(),
            readExactly(conn, size),
          ]);
          assert.deepEqual(back, sent);
        } finally {
          conn.close();
        }
      }));
      const status = await Promise.race([
        child.status,
        new Promise<null>((r) => setTimeout(() => r(null), 15_000)),
      ]);
      assert.notEqual(status, null, "the floor should exit after MAX_SECONDS");
      assert.equal(status!.code, 0);
    } finally {
      await stop();
      await echo.close();
      await sshd.stop();
    }
  },
});

Deno.test({
  name:
    "bench SSH floor (path i): answers POSTs on one connection, rewriting fields as the proxy does",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const engine = await startFakeEngine({ model: "floor-model", engine: "vllm" });
    const { port, stop } = spawnFloor("http", sshd, engine.port, 60);
    try {
      await waitPort(port, 20_000);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        for (const n of [1, 2]) {
          const body = JSON.stringify({
            model: "floor-model",
            messages: [{ role: "user", content: `hello ${n}` }],
            max_tokens: 4,
          });
          await conn.write(new TextEncoder().encode(
            `POST /v1/chat/completions HTTP/1.1\r\nHost: floor.test\r\n` +
              `Authorization: Bearer client-secret\r\nContent-Type: application/json\r\n` +
              `Content-Length: ${body.length}\r\n\r\n${body}`,
          ));
          const { head, text } = await readResponse(conn);
          assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
          assert.match(head, /\r\nx-vastproxy-instance: 0\r\n/);
          const answer = JSON.parse(text);
          assert.equal(answer.model, "floor-model");
          assert.equal(answer.object, "chat.completion");
          // The engine got this request's body, byte for byte, without the client's token.
          assert.equal(engine.stats.lastBody, body);
          assert.equal(engine.stats.authHeaders.at(-1), null);
          assert.notEqual(engine.stats.lastHeaders?.get("host"), "floor.test");
        }
        assert.equal(engine.stats.requests, 2);
      } finally {
        conn.close();
      }
    } finally {
      await stop();
      await engine.close();
      await sshd.stop();
    }
  },
});

Deno.test("bench SSH floor: bad arguments are refused with a usage line", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", "--allow-env", FORWARD, "pipe", "1", "2"],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /^usage: ssh_forward\.ts bytes\|http /);
});

/** One response with a Content-Length body: its head (through the blank line) and body text. */
async function readResponse(conn: Deno.Conn): Promise<{ head: string; text: string }> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(65536);
  const latin1 = (b: Uint8Array) => String.fromCharCode(...b);
  for (;;) {
    const text = latin1(buf);
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) {
      const length = Number(/\r\ncontent-length: (\d+)\r\n/i.exec(text.slice(0, end + 2))?.[1]);
      assert.ok(Number.isInteger(length), `no Content-Length in ${text.slice(0, end)}`);
      if (buf.length >= end + 4 + length) {
        return {
          head: text.slice(0, end + 4),
          text: new TextDecoder().decode(buf.subarray(end + 4, end + 4 + length)),
        };
      }
    }
    const n = await conn.read(chunk);
    if (n === null) throw new Error("connection ended before a whole response");
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
  }
}
