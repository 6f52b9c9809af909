/**
 * Cross-client property (issue #10 item 6): an engine that writes stray
 * bytes after its responses (a whole extra response, at once or a few ms
 * later) and answers HEAD with a body must never make one client see
 * another client's answer. 50 clients, each on its own connection to a real
 * Deno.serve running the relay, send tagged requests in sequence; each may
 * only ever see its own tags (or a 502), and the engine must receive each
 * tagged request exactly once.
 */
import assert from "node:assert/strict";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";
import { FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { ok, type RawReply, startRawEngine } from "../_helpers/raw_engine.ts";
import { prng } from "../_helpers/prng.ts";

const CLIENTS = 50;
const PER_CLIENT = 5;

/** A minimal keep-alive HTTP/1.1 reader over one socket (content-length or chunked bodies). */
class RawClient {
  #conn: Deno.Conn;
  #buf = new Uint8Array(0);
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async #more(): Promise<void> {
    const chunk = new Uint8Array(16 * 1024);
    const n = await this.#conn.read(chunk);
    if (n === null) throw new Error("proxy closed the connection");
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
  }

  async #line(): Promise<string> {
    let i: number;
    while ((i = this.#buf.indexOf(10)) === -1) await this.#more();
    const line = bytesToLatin1(this.#buf.subarray(0, i)).replace(/\r$/, "");
    this.#buf = this.#buf.slice(i + 1);
    return line;
  }

  async #bytes(n: number): Promise<string> {
    while (this.#buf.length < n) await this.#more();
    const s = bytesToLatin1(this.#buf.subarray(0, n));
    this.#buf = this.#buf.slice(n);
    return s;
  }

  async send(
    method: string,
    target: string,
    body: string,
  ): Promise<{ status: number; body: string }> {
    const len = method === "HEAD" ? "" : `content-length: ${body.length}\r\n`;
    await this.#conn.write(
      latin1ToBytes(
        `${method} ${target} HTTP/1.1\r\nhost: p\r\n${len}\r\n${method === "HEAD" ? "" : body}`,
      ),
    );
    const status = Number((await this.#line()).split(" ")[1]);
    const headers = new Map<string, string>();
    for (let l = await this.#line(); l !== ""; l = await this.#line()) {
      const c = l.indexOf(":");
      headers.set(l.slice(0, c).toLowerCase(), l.slice(c + 1).trim());
    }
    if (method === "HEAD" || status === 204 || status === 304) return { status, body: "" };
    if (headers.get("transfer-encoding")?.includes("chunked")) {
      let out = "";
      for (;;) {
        const size = parseInt((await this.#line()).split(";")[0], 16);
        if (size === 0) {
          while ((await this.#line()) !== "");
          return { status, body: out };
        }
        out += await this.#bytes(size);
        await this.#line();
      }
    }
    return { status, body: await this.#bytes(Number(headers.get("content-length") ?? 0)) };
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

Deno.test({
  name: "stray engine bytes and HEAD bodies never cross between clients",
  async fn() {
    const seed = Number(Deno.env.get("NO_CROSSING_SEED") ?? Date.now() % 1_000_000);
    const rand = prng(seed);
    const engine = startRawEngine((r): RawReply => {
      const tag = r.method === "HEAD"
        ? new URL(r.target, "http://x").searchParams.get("tag") ?? "?"
        : bytesToLatin1(r.body);
      if (r.method === "HEAD") {
        // A HEAD answered with a body that looks like a whole next response.
        return {
          parts: [
            `HTTP/1.1 200 OK\r\ncontent-length: ${tag.length}\r\n\r\n${tag}`,
            ok(`STRAY-${tag}`),
          ],
        };
      }
      const roll = rand();
      const stray = ok(`STRAY-${tag}`);
      if (roll < 0.3) return ok(tag);
      if (roll < 0.65) return ok(tag) + stray; // right behind the response
      return { parts: [ok(tag), stray], partDelayMs: 1 + Math.floor(rand() * 8) }; // a few ms later
    });
    const target = new FakeTarget(1, { baseUrl: engine.url });
    const h = relayOver([target]);
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (r, info) => guardResponse(await h(r, info)),
    );
    const sent: string[] = [];
    const problems: string[] = [];
    const deadline = AbortSignal.timeout(20_000);
    try {
      await Promise.all(Array.from({ length: CLIENTS }, async (_, c) => {
        const client = new RawClient(
          await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }),
        );
        try {
          for (let r = 0; r < PER_CLIENT && !deadline.aborted; r++) {
            const tag = `c${c}r${r}`;
            const head = (c + r) % 4 === 3;
            const path = head ? `/head?tag=${tag}` : `/tag?t=${tag}`;
            sent.push(path);
            const res = await client.send(head ? "HEAD" : "POST", path, tag);
            if (res.status === 502) continue;
            if (res.status !== 200) problems.push(`${tag}: status ${res.status}`);
            else if (head) {
              if (res.body !== "") problems.push(`${tag}: HEAD body ${res.body}`);
            } else if (res.body !== tag && !res.body.startsWith(`STRAY-c${c}r`)) {
              problems.push(`${tag}: got ${JSON.stringify(res.body)}`);
            }
          }
        } finally {
          client.close();
        }
      }));
      assert.ok(!deadline.aborted, `seed ${seed}: did not finish within 20 s`);
      assert.deepEqual(problems, [], `seed ${seed}`);
      for (const p of sent) {
        assert.equal(engine.count(p), 1, `seed ${seed}: ${p} seen ${engine.count(p)}x`);
      }
      assert.equal(engine.requests.length, sent.length, `seed ${seed}: engine saw extra requests`);
      assert.equal(target.doubleReleases, 0);
    } finally {
      target.close();
      await server.shutdown();
      await engine.close();
    }
  },
});
