import assert from "node:assert/strict";
import { fromWebResponse } from "../_helpers/fake_tunnel.ts";
import { FakeClock } from "../../lib/core/clock.ts";
import { BodyBudget, type BodyRead, BodyReader } from "../../lib/proxy/body.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { createHandler } from "../../lib/proxy/relay.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";

const P = "http://proxy.test";
const enc = new TextEncoder();

/** A request whose body comes from `chunks`, as a byte stream (like Deno.serve's) or not. */
function upload(
  chunks: (string | Uint8Array)[],
  opts: { length?: number; bytes?: boolean; stall?: boolean } = {},
): Request {
  const queue = chunks.map((c) => (typeof c === "string" ? enc.encode(c) : c));
  const pull = (c: ReadableStreamDefaultController<Uint8Array>) => {
    const next = queue.shift();
    if (next !== undefined) c.enqueue(next);
    else if (opts.stall) return new Promise<void>(() => {}); // never more, never done
    else c.close();
  };
  const body = opts.bytes
    ? new ReadableStream({
      type: "bytes",
      pull: (c) => pull(c as unknown as ReadableStreamDefaultController<Uint8Array>),
    })
    : new ReadableStream<Uint8Array>({ pull });
  const headers: Record<string, string> = {};
  if (opts.length !== undefined) headers["content-length"] = String(opts.length);
  return new Request(`${P}/echo`, { method: "POST", body, headers });
}

function text(read: BodyRead): string {
  assert.ok(read.ok, `refused: ${!read.ok && read.code}`);
  return new TextDecoder().decode(read.body!);
}

async function refusal(read: BodyRead, status: number, code: string): Promise<Response> {
  assert.ok(!read.ok, "expected a refusal");
  assert.equal(read.code, code);
  const res = read.response();
  assert.equal(res.status, status);
  const body = await res.json();
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, "string");
  return res;
}

Deno.test("BodyBudget.tryReserve() keeps headroom for small bodies that large ones cannot take", () => {
  const b = new BodyBudget({ maxBytes: 800, maxBodyBytes: 100, smallBodyBytes: 10 });
  // Headroom is 800/8 = 100: large bodies stop at 700.
  for (let i = 0; i < 7; i++) assert.ok(b.tryReserve(100, 100));
  assert.equal(b.tryReserve(100, 100), false);
  assert.equal(b.used, 700);
  for (let i = 0; i < 10; i++) assert.ok(b.tryReserve(10, 10), "small bodies use the headroom");
  assert.equal(b.tryReserve(1, 1), false, "but never beyond the budget");
  assert.equal(b.peak, 800);
  b.release(800);
  assert.equal(b.used, 0);
  assert.throws(() => b.release(1), /released more than it reserved/);
});

Deno.test("BodyBudget headroom shrinks so the largest allowed body still fits an idle budget", () => {
  const b = new BodyBudget({ maxBytes: 100, maxBodyBytes: 100, smallBodyBytes: 10 });
  assert.ok(b.tryReserve(100, 100));
  const c = new BodyBudget({ maxBytes: 100, maxBodyBytes: 95, smallBodyBytes: 10 });
  assert.ok(c.tryReserve(95, 95));
  assert.equal(c.tryReserve(6, 20), false);
});

Deno.test("BodyReader.read() reads a declared length into one buffer of exactly that size", async () => {
  for (const bytes of [true, false]) {
    const budget = new BodyBudget({ maxBytes: 1000 });
    const reader = new BodyReader({ maxBodyBytes: 100, budget });
    const read = await reader.read(upload(["hello ", "wor", "ld"], { length: 11, bytes }));
    assert.equal(text(read), "hello world");
    assert.ok(read.ok);
    assert.equal(read.body!.buffer.byteLength, 11, "no spare capacity, no second copy");
    assert.equal(budget.used, 11, "held until disposed");
    read[Symbol.dispose]();
    read[Symbol.dispose]();
    assert.equal(budget.used, 0, "released once");
  }
});

Deno.test("BodyReader.read() refuses a declared length over --max-body with 413 without reading", async () => {
  const budget = new BodyBudget({ maxBytes: 1000 });
  const read = await new BodyReader({ maxBodyBytes: 10, budget }).read(
    upload(["x".repeat(11)], { length: 11 }),
  );
  await refusal(read, 413, "request_too_large");
  assert.equal(budget.peak, 0);
});

Deno.test("BodyReader.read() answers 503 server_busy with Retry-After when the budget is full", async () => {
  const budget = new BodyBudget({ maxBytes: 100, smallBodyBytes: 10 });
  assert.ok(budget.tryReserve(60, 60));
  const reader = new BodyReader({ maxBodyBytes: 100, budget });
  const res = await refusal(
    await reader.read(upload(["x".repeat(50)], { length: 50 })),
    503,
    "server_busy",
  );
  assert.equal(res.headers.get("retry-after"), "2");
  assert.equal(budget.used, 60, "nothing reserved by the refusal");
  // Chunked: refused when the count crosses the budget, and what it had is given back.
  await refusal(
    await reader.read(upload(["x".repeat(20), "x".repeat(30)])),
    503,
    "server_busy",
  );
  assert.equal(budget.used, 60);
});

Deno.test("BodyReader.read() gives a stalled upload 408 after --body-timeout and releases its reservation", async () => {
  for (const length of [1000, undefined]) {
    for (const bytes of [true, false]) {
      const clock = new FakeClock();
      const budget = new BodyBudget({ maxBytes: 10_000 });
      const reader = new BodyReader({ maxBodyBytes: 5000, budget, timeoutMs: 30_000, clock });
      const pending = reader.read(upload(["abc"], { length, bytes, stall: true }));
      await clock.tick(29_999);
      assert.equal(budget.used, length ?? 3, "held while the client may still send");
      await clock.tick(1);
      await refusal(await pending, 408, "request_timeout");
      assert.equal(budget.used, 0, `released (length ${length}, bytes ${bytes})`);
      assert.equal(clock.pending, 0);
    }
  }
});

Deno.test("BodyReader.read() stops the timer when the body is complete", async () => {
  const clock = new FakeClock();
  const reader = new BodyReader({ maxBodyBytes: 100, timeoutMs: 1_000, clock });
  assert.equal(text(await reader.read(upload(["ab", "c"], { length: 3 }))), "abc");
  assert.equal(clock.pending, 0);
});

Deno.test("BodyReader.read() refuses bodies shorter or longer than their Content-Length", async () => {
  const budget = new BodyBudget({ maxBytes: 1000 });
  const reader = new BodyReader({ maxBodyBytes: 100, budget });
  await refusal(await reader.read(upload(["abc"], { length: 5 })), 400, "bad_request");
  await refusal(await reader.read(upload(["abcdef"], { length: 5 })), 400, "bad_request");
  assert.equal(budget.used, 0);
});

Deno.test("BodyReader.read() counts chunked bodies against --max-body and the budget, joining once", async () => {
  const budget = new BodyBudget({ maxBytes: 1000 });
  const reader = new BodyReader({ maxBodyBytes: 10, budget });
  await refusal(await reader.read(upload(["12345", "67890", "1"])), 413, "request_too_large");
  assert.equal(budget.used, 0);
  const read = await reader.read(upload(["12345", "67890"]));
  assert.equal(text(read), "1234567890");
  assert.equal(budget.used, 10);
  assert.equal(budget.peak, 20, "the join briefly holds the chunks and the joined body");
  read[Symbol.dispose]();
  const one = upload(["only"]);
  const single = await reader.read(one);
  assert.equal(text(single), "only");
  single[Symbol.dispose]();
  assert.equal(budget.used, 0);
});

Deno.test("BodyReader.read() says bad_request when the client's stream fails", async () => {
  const budget = new BodyBudget({ maxBytes: 1000 });
  const reader = new BodyReader({ maxBodyBytes: 100, budget });
  for (const length of [10, undefined]) {
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (n++ === 0) c.enqueue(enc.encode("abc"));
        else c.error(new Error("connection reset"));
      },
    });
    const headers: Record<string, string> = length ? { "content-length": String(length) } : {};
    const req = new Request(`${P}/x`, { method: "POST", body, headers });
    await refusal(await reader.read(req), 400, "bad_request");
    assert.equal(budget.used, 0, `released (length ${length})`);
  }
});

Deno.test("relay holds a body's budget until response headers arrive, then releases it", async () => {
  const budget = new BodyBudget({ maxBytes: 1000 });
  let answer!: (r: Response) => void;
  const seen: number[] = [];
  const target = new FakeTarget(1, { baseUrl: "http://engine.test" });
  target.sender = (req) => {
    seen.push(req.body!.byteLength);
    return new Promise<Response>((r) => (answer = r)).then(fromWebResponse);
  };
  const h = createHandler({
    pool: new FakePool([target]),
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 100,
    bodies: new BodyReader({ maxBodyBytes: 100, budget }),
    onRequestLog: () => {},
  });
  const pending = h(upload(['{"model":"fake-model"}'], { length: 22 }));
  while (seen.length === 0) await new Promise((r) => setTimeout(r, 1));
  assert.equal(budget.used, 22, "held while a retry could still need it");
  let more!: ReadableStreamDefaultController<Uint8Array>;
  answer(new Response(new ReadableStream({ start: (c) => void (more = c) })));
  const res = await pending;
  assert.equal(budget.used, 0, "released with the response headers, while the body streams");
  more.enqueue(enc.encode("ok"));
  more.close();
  assert.equal(await res.text(), "ok");
  // A refused body is answered by the relay with the reader's error.
  assert.ok(budget.tryReserve(990, 990));
  const busy = await h(upload(["x".repeat(20)], { length: 20 }));
  assert.equal(busy.status, 503);
  assert.equal(busy.headers.get("retry-after"), "2");
  assert.equal((await busy.json()).error.code, "server_busy");
});
