/**
 * Keep-alive, pipelining, HTTP/1.0, interim answers, bodiless answers and
 * Deno.serve with streamed engine answers: source path vs stream path.
 */
import assert from "node:assert/strict";
import { eventually } from "../_helpers/fake_pool.ts";
import {
  dechunk,
  oneRequest,
  RawClient,
  sleep,
  split,
  startEngine,
  startRig,
} from "../_helpers/source_rig.ts";

const H =
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const SSE = [H, "5\r\nhello\r\n", "6\r\n world\r\n", "0\r\n\r\n"];

function scripted(parts: string[], gap = 5) {
  return startEngine(async (side) => {
    await sleep(gap);
    for (const p of parts) {
      await side.write(p);
      await sleep(gap);
    }
  });
}

Deno.test("review: three streamed answers in a row on one keep-alive client connection", async () => {
  for (const strip of [false, true]) {
    const engine = scripted(SSE);
    const rig = startRig(engine.port, { stripSource: strip });
    const c = await RawClient.open(rig.port);
    try {
      for (let i = 1; i <= 3; i++) {
        await c.send("GET /v1/s HTTP/1.1\r\nHost: h\r\n\r\n");
        await c.until((s) => s.split("0\r\n\r\n").length - 1 >= i, 3000);
      }
      assert.equal(c.closed, false);
      const answers = c.received.split("HTTP/1.1 200 OK").slice(1);
      assert.equal(answers.length, 3);
      for (const a of answers) assert.equal(dechunk(split("X" + a).body).body, "hello world");
      await rig.target.released(3);
      assert.equal(rig.client.stats().opened, 1, "engine channel reused");
      assert.ok(rig.target.outcomes.every((o) => !o.transportError && !o.clientCancelled));
      if (!strip) assert.ok(rig.sourceUsed());
    } finally {
      c.close();
      await rig.close();
      await engine.close();
    }
  }
});

Deno.test("review: pipelined requests behind a streamed answer", async () => {
  const wires: string[] = [];
  for (const strip of [false, true]) {
    const engine = scripted(SSE);
    const rig = startRig(engine.port, { stripSource: strip });
    const c = await RawClient.open(rig.port);
    try {
      await c.send("GET /v1/a HTTP/1.1\r\nHost: h\r\n\r\nGET /v1/b HTTP/1.1\r\nHost: h\r\n\r\n");
      await c.until((s) => s.split("0\r\n\r\n").length - 1 >= 2, 3000);
      wires.push(c.received.replace(/\r\ndate: [^\r]*/g, ""));
      await rig.target.released(2);
    } finally {
      c.close();
      await rig.close();
      await engine.close();
    }
  }
  assert.equal(wires[0], wires[1]);
});

Deno.test("review: HTTP/1.0 client gets a close-delimited streamed answer", async () => {
  const wires: { wire: string; closed: boolean }[] = [];
  for (const strip of [false, true]) {
    const engine = scripted(SSE);
    const rig = startRig(engine.port, { stripSource: strip });
    const c = await RawClient.open(rig.port);
    try {
      await c.send("GET /v1/a HTTP/1.0\r\nHost: h\r\n\r\n");
      await c.untilClosed(3000);
      wires.push({ wire: c.received.replace(/\r\ndate: [^\r]*/g, ""), closed: c.closed });
      await rig.target.released(1);
      assert.equal(rig.target.outcomes[0].transportError, false);
      assert.equal(rig.target.outcomes[0].clientCancelled, false);
    } finally {
      c.close();
      await rig.close();
      await engine.close();
    }
  }
  assert.deepEqual(wires[0], wires[1]);
  assert.ok(wires[0].wire.endsWith("\r\n\r\nhello world"), JSON.stringify(wires[0].wire));
});

for (
  const [name, parts, method] of [
    ["1xx before streamed", [
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n",
      ...SSE,
    ], "GET"],
    ["HEAD with a streamed head", [H], "HEAD"],
    [
      "204 with chunked header",
      ["HTTP/1.1 204 No Content\r\ntransfer-encoding: chunked\r\n\r\n"],
      "GET",
    ],
    ["304", ["HTTP/1.1 304 Not Modified\r\netag: x\r\n\r\n"], "GET"],
    [
      "zero-length chunk mid-body (engine bug: terminator)",
      [H, "5\r\nhello\r\n", "0\r\n\r\n"],
      "GET",
    ],
    ["bad header value dropped", [
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-bad: a\x01b\r\ntransfer-encoding: chunked\r\n\r\n",
      "5\r\nhello\r\n",
      "0\r\n\r\n",
    ], "GET"],
  ] as [string, string[], string][]
) {
  Deno.test(`review: ${name}`, async () => {
    const res: { wire: string; closed: boolean; outcome: unknown; opened: number }[] = [];
    for (const strip of [false, true]) {
      const engine = scripted(parts);
      const rig = startRig(engine.port, { stripSource: strip });
      try {
        const r = await oneRequest(rig, "/v1/x", { method, timeoutMs: 1500 });
        await rig.target.released(1);
        await eventually(() => rig.lines.length === 1);
        res.push({ ...r, outcome: rig.target.outcomes[0], opened: rig.client.stats().opened });
      } finally {
        await rig.close();
        await engine.close();
      }
    }
    assert.deepEqual(res[0], {
      ...res[1],
      outcome: {
        ...(res[1].outcome as object),
        latencyMs: (res[0].outcome as { latencyMs: number }).latencyMs,
      },
    });
  });
}

Deno.test("review: Deno.serve path relays a streamed answer", async () => {
  const engine = scripted(SSE);
  const rig = startRig(engine.port, { denoServe: true });
  try {
    const res = await fetch(`http://127.0.0.1:${rig.port}/v1/s`);
    assert.equal(await res.text(), "hello world");
    await rig.target.released(1);
    assert.equal(rig.target.outcomes[0].transportError, false);
    assert.equal(rig.sourceUsed(), false);
  } finally {
    await rig.close();
    await engine.close();
  }
});

Deno.test("review: Deno.serve path, engine cut mid-body: transport error", async () => {
  const engine = startEngine(async (side) => {
    await side.write(H + "5\r\nhello\r\n");
    await sleep(20);
    side.close();
  });
  const rig = startRig(engine.port, { denoServe: true });
  try {
    const res = await fetch(`http://127.0.0.1:${rig.port}/v1/s`);
    await res.text().catch(() => {});
    await rig.target.released(1);
    assert.equal(rig.target.outcomes[0].transportError, true);
  } finally {
    await rig.close();
    await engine.close();
  }
});
