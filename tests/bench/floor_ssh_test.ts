import assert from "node:assert/strict";
import { echoServer, tcpServer } from "../_helpers/echo_server.ts";
import { freePort, type Sshd, sshdAvailable, startSshd } from "../_helpers/sshd.ts";
import { waitPort } from "../../bench/_fixture.ts";
import {
  assertEchoedConcurrently,
  assertExits,
  countToEnd,
  readExactly,
  readToEnd,
} from "../_helpers/byte_pipe.ts";
import { startFakeEngine } from "../../lib/sim/fake_engine.ts";
import { wrkScript } from "../../bench/wrk.ts";
import { wrkOrSkip } from "../_helpers/wrk.ts";

const FORWARD = new URL("../../bench/floor/ssh_forward.ts", import.meta.url).pathname;
const ignore = !sshdAvailable();

/** The SSH floor in `mode` on a free port, through `sshd` to `enginePort`, living at most `seconds`. */
function spawnFloor(
  mode: string,
  sshd: Pick<Sshd, "port" | "clientKeyPath">,
  enginePort: number,
  seconds: number,
  token?: string,
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
      ...(token ? [token] : []),
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

/** What a floor test gets: the sshd, floors it starts, and cleanups run after it. */
interface FloorTest {
  sshd: Sshd;
  /** A floor in `mode` to `enginePort`, accepting once this resolves; stopped after the test. */
  floor(
    mode: string,
    enginePort: number,
    seconds: number,
    token?: string,
  ): Promise<ReturnType<typeof spawnFloor>>;
  /** Runs `close` after the test (last registered, first run). */
  later(close: () => Promise<unknown> | void): void;
}

/** A test with a real sshd (skipped loudly without one) and everything it starts stopped after. */
function floorTest(name: string, body: (t: FloorTest) => Promise<void>): void {
  Deno.test({
    name,
    ignore,
    async fn() {
      const sshd = await startSshd();
      const cleanups: (() => Promise<unknown> | void)[] = [() => sshd.stop()];
      const t: FloorTest = {
        sshd,
        async floor(mode, enginePort, seconds, token) {
          const f = spawnFloor(mode, sshd, enginePort, seconds, token);
          cleanups.push(f.stop);
          await waitPort(f.port, 20_000);
          return f;
        },
        later: (close) => void cleanups.push(close),
      };
      const failed: unknown[] = [];
      try {
        await body(t);
      } catch (err) {
        failed.push(err);
      }
      // Every cleanup runs, even after one fails; the first failure is reported.
      for (const close of cleanups.reverse()) {
        try {
          await close();
        } catch (err) {
          failed.push(err);
        }
      }
      if (failed.length > 0) throw failed[0];
    },
  });
}

floorTest(
  "bench SSH floor (path h): bytes pass unchanged both ways over sshd, and it exits by itself",
  async (t) => {
    const echo = echoServer();
    t.later(() => echo.close());
    const { port, child } = await t.floor("bytes", echo.port, 4);
    // Connections at once, each on its own channel, one far larger than a
    // channel window and a packet, so a mixed-up or truncated relay shows.
    await assertEchoedConcurrently(port, [1, 300, 300_000]);
    await assertExits(child, 0, 15_000, "the floor should exit after MAX_SECONDS");
  },
);

floorTest(
  "bench SSH floor (path i): answers POSTs on one connection, rewriting fields as the proxy does",
  async (t) => {
    const engine = await startFakeEngine({ model: "floor-model", engine: "vllm" });
    t.later(() => engine.close());
    const { port } = await t.floor("http", engine.port, 60, "inst-token-1");
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    t.later(() => conn.close());
    for (const n of [1, 2, 3]) {
      const body = JSON.stringify({
        model: "floor-model",
        messages: [{ role: "user", content: `hello ${n}` }],
        max_tokens: 4,
      });
      const request = new TextEncoder().encode(
        `POST /v1/chat/completions HTTP/1.1\r\nHost: floor.test\r\n` +
          `Authorization: Bearer client-secret\r\nContent-Type: application/json\r\n` +
          `Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nTE: trailers\r\n` +
          `X-VastProxy-Instance: 7\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      if (n === 3) {
        // Head and part of the body, a pause, then the rest: what is left
        // over between reads must be kept, not a view of the read buffer.
        const cut = request.length - 10;
        await conn.write(request.subarray(0, cut));
        await new Promise((r) => setTimeout(r, 100));
        await conn.write(request.subarray(cut));
      } else {
        await conn.write(request);
      }
      const { head, text } = await readResponse(conn);
      assert.match(head, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(head, /\r\nx-vastproxy-instance: 0\r\n/);
      const answer = JSON.parse(text);
      assert.equal(answer.model, "floor-model");
      assert.equal(answer.object, "chat.completion");
      // The engine got this request's body byte for byte, the instance token
      // instead of the client's, its own address as Host, and none of the
      // hop-by-hop fields nor the proxy's own header.
      assert.equal(engine.stats.lastBody, body);
      assert.equal(engine.stats.authHeaders.at(-1), "Bearer inst-token-1");
      const seen = engine.stats.lastHeaders!;
      assert.equal(seen.get("host"), `127.0.0.1:${engine.port}`);
      for (const name of ["x-drop", "te", "x-vastproxy-instance"]) {
        assert.equal(seen.get(name), null, `${name} reached the engine`);
      }
    }
    assert.equal(engine.stats.requests, 3);
  },
);

floorTest("bench SSH floor (path i): the engine's hop-by-hop fields are not relayed", async (t) => {
  // A raw engine: one fixed answer per request head, with fields a proxy must drop.
  const answer = "HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: s\r\n" +
    "Keep-Alive: timeout=5\r\nx-vastproxy-instance: 99\r\nX-Kept: yes\r\n" +
    "Content-Length: 2\r\n\r\nok";
  const engine = tcpServer(async (c) => {
    const buf = new Uint8Array(4096);
    let text = "";
    for (;;) {
      const n = await c.read(buf);
      if (n === null) return;
      text += new TextDecoder().decode(buf.subarray(0, n));
      while (text.includes("\r\n\r\n")) {
        text = text.slice(text.indexOf("\r\n\r\n") + 4);
        await c.write(new TextEncoder().encode(answer));
      }
    }
  });
  t.later(() => engine.close());
  const { port } = await t.floor("http", engine.port, 60);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  t.later(() => conn.close());
  await conn.write(new TextEncoder().encode("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"));
  const { head, text } = await readResponse(conn);
  assert.equal(text, "ok");
  assert.match(head, /\r\nx-kept: yes\r\n/i);
  assert.doesNotMatch(head, /x-secret|keep-alive|: 99/i);
  assert.equal(head.match(/x-vastproxy-instance/gi)?.length, 1);
});

floorTest(
  "bench SSH floor (path h): half-closes pass both ways, and a slow reader loses nothing",
  async (t) => {
    // Says "hi" and half-closes at once, then counts what it reads to EOF
    // (per connection: waitPort's probe is one too).
    const totals: number[] = [];
    const engine = tcpServer(async (c) => {
      await c.write(new TextEncoder().encode("hi"));
      await c.closeWrite();
      totals.push(await countToEnd(c));
    });
    t.later(() => engine.close());
    const echo = echoServer();
    t.later(() => echo.close());
    const toEngine = await t.floor("bytes", engine.port, 60);
    const toEcho = await t.floor("bytes", echo.port, 60);

    const conn = await Deno.connect({ hostname: "127.0.0.1", port: toEngine.port });
    t.later(() => conn.close());
    // The engine's EOF arrives while this side is still open...
    const got = await Promise.race([
      readToEnd(conn),
      new Promise<null>((r) => setTimeout(() => r(null), 10_000)),
    ]);
    assert.notEqual(got, null, "the engine's half-close never reached the client");
    assert.equal(new TextDecoder().decode(got!), "hi");
    // ...and this side can still send, then end its half.
    await conn.write(new TextEncoder().encode("hello"));
    await conn.closeWrite();
    for (let i = 0; i < 100 && !totals.includes(5); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(totals.includes(5), `the engine read ${JSON.stringify(totals)}, not 5 bytes`);

    // 16 MiB echoed while the client reads nothing for a second: more than
    // loopback's socket buffers hold, so the floor's queue passes its
    // high-water mark and the channel must pause and resume.
    const slow = await Deno.connect({ hostname: "127.0.0.1", port: toEcho.port });
    t.later(() => slow.close());
    const size = 16 << 20;
    const sent = new Uint8Array(size).map((_, i) => (i * 13) & 0xff);
    const writing = (async () => {
      for (let at = 0; at < size;) at += await slow.write(sent.subarray(at));
    })();
    await new Promise((r) => setTimeout(r, 1_000));
    const back = await readExactly(slow, size);
    await writing;
    assert.deepEqual(back, sent);
  },
);

floorTest(
  "bench SSH floor (path h): clients that reset mid-answer cost only their own connection",
  async (t) => {
    const echo = echoServer();
    t.later(() => echo.close());
    const { port, child } = await t.floor("bytes", echo.port, 6);
    // Some send 200 KB and close with the echo unread (the kernel resets the
    // connection while the floor is still writing to it); the rest get their
    // echo and close at once, so the engine's end and the channel's close
    // race the floor's own closing.
    await Promise.all(Array.from({ length: 60 }, async (_, k) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      try {
        if (k % 3 === 0) {
          await conn.write(new Uint8Array(200_000).fill(7));
          await new Promise((r) => setTimeout(r, 20));
        } else {
          await conn.write(new Uint8Array(10).fill(k));
          await readExactly(conn, 10);
        }
      } finally {
        conn.close();
      }
    }));
    await new Promise((r) => setTimeout(r, 500));
    await assertEchoedConcurrently(port, [10]);
    await assertExits(child, 0, 15_000, "the floor should exit after MAX_SECONDS");
  },
);

floorTest(
  "bench SSH floor (h, i): a wrk burst and its closing connections leave the floor serving",
  async (t) => {
    if (!(await wrkOrSkip())) return;
    const engine = await startFakeEngine({ model: "floor-model", engine: "vllm", keepLast: 10 });
    t.later(() => engine.close());
    const dir = await Deno.makeTempDir({ prefix: "vastproxy-floor-wrk-" });
    t.later(() => Deno.remove(dir, { recursive: true }));
    const body = JSON.stringify({ model: "floor-model", messages: [], max_tokens: 2 });
    const script = `${dir}/post.lua`;
    const headers = { "content-type": "application/json" };
    await Deno.writeTextFile(script, wrkScript({ method: "POST", body, headers }, false));
    for (const mode of ["bytes", "http"]) {
      const { port } = await t.floor(mode, engine.port, 60);
      const url = `http://127.0.0.1:${port}/v1/chat/completions`;
      // 32 connections for a second, as the bench's warm-up: wrk closes them
      // all at the end, some with an answer still on its way. Three bursts,
      // as a race at a close does not show on every one.
      for (let burst = 0; burst < 3; burst++) {
        const out = await new Deno.Command("wrk", {
          args: ["-t2", "-c32", "-d1s", "-s", script, url],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assert.ok(out.success, new TextDecoder().decode(out.stderr));
        assert.match(new TextDecoder().decode(out.stdout), /\d+ requests in/);
      }
      await new Promise((r) => setTimeout(r, 500));
      const res = await fetch(url, { method: "POST", headers, body });
      assert.equal(res.status, 200, `the ${mode} floor should still answer after the burst`);
      assert.equal((await res.json()).model, "floor-model");
    }
  },
);

floorTest(
  "bench SSH floor: an engine that is down costs its connection, and the floor still ends cleanly",
  async (t) => {
    const { port, child } = await t.floor("bytes", freePort(), 3);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    t.later(() => conn.close());
    // sshd refuses the channel: the client sees its connection end.
    assert.equal((await readToEnd(conn).catch(() => new Uint8Array(0))).length, 0);
    await assertExits(child, 0, 15_000, "the floor should exit after MAX_SECONDS");
  },
);

floorTest("bench SSH floor: losing the SSH connection ends the floor with an error", async (t) => {
  const echo = echoServer();
  t.later(() => echo.close());
  const { child } = await t.floor("bytes", echo.port, 60);
  await t.sshd.kill("SIGKILL");
  await assertExits(child, 1, 15_000, "the floor should exit when its SSH connection is gone");
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
