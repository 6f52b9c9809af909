import assert from "node:assert/strict";
import { findWrk, luaString, parseWrk, wrkScript } from "../../bench/wrk.ts";

const REPORT = `Running 2s test @ http://127.0.0.1:41177/v1/chat/completions
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   446.43us  173.66us   3.64ms   87.72%
    Req/Sec     2.32k   561.08     3.37k    66.67%
  Latency Distribution
     50%  419.00us
     75%  483.00us
     90%  611.00us
     99%    1.23ms
  4637 requests in 2.00s, 2.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2317.51
Transfer/sec:      1.00MB
`;

Deno.test("parseWrk reads rate, percentiles in any unit, and every kind of error", () => {
  const r = parseWrk(REPORT, 2, null);
  assert.equal(r.ok, 4637);
  assert.equal(r.errors, 7);
  assert.equal(r.rps, 2317.51);
  assert.equal(r.p50Ms, 0.419);
  assert.equal(r.p99Ms, 1.23);
  assert.equal(r.firstError, "wrk: 7 errors");
  const slow = parseWrk(REPORT.replace("99%    1.23ms", "99%    1.50s"), 2, null);
  assert.equal(slow.p99Ms, 1500);
});

Deno.test("parseWrk: a run that printed no report is an error, not a zero rate", () => {
  const r = parseWrk("", 2, "unable to connect to 127.0.0.1:1 Connection refused");
  assert.equal(r.ok, 0);
  assert.ok(Number.isNaN(r.rps));
  assert.match(r.firstError!, /unable to connect/);
  assert.equal(parseWrk("garbage", 2, null).firstError, "wrk: no report");
});

Deno.test("parseWrk takes the timing script's percentiles over wrk's corrected ones", () => {
  const r = parseWrk(REPORT + "raw latency us: n=4637 p50=388 p99=2041\n", 2, null);
  assert.equal(r.p50Ms, 0.388);
  assert.equal(r.p99Ms, 2.041);
  assert.equal(r.ok, 4637);
  // An empty histogram (no response timed) is no measurement: wrk's own numbers stand.
  const empty = parseWrk(REPORT + "raw latency us: n=0 p50=-1 p99=-1\n", 2, null);
  assert.equal(empty.p50Ms, 0.419);
  assert.equal(empty.p99Ms, 1.23);
});

Deno.test("luaString escapes with three digits, so a digit after an escape stays a digit", () => {
  assert.equal(luaString('a\n5"1\\9\t'), '"a\\0105\\0341\\0929\\009"');
  assert.equal(luaString("é"), '"\\195\\169"'); // UTF-8 bytes
  assert.equal(luaString("plain text {}:,"), '"plain text {}:,"');
});

Deno.test("wrkScript: the timing hooks only when asked for", () => {
  const job = {
    method: "POST" as const,
    body: "{}",
    headers: { "content-type": "application/json" },
  };
  assert.doesNotMatch(wrkScript(job, false), /function (request|response|done)/);
  assert.match(wrkScript(job, true), /function request\(\)[\s\S]*function response\(/);
});

/** wrk when installed; under CI=true it must be (.ci/run installs it). */
async function wrkOrSkip(): Promise<boolean> {
  if (await findWrk()) return true;
  if (Deno.env.get("CI") === "true") throw new Error("wrk is required in CI (CI=true)");
  console.warn("\n!!!!!!!! wrk not found: SKIPPING the real-wrk timing script test !!!!!!!!\n");
  return false;
}

Deno.test("timing script in real wrk: same request bytes, one sample per response, stalls seen", async () => {
  if (!(await wrkOrSkip())) return;
  const STALL_MS = 60;
  const heads: string[] = [];
  let answered = 0;
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  // Answers each request as it arrives; every 20th answer waits STALL_MS
  // first (what `ssh -L`'s rare 40 ms stalls look like to wrk).
  const serving = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      (async () => {
        const buf = new Uint8Array(65536);
        for (let first = true;; first = false) {
          const n = await conn.read(buf).catch(() => null);
          if (n === null) break;
          // Each wrk run opens its own connection: its first request is kept.
          if (first) heads.push(new TextDecoder().decode(buf.subarray(0, n)));
          if (++answered % 20 === 0) await new Promise((r) => setTimeout(r, STALL_MS));
          await conn.write(
            new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
          )
            .catch(() => {});
        }
        conns.delete(conn);
      })();
    }
  })();
  const dir = await Deno.makeTempDir();
  try {
    const url = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/v1/x?q=1`;
    const job = {
      method: "POST" as const,
      body: '{"k":"v\n1"}',
      headers: { "content-type": "application/json", authorization: "Bearer t" },
    };
    const runWrk = async (timed: boolean) => {
      const script = `${dir}/${timed ? "timed" : "plain"}.lua`;
      await Deno.writeTextFile(script, wrkScript(job, timed));
      const before = heads.length;
      const out = await new Deno.Command("wrk", {
        args: ["-t1", "-c1", "-d2s", "--latency", "-s", script, url],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      return { text, first: heads[before] };
    };
    const plain = await runWrk(false);
    const timed = await runWrk(true);
    // wrk orders header lines as Lua's table walk does, which varies from
    // one wrk process to the next; the lines themselves must be the same.
    const sorted = (req: string) => {
      const [head, body] = req.split("\r\n\r\n");
      const [line, ...fields] = head.split("\r\n");
      return { line, fields: fields.sort(), body };
    };
    assert.deepEqual(
      sorted(timed.first),
      sorted(plain.first),
      "the timed script sends the same request",
    );
    assert.match(timed.first, /^POST \/v1\/x\?q=1 HTTP\/1\.1\r\n[\s\S]*\r\n\r\n\{"k":"v\n1"\}$/);
    const raw = /^raw latency us: n=(\d+) p50=(-?\d+) p99=(-?\d+)$/m.exec(timed.text);
    assert.ok(raw, `no timing line in:\n${timed.text}`);
    const total = Number(/^\s*(\d+) requests in /m.exec(timed.text)![1]);
    assert.equal(Number(raw[1]), total, "one sample per completed response");
    // Every 20th response waited STALL_MS, so at least 5% of samples did.
    assert.ok(Number(raw[3]) >= STALL_MS * 1000, `p99 ${raw[3]} µs is below the stall`);
    assert.doesNotMatch(plain.text, /raw latency/);
  } finally {
    listener.close();
    for (const c of conns) c.close();
    await serving.catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});
