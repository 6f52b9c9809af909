/**
 * Upload limits against the real listener (`startProxy` → `Deno.serve`, real
 * TCP clients): stalled large uploads are bounded by `--max-buffered` and
 * `--body-timeout`, and a well-behaved client keeps being served meanwhile.
 */
import assert from "node:assert/strict";
import { startLocalProxy, until } from "./_local_proxy.ts";

const MIB = 1024 * 1024;
const MAX_BODY = 4 * MIB;
const BUDGET = 32 * MIB;
const BODY_TIMEOUT_MS = 3_000;

/** A raw client that sends a request head and the first bytes of a body, then stalls. */
class StalledUpload {
  text = "";
  readonly done: Promise<void>;
  readonly #conn: Deno.TcpConn;

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.done = (async () => {
      const buf = new Uint8Array(16 * 1024);
      const dec = new TextDecoder();
      for (;;) {
        let n: number | null;
        try {
          n = await conn.read(buf);
        } catch {
          break;
        }
        if (n === null) break;
        this.text += dec.decode(buf.subarray(0, n), { stream: true });
      }
    })();
  }

  static async open(port: number, length: number): Promise<StalledUpload> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      new TextEncoder().encode(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
          `Content-Type: application/json\r\nContent-Length: ${length}\r\n\r\n{"model":"m",`,
      ),
    );
    return new StalledUpload(conn);
  }

  /** Status of the answer, or null before one arrived. */
  get status(): number | null {
    const m = /^HTTP\/1\.1 (\d{3})/.exec(this.text);
    return m ? Number(m[1]) : null;
  }

  close() {
    try {
      this.#conn.close();
    } catch { /* the server closed it */ }
  }
}

Deno.test("upload budget: 16 stalled large uploads stay within --max-buffered and a normal client is served", async () => {
  const p = await startLocalProxy({
    instances: 1,
    maxBodyBytes: MAX_BODY,
    config: { maxBufferedBytes: BUDGET, bodyTimeoutMs: BODY_TIMEOUT_MS },
  });
  const stalled: StalledUpload[] = [];
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const port = Number(new URL(p.proxy.url).port);
    const chat = async () => {
      const started = performance.now();
      const res = await fetch(`${p.proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      });
      assert.equal(res.status, 200);
      await res.json();
      return performance.now() - started;
    };
    const baseline = await chat();

    for (let i = 0; i < 16; i++) stalled.push(await StalledUpload.open(port, MAX_BODY));
    // Large bodies may fill the budget but its last eighth (4 MiB): 7 are
    // held, the other 9 are told at once to come back later.
    await until("7 held, 9 refused", () =>
      p.proxy.bufferedBodies().used === 7 * MAX_BODY &&
      stalled.filter((s) => s.status === 503).length === 9);
    for (const s of stalled.filter((s) => s.status === 503)) {
      assert.match(s.text, /retry-after: 2/i);
      assert.match(s.text, /"code":"server_busy"/);
    }

    // A well-behaved client is served with normal latency meanwhile...
    for (let i = 0; i < 5; i++) {
      const ms = await chat();
      assert.ok(ms < baseline + 1_000, `chat took ${ms} ms (baseline ${baseline} ms)`);
    }
    const healthz = await fetch(`${p.proxy.url}/vastproxy/healthz`);
    assert.equal(healthz.status, 200);
    await healthz.body?.cancel();
    // ...while another large upload has to wait.
    const big = await fetch(`${p.proxy.url}/echo`, {
      method: "POST",
      body: new Uint8Array(MIB * 3),
    });
    assert.equal(big.status, 503);
    assert.equal((await big.json()).error.code, "server_busy");
    assert.ok(p.proxy.bufferedBodies().peak <= BUDGET, "the budget held");

    // After --body-timeout the stalled uploads get 408 and their memory is back.
    await until(
      "stalled uploads timed out",
      () => stalled.filter((s) => s.status === 408).length === 7,
      BODY_TIMEOUT_MS + 5_000,
    );
    for (const s of stalled.filter((s) => s.status === 408)) {
      assert.match(s.text, /"code":"request_timeout"/);
    }
    await until("budget released", () => p.proxy.bufferedBodies().used === 0);
    const after = await fetch(`${p.proxy.url}/echo`, {
      method: "POST",
      body: new Uint8Array(MAX_BODY),
    });
    assert.equal(after.status, 200);
    assert.equal((await after.json()).bodyLength, MAX_BODY);
    assert.equal(p.proxy.bufferedBodies().used, 0);
    assert.ok(p.proxy.bufferedBodies().peak <= BUDGET);
    assert.equal(p.engines[0].stats.paths.filter((x) => x.startsWith("POST /echo")).length, 1);
    await until("in-flight back to 0", () => p.proxy.status().counts.inFlight === 0);
  } finally {
    for (const s of stalled) s.close();
    await Promise.all(stalled.map((s) => s.done));
    await p.close();
  }
});
