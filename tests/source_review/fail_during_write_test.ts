/**
 * The engine dies mid-body (or finishes) while our write to a slow client
 * is pending. The stream path had a read of the relayed stream in flight
 * during every write (`next = reader.read()`), so the engine's failure
 * settled the attempt as a transport error, and its end released the
 * backend, at once. The source path first read only after each write, so
 * a slow client decided: a failure was logged as the client's cancel and
 * the backend stayed in flight until the client drained. It now reads
 * ahead as well.
 */
import assert from "node:assert/strict";
import { RawClient, sleep, startEngine, startRig } from "../_helpers/source_rig.ts";
import { eventually } from "../_helpers/fake_pool.ts";

const H =
  "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

async function run(strip: boolean, mib: number) {
  const engine = startEngine(async (side) => {
    const size = mib * 1024 * 1024;
    const body = "x".repeat(size);
    // One big chunk, never finished: the engine dies after sending it.
    await side.write(H + `${(size * 2).toString(16)}\r\n` + body);
    await sleep(300);
    side.close();
  });
  const rig = startRig(engine.port, { stripSource: strip });
  const c = await RawClient.open(rig.port);
  try {
    await c.send("GET /v1/x HTTP/1.1\r\nHost: h\r\n\r\n");
    await sleep(1200); // client reads nothing: our write is pending when the engine dies
    const before = rig.target.outcomes.length;
    c.close(); // leaves with unread bytes
    await rig.target.released(1, 3000);
    await eventually(() => rig.lines.length === 1, 2000);
    return { settledBeforeLeave: before, outcome: rig.target.outcomes[0], line: rig.lines[0] };
  } finally {
    c.close();
    await rig.close();
    await engine.close();
  }
}

Deno.test("review: engine dies while our write to a stalled client is pending, then the client leaves", async () => {
  for (const mib of [4]) {
    const src = await run(false, mib);
    const str = await run(true, mib);
    console.log(
      mib,
      "MiB",
      JSON.stringify({
        src: [src.settledBeforeLeave, src.outcome.transportError, src.outcome.clientCancelled],
        str: [str.settledBeforeLeave, str.outcome.transportError, str.outcome.clientCancelled],
      }),
    );
    assert.equal(
      src.outcome.transportError,
      str.outcome.transportError,
      `${mib} MiB: transportError differs`,
    );
    assert.equal(
      src.outcome.clientCancelled,
      str.outcome.clientCancelled,
      `${mib} MiB: clientCancelled differs`,
    );
  }
});

async function runEnd(strip: boolean, mib: number) {
  const engine = startEngine(async (side) => {
    const size = mib * 1024 * 1024;
    await side.write(H + `${size.toString(16)}\r\n` + "x".repeat(size));
    await sleep(300);
    // The engine is done: the terminator arrives while our write is pending.
    await side.write("\r\n0\r\n\r\n");
  });
  const rig = startRig(engine.port, { stripSource: strip });
  const c = await RawClient.open(rig.port);
  try {
    await c.send("GET /v1/x HTTP/1.1\r\nHost: h\r\n\r\n");
    await sleep(1200); // client reads nothing yet
    const before = {
      released: rig.target.outcomes.length,
      inFlight: rig.target.inFlight,
      idle: rig.client.stats().idle,
    };
    await c.until((s) => s.endsWith("0\r\n\r\n"), 10_000);
    await rig.target.released(1, 3000);
    return { before, outcome: rig.target.outcomes[0] };
  } finally {
    c.close();
    await rig.close();
    await engine.close();
  }
}

Deno.test("review: engine finished while our write to a stalled client is pending: released at once, as before", async () => {
  const src = await runEnd(false, 4);
  const str = await runEnd(true, 4);
  console.log(JSON.stringify({ src, str }));
  assert.equal(src.outcome.transportError, false);
  assert.deepEqual(
    src.before,
    str.before,
    "backend slot / engine channel released as early as on the stream path",
  );
});
