import assert from "node:assert/strict";
import { type CpuProfile, shortFile, summarize } from "../../bench/profile_summary.ts";

const NPM = "file:///root/.cache/deno/npm/registry.npmjs.org/ssh2/1.17.0/lib/protocol/Protocol.js";
const OWN = "file:///work/x/lib/http1/client.ts";

function frame(functionName: string, url = "") {
  return { functionName, url, lineNumber: 0 };
}

Deno.test("shortFile() names npm, own and runtime files briefly", () => {
  assert.equal(shortFile(NPM), "npm:ssh2/lib/protocol/Protocol.js");
  assert.equal(shortFile(OWN), "lib/http1/client.ts");
  assert.equal(shortFile("ext:deno_http/00_serve.ts"), "ext:deno_http/00_serve.ts");
});

Deno.test("summarize() weights samples by time, drops idle, bills natives to their caller", () => {
  // root → ssh2 → node net (ext) → writev (native); root → client.ts; root → serve (ext); idle.
  const p: CpuProfile = {
    nodes: [
      { id: 1, callFrame: frame("(root)"), children: [2, 5, 6, 7] },
      { id: 2, callFrame: frame("send", NPM), children: [3] },
      { id: 3, callFrame: frame("write", "ext:deno_node/net.ts"), children: [4] },
      { id: 4, callFrame: frame("writev") },
      { id: 5, callFrame: frame("readHead", OWN) },
      { id: 6, callFrame: frame("serve", "ext:deno_http/00_serve.ts") },
      { id: 7, callFrame: frame("(idle)") },
    ],
    startTime: 0,
    endTime: 100,
    // samples at t = 0, 30, 50, 60: writev 30 µs, readHead 20, serve 10, idle 40.
    samples: [4, 5, 6, 7],
    timeDeltas: [0, 30, 20, 10],
  };
  const s = summarize(p);
  assert.equal(s.totalUs, 100);
  assert.equal(s.idleUs, 40);
  assert.equal(s.busyUs, 60);
  const cat = Object.fromEntries(s.byCategory.map((r) => [r.key, r.us]));
  assert.deepEqual(cat, {
    "ssh2 (+ lib/tunnel)": 30,
    "http1 client (lib/http1)": 20,
    "Deno.serve/ext": 10,
  });
  assert.equal(s.byFile[0].key, "ext:deno_node/net.ts → native");
  assert.equal(s.byFile[0].share, 0.5);
});
