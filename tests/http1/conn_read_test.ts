/**
 * `Conn.read()` settles a waiting read straight from the stream's events;
 * it used to wake the read, which then looked again. Both are driven with
 * the same generated sequences of stream events (chunks, end, close,
 * error, destroy) and reader calls (read, takeNow, unshift), over a plain
 * 'data' stream and over one delivering through `readDirect`, and must give
 * the same results, in the same order, at the same points. The state is
 * compared where its owner can look: while no read of its own is waiting
 * (while one is, the old version held the chunk in its queue for a moment,
 * the new one hands it over at once). Chunks are at most 64 KiB, as TCP
 * reads and SSH packets (32 KiB) are, and nothing arrives after the end,
 * an error or destroy (ssh2's readDirect fails a chunk after EOF itself).
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import fc from "fast-check";
import { Conn } from "../../lib/http1/conn.ts";
import { Conn as OldConn } from "../_helpers/conn_oracle.ts";

/** The part of a Duplex `Conn` uses, recording pause/resume/destroy/more. */
class FakeStream extends EventEmitter {
  writableLength = 0;
  log: string[] = [];
  sink: ((b: Uint8Array) => boolean) | null = null;
  constructor(direct: boolean) {
    super();
    if (direct) {
      (this as unknown as { readDirect: unknown }).readDirect = (
        onData: (b: Uint8Array) => boolean,
      ) => {
        this.sink = onData;
        return () => this.log.push("more");
      };
    }
  }
  pause() {
    this.log.push("pause");
    return this;
  }
  resume() {
    this.log.push("resume");
    return this;
  }
  /** After end, close, error or destroy a stream delivers nothing more (Node streams, readDirect). */
  done = false;
  destroy() {
    this.log.push("destroy");
    this.done = true;
    return this;
  }
  finish(ev: "end" | "close" | "error"): void {
    this.done = true;
    if (ev === "error") this.emit("error", new Error("boom"));
    else this.emit(ev);
  }
  deliver(b: Uint8Array): void {
    if (this.done) return;
    if (this.sink) this.log.push(`sink:${this.sink(b)}`);
    else this.emit("data", b);
  }
}

type Op =
  | { t: "data"; n: number }
  | { t: "end" | "close" | "error" | "destroy" | "destroyWhy" | "read" | "tick" | "idle" }
  | { t: "takeNow"; n: number }
  | { t: "unshift"; n: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant("data" as const),
      n: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 20_000, max: 65_536 })),
    }),
  },
  { weight: 5, arbitrary: fc.record({ t: fc.constant("read" as const) }) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("tick" as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("takeNow" as const),
      n: fc.integer({ min: 0, max: 60 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("unshift" as const),
      n: fc.integer({ min: 1, max: 10 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constantFrom(
        "end" as const,
        "close" as const,
        "error" as const,
        "destroy" as const,
        "destroyWhy" as const,
        "idle" as const,
      ),
    }),
  },
);

interface AnyConn {
  read(): Promise<Uint8Array | null>;
  takeNow(n: number): Uint8Array | null;
  unshift(b: Uint8Array): void;
  destroy(reason?: unknown): void;
  readonly buffered: number;
  readonly dead: boolean;
  readonly clean: boolean;
  idle: boolean;
}

const hex = (b: Uint8Array | null) => (b === null ? "null" : Buffer.from(b).toString("hex"));
import { Buffer } from "node:buffer";

/** Runs `ops` against a Conn made by `make`; returns everything observable, in order. */
async function run(make: (s: Duplex) => AnyConn, direct: boolean, ops: Op[]): Promise<string[]> {
  const s = new FakeStream(direct);
  const c = make(s as unknown as Duplex);
  const out: string[] = [];
  let seq = 0;
  let pending = false;
  let burst = 0;
  const settle = async () => {
    for (let i = 0; i < 10; i++) await null;
  };
  for (const op of ops) {
    switch (op.t) {
      case "data": {
        // One socket read's worth (64 KiB) at most per turn while a read waits:
        // a waiting read takes its chunk at once now, so more than HIGH_WATER
        // in one turn would be paused one chunk later than before.
        if (pending && burst + op.n > 65_536) break;
        if (pending) burst += op.n;
        const b = new Uint8Array(op.n).map((_, i) => (seq * 7 + i) & 255);
        seq++;
        s.deliver(b);
        break;
      }
      case "end":
      case "close":
      case "error":
        s.finish(op.t);
        break;
      case "destroy":
        c.destroy();
        break;
      case "destroyWhy":
        c.destroy(new Error("why"));
        break;
      case "idle":
        c.idle = !c.idle;
        break;
      case "read": {
        // One reader at a time, as the HTTP client reads.
        if (pending) break;
        pending = true;
        const id = seq++;
        c.read().then(
          (b) => out.push(`read${id}:${hex(b)}`),
          (e) => out.push(`read${id}!${e instanceof Error ? e.message : String(e)}`),
        ).finally(() => (pending = false));
        break;
      }
      case "takeNow":
        if (!pending) out.push(`take:${hex(c.takeNow(op.n))}`);
        break;
      case "unshift":
        if (!pending) c.unshift(new Uint8Array(op.n).fill(0xee));
        break;
      case "tick":
        await settle();
        burst = 0;
        break;
    }
    // What the owner can see: it looks only while no read of its own waits.
    if (!pending) {
      out.push(`buffered=${c.buffered} dead=${c.dead} clean=${c.clean} log=${s.log.join(",")}`);
    }
  }
  await settle();
  out.push(`end buffered=${c.buffered} dead=${c.dead} log=${s.log.join(",")}`);
  return out;
}

Deno.test("Conn.read settles like the wake-and-look-again version it replaced", async () => {
  await fc.assert(
    fc.asyncProperty(fc.boolean(), fc.array(opArb, { maxLength: 40 }), async (direct, ops) => {
      const got = await run((s) => new Conn(s), direct, ops);
      const want = await run((s) => new OldConn(s), direct, ops);
      assert.deepEqual(got, want);
    }),
    { numRuns: 500 },
  );
});

Deno.test("a read waiting when a chunk, the end or an error arrives gets it", async () => {
  for (const direct of [false, true]) {
    const s = new FakeStream(direct);
    const c = new Conn(s as unknown as Duplex);
    const r1 = c.read();
    s.deliver(new Uint8Array([1, 2]));
    assert.deepEqual(await r1, new Uint8Array([1, 2]));
    const r2 = c.read();
    s.emit("end");
    assert.equal(await r2, null);
    const s2 = new FakeStream(direct);
    const c2 = new Conn(s2 as unknown as Duplex);
    const r3 = c2.read();
    s2.emit("error", new Error("gone"));
    await assert.rejects(r3, /SSH channel failed/);
  }
});
