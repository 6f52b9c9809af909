import assert from "node:assert/strict";
import { parseWrk } from "../../bench/wrk.ts";

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
