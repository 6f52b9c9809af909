import assert from "node:assert/strict";
import { luaString, parseWrk, WrkRunner, wrkScript } from "../../bench/wrk.ts";
import { wrkOrSkip } from "../_helpers/wrk.ts";
import { tcpServer } from "../_helpers/echo_server.ts";

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

/**
 * A local HTTP server that answers each request as it arrives; every
 * `every`-th answer waits `stallMs` first (what `ssh -L`'s rare ~40 ms
 * stalls look like to wrk). Keeps the first request of each connection.
 */
function stallServer(every: number, stallMs: number) {
  const heads: string[] = [];
  let answered = 0;
  const server = tcpServer(async (conn) => {
    const buf = new Uint8Array(65536);
    for (let first = true;; first = false) {
      const n = await conn.read(buf);
      if (n === null) return;
      // Each wrk run opens its own connection: its first request is kept.
      if (first) heads.push(new TextDecoder().decode(buf.subarray(0, n)));
      if (++answered % every === 0) await new Promise((r) => setTimeout(r, stallMs));
      await conn.write(ANSWER);
    }
  });
  return { heads, url: `http://127.0.0.1:${server.port}`, close: () => server.close() };
}

const ANSWER = new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");

Deno.test("timing script in real wrk: same request, one sample per response, raw percentiles", async () => {
  if (!(await wrkOrSkip())) return;
  const STALL_MS = 60;
  const server = stallServer(20, STALL_MS);
  const dir = await Deno.makeTempDir();
  try {
    const url = `${server.url}/v1/x?q=1`;
    const job = {
      method: "POST" as const,
      body: '{"k":"v\n1"}',
      headers: { "content-type": "application/json", authorization: "Bearer t" },
    };
    const runWrk = async (timed: boolean) => {
      const script = `${dir}/${timed ? "timed" : "plain"}.lua`;
      await Deno.writeTextFile(script, wrkScript(job, timed));
      const before = server.heads.length;
      const out = await new Deno.Command("wrk", {
        args: ["-t1", "-c1", "-d2s", "--latency", "-s", script, url],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      return { text, first: server.heads[before] };
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
    assert.doesNotMatch(plain.text, /raw latency/);

    const raw = /^raw latency us: n=(\d+) p50=(-?\d+) p99=(-?\d+)$/m.exec(timed.text);
    assert.ok(raw, `no timing line in:\n${timed.text}`);
    const [n, p50, p99] = raw.slice(1).map(Number);
    const total = Number(/^\s*(\d+) requests in /m.exec(timed.text)![1]);
    assert.equal(n, total, "one sample per completed response");
    // Bounds a factor of ten wide: they check units and which rank is which,
    // not speed. 5% of answers waited STALL_MS; the rest did not wait.
    assert.ok(p99 >= STALL_MS * 1000 && p99 < STALL_MS * 10_000, `p99 ${p99} µs`);
    assert.ok(p50 < (STALL_MS * 1000) / 10, `p50 ${p50} µs is not a fast answer's`);
    // wrk's own p50 of the same run carries its made-up samples; the script's does not.
    assert.equal(parseWrk(timed.text, 2, null).p50Ms, p50 / 1000, "parseWrk takes the raw line");
    const wrkOwn = parseWrk(timed.text.replace(/^raw latency.*$/m, ""), 2, null).p50Ms;
    assert.ok(wrkOwn > p50 / 1000, `wrk's corrected p50 ${wrkOwn} ms vs raw ${p50 / 1000} ms`);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("WrkRunner at concurrency 1 reports the script's timing, not wrk's corrected one", async () => {
  if (!(await wrkOrSkip())) return;
  // Every 10th answer waits 100 ms: wrk's correction then adds about nine
  // made-up samples of 10–90 ms per stall, so its p50 lands at 10 ms or more.
  const server = stallServer(10, 100);
  const dir = await Deno.makeTempDir();
  try {
    const runner = new WrkRunner(dir);
    const job = {
      targets: [server.url],
      method: "POST" as const,
      path: "/v1/x",
      body: "{}",
      headers: { "content-type": "application/json" },
      concurrency: 1,
      durationMs: 1000,
      spread: 1,
    };
    const r = await runner.run(job);
    assert.equal(r.errors, 0, r.firstError ?? "");
    assert.ok(r.p99Ms >= 100, `p99 ${r.p99Ms} ms misses the stalls`);
    assert.ok(r.p50Ms < 5, `p50 ${r.p50Ms} ms is wrk's corrected figure, not a fast answer's`);
    // With eight connections per process it stays untimed (wrk's figures).
    const many = await runner.run({ ...job, concurrency: 8 });
    assert.equal(many.errors, 0, many.firstError ?? "");
    const scripts = [...Deno.readDirSync(dir)].map((f) =>
      Deno.readTextFileSync(`${dir}/${f.name}`)
    );
    assert.equal(scripts.filter((t) => t.includes("function response(")).length, 1);
  } finally {
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseWrk: a failed run, or a timed run that timed nothing, is an error", () => {
  const failed = parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n", 3, "exit 1");
  assert.equal(failed.errors, 1);
  const untimed = parseWrk(
    REPORT.replace(/^.*Non-2xx.*\n/m, "").replace(/^.*Socket errors.*\n/m, ""),
    2,
    null,
    true,
  );
  assert.equal(untimed.errors, 1);
  assert.equal(untimed.firstError, "wrk: the timing script recorded no response");
  const clean = parseWrk(
    REPORT.replace(/^.*Non-2xx.*\n/m, "").replace(/^.*Socket errors.*\n/m, ""),
    2,
    null,
  );
  assert.equal(clean.errors, 0);
  assert.equal(clean.firstError, null);
});
