/**
 * A client that leaves at each point of a streamed answer: the engine's
 * connection is closed, the backend released exactly once with
 * clientCancelled=true and transportError=false, on the source path as on
 * the stream path.
 */
import assert from "node:assert/strict";
import { eventually } from "../_helpers/fake_pool.ts";
import { RawClient, sleep, startEngine, startRig } from "../_helpers/source_rig.ts";

const H =
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
const EV = 'f\r\ndata: {"a":1}\n\n\r\n';

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((
        _,
        rej,
      ) => (t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms))),
    ]);
  } finally {
    clearTimeout(t);
  }
}

type Mode =
  | "engine-read-pending" // engine silent after one event
  | "engine-streaming" // engine keeps sending events every 2 ms
  | "write-pending" // big body, client never reads, then leaves
  | "leave-with-engine-failure"; // engine cuts mid-body at the moment the client leaves

async function run(mode: Mode, strip: boolean, denoServe = false) {
  let stop = false;
  let cutEngine: (() => void) | null = null;
  const engine = startEngine(async (side) => {
    await side.write(H + EV);
    if (mode === "engine-streaming") {
      while (!stop && !side.closedByProxy) {
        if (!(await side.write(EV))) break;
        await sleep(2);
      }
    } else if (mode === "write-pending") {
      const big = "8000\r\n" + "x".repeat(0x8000) + "\r\n";
      while (!stop && !side.closedByProxy) if (!(await side.write(big))) break;
    } else if (mode === "leave-with-engine-failure") {
      cutEngine = () => side.close();
      await side.closedP;
    } else {
      await side.closedP;
    }
  });
  const rig = startRig(engine.port, { stripSource: strip, denoServe });
  const c = await RawClient.open(rig.port);
  try {
    await c.send(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    );
    if (mode === "write-pending") {
      await sleep(800); // buffers fill, server write pending
    } else {
      await c.until((s) => s.includes("data:"), 3000);
      await sleep(30);
    }
    if (mode === "leave-with-engine-failure") {
      (cutEngine as unknown as () => void)();
    }
    c.close();
    await withTimeout(engine.sides[0].closedP, 3000, "engine connection closed by proxy");
    await rig.target.released(1, 3000);
    await eventually(() => rig.lines.length === 1, 2000);
    await sleep(50);
    return {
      outcome: rig.target.outcomes[0],
      outcomes: rig.target.outcomes.length,
      doubles: rig.target.doubleReleases,
      line: rig.lines[0],
      inFlight: rig.target.inFlight,
      used: rig.sourceUsed(),
      stats: rig.client.stats(),
    };
  } finally {
    stop = true;
    c.close();
    await rig.close();
    await engine.close();
  }
}

for (const mode of ["engine-read-pending", "engine-streaming", "write-pending"] as Mode[]) {
  Deno.test(`review leave: ${mode}`, async () => {
    const src = await run(mode, false);
    const str = await run(mode, true);
    const info = JSON.stringify({ src, str });
    assert.ok(src.used);
    assert.equal(src.outcomes, 1, info);
    assert.equal(src.doubles, 0, info);
    assert.equal(src.inFlight, 0, info);
    assert.equal(src.outcome.clientCancelled, true, info);
    assert.equal(src.outcome.transportError, false, info);
    assert.equal(src.line.clientCancelled, true, info);
    assert.equal(src.outcome.clientCancelled, str.outcome.clientCancelled, info);
    assert.equal(src.outcome.transportError, str.outcome.transportError, info);
    assert.equal(src.stats.busy ?? 0, 0, info);
  });
}

Deno.test("review leave: client leaves exactly when the engine fails", async () => {
  for (let i = 0; i < 5; i++) {
    const src = await run("leave-with-engine-failure", false);
    const info = JSON.stringify(src);
    assert.equal(src.outcomes, 1, info);
    assert.equal(src.doubles, 0, info);
    assert.equal(src.inFlight, 0, info);
    // Either outcome may win the race, but never both flags.
    assert.ok(!(src.outcome.clientCancelled && src.outcome.transportError), info);
  }
});

Deno.test("review leave: Deno.serve path, client leaves while the engine streams", async () => {
  const r = await run("engine-streaming", false, true);
  const info = JSON.stringify(r);
  assert.equal(r.used, false);
  assert.equal(r.outcomes, 1, info);
  assert.equal(r.doubles, 0, info);
  assert.equal(r.outcome.clientCancelled, true, info);
  assert.equal(r.outcome.transportError, false, info);
});
