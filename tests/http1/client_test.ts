/**
 * The HTTP/1.1 client against scripted fake channels: framing
 * (Content-Length, chunked split anywhere, close-delimited, no-body
 * statuses, 1xx), keep-alive reuse and its bound, aborts, and errors whose
 * `sent` flag drives the relay's retry rule.
 */
import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { Http1Client } from "../../lib/http1/client.ts";
import { ChunkedDecoder, findHeadEnd, parseHead } from "../../lib/http1/parse.ts";
import { Conn } from "../../lib/http1/conn.ts";
import { Http1Error, type Http1Request, readAll } from "../../lib/http1/types.ts";
import { RequestAbort } from "../../lib/http1/request_abort.ts";
import { isTransportError } from "../../lib/proxy/errors.ts";
import { toResponse } from "../_helpers/http1.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A channel whose far end is the test: it sees writes and pushes replies. */
class FakeChannel extends Duplex {
  written = "";
  destroyedByClient = false;
  /** Called with each request written; may reply. */
  onRequest: ((ch: FakeChannel, text: string) => void) | null = null;

  override _write(chunk: Uint8Array, _enc: string, cb: () => void): void {
    const text = dec.decode(chunk);
    this.written += text;
    cb();
    this.onRequest?.(this, text);
  }

  override _read(): void {}

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.destroyedByClient = true;
    cb(err);
  }

  /** Sends `parts` as separate reads, a macrotask apart. */
  async reply(...parts: string[]): Promise<void> {
    for (const p of parts) {
      this.push(enc.encode(p));
      await new Promise((r) => setTimeout(r, 0));
    }
  }
}

/** A client whose channels come from `script`; records every channel opened. */
function client(script: (ch: FakeChannel, text: string) => void, maxIdle = 64) {
  const opened: FakeChannel[] = [];
  const raw = new Http1Client(() => {
    const ch = new FakeChannel();
    ch.onRequest = script;
    opened.push(ch);
    return Promise.resolve(ch);
  }, { host: "127.0.0.1:8000", maxIdle });
  // Answers as web Responses, for reading convenience.
  const http = {
    raw,
    request: async (req: Http1Request) => toResponse(await raw.request(req)),
    get idleCount() {
      return raw.stats().idle;
    },
    get busyCount() {
      return raw.stats().busy;
    },
  };
  return { http, opened };
}

const get = (target = "/x", signal?: AbortSignal): Http1Request => ({
  method: "GET",
  target,
  headers: [],
  body: null,
  signal,
});

const ok = (body: string, extra = "") =>
  `HTTP/1.1 200 OK\r\ncontent-length: ${enc.encode(body).length}\r\n${extra}\r\n${body}`;

Deno.test("channel http: content-length body; request written in one piece", async () => {
  const { http, opened } = client((ch) => void ch.reply(ok('{"a":1}', "x-y: z\r\n")));
  const res = await http.request({
    method: "POST",
    target: "/v1/chat?x=1",
    headers: [["content-type", "application/json"], ["authorization", "Bearer t"]],
    body: enc.encode("hello"),
  });
  assert.equal(res.status, 200);
  assert.equal(res.statusText, "OK");
  assert.equal(res.headers.get("x-y"), "z");
  assert.equal(await res.text(), '{"a":1}');
  const w = opened[0].written;
  assert.ok(w.startsWith("POST /v1/chat?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n"), w);
  assert.ok(w.includes("authorization: Bearer t\r\n"));
  assert.ok(w.endsWith("content-length: 5\r\n\r\nhello"), w);
  assert.equal(http.idleCount, 1);
});

Deno.test("channel http: a body that came with its head is bytes, and the channel is pooled at once", async () => {
  const { http, opened } = client((ch) => void ch.reply(ok('{"id":"x","usage":{}}')));
  const res = await http.raw.request(get());
  // Released before anyone read a byte: no stream was left to drive it.
  assert.equal(http.idleCount, 1);
  assert.equal(http.busyCount, 0);
  assert.ok(res.body instanceof Uint8Array, "bytes, not a stream");
  assert.equal(dec.decode(res.body), '{"id":"x","usage":{}}');
  assert.deepEqual(res.headers, [["content-length", "21"]]);
  const again = await http.raw.request(get());
  assert.equal(dec.decode(again.body as Uint8Array), '{"id":"x","usage":{}}');
  assert.equal(opened.length, 1, "the same channel carried both requests");
  assert.equal(opened[0].destroyedByClient, false);
});

Deno.test("channel http: a body split from its head stays a stream, then the channel is reused", async () => {
  const { http, opened } = client((ch) =>
    void ch.reply("HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello", " wor", "ld")
  );
  const res = await http.raw.request(get());
  assert.ok(res.body instanceof ReadableStream, "the rest had not arrived: a stream");
  assert.equal(http.busyCount, 1, "the channel is held until the body is read");
  assert.equal(await toResponse(res).text(), "hello world");
  assert.equal(http.idleCount, 1);
  await http.raw.request(get());
  assert.equal(opened.length, 1);
});

Deno.test("channel http: bytes past a body that came with its head: the body is bytes, the channel is never reused", async () => {
  for (const extra of ["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmugg", "\r\n", "x"]) {
    const { http, opened } = client((ch) => void ch.reply(ok("abc") + extra));
    const res = await http.raw.request(get());
    assert.ok(res.body instanceof Uint8Array);
    assert.equal(dec.decode(res.body), "abc", "only the declared length");
    assert.equal(http.idleCount, 0, JSON.stringify(extra));
    assert.equal(opened[0].destroyedByClient, true);
    await http.raw.request(get());
    assert.equal(opened.length, 2, "a fresh channel for the next request");
  }
});

Deno.test("channel http: a large body stays a stream even when it all came with its head", async () => {
  const big = "y".repeat(40 * 1024);
  const { http } = client((ch) => void ch.reply(ok(big)));
  const res = await http.raw.request(get());
  assert.ok(res.body instanceof ReadableStream);
  assert.equal((await toResponse(res).text()).length, big.length);
  assert.equal(http.idleCount, 1);
});

Deno.test("channel http: an upgrade answered without 101 gives bytes but never pools the channel", async () => {
  const { http, opened } = client((ch) => void ch.reply(ok("no")));
  const res = await http.raw.upgrade(get());
  assert.equal(res.status, 200);
  assert.ok("body" in res && res.body instanceof Uint8Array);
  assert.equal(dec.decode(res.body), "no");
  assert.equal(http.idleCount, 0);
  assert.equal(opened[0].destroyedByClient, true);
});

Deno.test("readAll() takes a bytes body under its limit and refuses one over it", async () => {
  const res = { status: 200, statusText: "", headers: [], body: enc.encode("12345") };
  assert.equal(dec.decode(await readAll(res, 5)), "12345");
  await assert.rejects(
    readAll(res, 4),
    (e: Error) => e instanceof Http1Error && /over 4/.test(e.message),
  );
});

Deno.test("Conn.takeNow(): whole bytes only when all arrived, across chunks, leaving the rest queued", async () => {
  const ch = new FakeChannel();
  const conn = new Conn(ch);
  ch.push(enc.encode("ab"));
  ch.push(enc.encode("cdef"));
  ch.push(enc.encode("gh"));
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(conn.buffered, 8);
  assert.equal(conn.takeNow(9), null, "not all here: nothing taken");
  assert.equal(conn.takeNow(0)?.byteLength, 0);
  assert.equal(conn.buffered, 8);
  assert.equal(dec.decode(conn.takeNow(1)!), "a", "part of the first chunk");
  assert.equal(dec.decode(conn.takeNow(4)!), "bcde", "across chunks");
  assert.equal(conn.buffered, 3);
  assert.equal(conn.clean, false, "unread bytes left");
  assert.equal(dec.decode((await conn.read())!), "f");
  assert.equal(dec.decode(conn.takeNow(2)!), "gh", "exactly one chunk");
  assert.equal(conn.buffered, 0);
  assert.equal(conn.clean, true);
  conn.destroy();
});

Deno.test("chunked decoder: every split point of a body gives the same payload", () => {
  const wire = enc.encode(
    "5;ext=1\r\nhello\r\n1\r\n,\r\nB\r\n 0123456789\r\n0\r\nx-trailer: 1\r\n\r\n",
  );
  for (let a = 0; a <= wire.length; a++) {
    for (let b = a; b <= wire.length; b += 3) {
      const d = new ChunkedDecoder();
      let out = "";
      for (const part of [wire.subarray(0, a), wire.subarray(a, b), wire.subarray(b)]) {
        if (!d.done) d.push(part, (x) => (out += dec.decode(x)));
      }
      assert.equal(out, "hello, 0123456789", `split ${a}/${b}`);
      assert.ok(d.done);
      assert.equal(d.rest.length, 0);
    }
  }
});

Deno.test("channel http: chunked body split across odd reads, then reused", async () => {
  const { http, opened } = client((ch) =>
    void ch.reply(
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r",
      "\n\r\n3\r",
      "\nabc\r\n1",
      "0\r\n0123456789abcdef\r\n0\r\n",
      "\r\n",
    )
  );
  const res = await http.request(get());
  assert.equal(await res.text(), "abc0123456789abcdef");
  assert.equal(http.idleCount, 1);
  await (await http.request(get())).text();
  assert.equal(opened.length, 1, "keep-alive channel reused");
});

Deno.test("channel http: close-delimited body ends at EOF and is not reused", async () => {
  const { http } = client((ch) =>
    void ch.reply("HTTP/1.1 200 OK\r\n\r\npart1", "part2").then(() => ch.push(null))
  );
  const res = await http.request(get());
  assert.equal(await res.text(), "part1part2");
  assert.equal(http.idleCount, 0);
});

Deno.test("channel http: HEAD, 204, 205 and 304 have no body, keep Content-Length, and close the channel", async () => {
  const cases = [["HEAD", 200], ["GET", 204], ["GET", 205], ["GET", 304]] as const;
  for (const [method, status] of cases) {
    const { http, opened } = client((ch) =>
      void ch.reply(`HTTP/1.1 ${status} X\r\ncontent-length: 10\r\n\r\n`)
    );
    const res = await http.raw.request({ ...get(), method });
    assert.equal(res.status, status);
    assert.equal(res.body, null);
    assert.deepEqual(res.headers, [["content-length", "10"]], "the engine's framing field kept");
    // Whatever the engine sends after such a head is not delimited: never reuse.
    assert.equal(http.idleCount, 0, `${method} ${status}`);
    assert.equal(opened[0].destroyedByClient, true);
  }
});

Deno.test("channel http: 1xx interim responses are skipped, and the channel is not reused", async () => {
  const { http, opened } = client((ch) =>
    void ch.reply("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nlink: x\r\n\r\n" + ok("hi"))
  );
  const res = await http.request(get());
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "hi");
  assert.equal(http.idleCount, 0);
  assert.ok(opened[0].destroyedByClient);
});

Deno.test("channel http: Connection: close and HTTP/1.0 are not reused", async () => {
  for (const reply of [ok("a", "connection: close\r\n"), ok("a").replace("1.1", "1.0")]) {
    const { http, opened } = client((ch) => void ch.reply(reply));
    await (await http.request(get())).text();
    assert.equal(http.idleCount, 0);
    assert.ok(opened[0].destroyedByClient);
  }
});

Deno.test("channel http: the idle pool is bounded", async () => {
  const { http, opened } = client((ch) => void ch.reply(ok("x")), 2);
  const all = await Promise.all(
    [1, 2, 3, 4].map((i) => http.request({ ...get(), affinity: `c${i}` })),
  );
  assert.equal(opened.length, 4, "concurrent requests use their own channels");
  await Promise.all(all.map((r) => r.text()));
  assert.equal(http.idleCount, 2);
  assert.equal(opened.filter((c) => c.destroyedByClient).length, 2);
});

Deno.test("channel http: abort before headers rejects with AbortError and destroys", async () => {
  const { http, opened } = client(() => {});
  const ac = new AbortController();
  const p = http.request(get("/x", ac.signal));
  await new Promise((r) => setTimeout(r, 5));
  ac.abort(new DOMException("client disconnected", "AbortError"));
  await assert.rejects(p, (e: Error) => e.name === "AbortError" && !isTransportError(e));
  assert.ok(opened[0].destroyedByClient);
  assert.equal(http.busyCount, 0);
});

Deno.test("channel http: abort or cancel mid-body destroys the channel", async () => {
  for (const how of ["abort", "cancel"]) {
    const { http, opened } = client((ch) =>
      void ch.reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
    );
    const ac = new AbortController();
    const res = await http.request(get("/x", ac.signal));
    const reader = res.body!.getReader();
    assert.equal(dec.decode((await reader.read()).value), "first");
    if (how === "abort") {
      ac.abort(new DOMException("gone", "AbortError"));
      await assert.rejects(reader.read(), (e: Error) => e.name === "AbortError");
    } else {
      await reader.cancel();
    }
    assert.ok(opened[0].destroyedByClient, how);
    assert.equal(http.idleCount, 0);
    assert.equal(http.busyCount, 0);
  }
});

Deno.test("channel http: malformed status line is a transport error", async () => {
  const { http, opened } = client((ch) => void ch.reply("HTTP/2 200 OK\r\n\r\n"));
  await assert.rejects(http.request(get()), (e: Error) => {
    assert.ok(e instanceof Http1Error && e.sent, "the engine had the request");
    assert.ok(isTransportError(e));
    return /malformed status line/.test(e.message);
  });
  assert.ok(opened[0].destroyedByClient);
});

Deno.test("channel http: truncated body errors the stream", async () => {
  const { http } = client((ch) =>
    void ch.reply("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc").then(() => ch.push(null))
  );
  const res = await http.request(get());
  await assert.rejects(
    res.text(),
    (e: Error) => e instanceof Http1Error && /mid-body/.test(e.message),
  );
});

Deno.test("channel http: open failure and close before headers are transport errors", async () => {
  const failing = new Http1Client(
    () => Promise.reject(new Error("(SSH) Channel open failure: refused")),
    { host: "h" },
  );
  // Never sent: the relay may replay it elsewhere.
  await assert.rejects(failing.request(get()), (e: Error) => e instanceof Http1Error && !e.sent);
  const { http } = client((ch) => ch.push(null));
  // Written, then closed: the engine may have run it, so it is never replayed.
  await assert.rejects(
    http.request(get()),
    (e: Error) => e instanceof Http1Error && e.sent && /before response headers/.test(e.message),
  );
});

Deno.test("channel http: a pooled channel that dies after the request was written is not replayed", async () => {
  let n = 0;
  const { http, opened } = client((ch) => {
    // The first channel answers once, then dies on its second request.
    if (ch === opened[0] && n++ > 0) ch.push(null);
    else void ch.reply(ok("fine"));
  });
  await (await http.request(get())).text();
  await assert.rejects(http.request(get()), (e: Error) => e instanceof Http1Error && e.sent);
  assert.equal(opened.length, 1, "no second channel: nothing was replayed");
});

Deno.test("channel http: a pooled channel the engine closed while idle is never used", async () => {
  const { http, opened } = client((ch) => void ch.reply(ok("fine")));
  await (await http.request(get())).text();
  opened[0].push(null); // the engine's keep-alive timeout
  await new Promise((r) => setTimeout(r, 5));
  assert.equal(http.idleCount, 0);
  assert.equal(await (await http.request(get())).text(), "fine");
  assert.equal(opened.length, 2);
  assert.equal(opened[0].written.split("GET ").length - 1, 1, "one request on the closed channel");
});

Deno.test("head parsing: CRLFCRLF found across boundaries; headers combined", () => {
  const b = enc.encode("HTTP/1.1 404 Not Found\r\na: 1\r\na: 2\r\nb:x\r\n\r\nbody");
  const end = findHeadEnd(b, 0);
  assert.equal(dec.decode(b.subarray(end)), "body");
  const h = parseHead(b.subarray(0, end - 4));
  assert.equal(h.status, 404);
  assert.equal(h.statusText, "Not Found");
  assert.deepEqual(h.headers, [["a", "1"], ["a", "2"], ["b", "x"]]);
  assert.equal(findHeadEnd(enc.encode("HTTP/1.1 200 OK\r\n\r"), 0), -1);
  assert.throws(() => parseHead(enc.encode("HTTP/1.1 200 OK\r\nno-colon")), Http1Error);
});

// The relay cancels its exchanges with a `RequestAbort` (`req.abort`), not an
// `AbortSignal`: it must act exactly as `signal` does, at every stage.

const gone = () => new DOMException("client disconnected", "AbortError");

Deno.test("channel http: req.abort before headers rejects with its reason and destroys", async () => {
  const { http, opened } = client(() => {});
  const abort = new RequestAbort();
  const p = http.raw.request({ ...get(), abort });
  await new Promise((r) => setTimeout(r, 5));
  const reason = gone();
  abort.abort(reason);
  await assert.rejects(p, (e: Error) => e === reason && !isTransportError(e));
  assert.ok(opened[0].destroyedByClient);
  assert.equal(http.busyCount, 0);
  assert.equal(http.idleCount, 0);
});

Deno.test("channel http: req.abort mid-body errors the body with its reason and destroys", async () => {
  const { http, opened } = client((ch) =>
    void ch.reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
  );
  const abort = new RequestAbort();
  const res = await http.raw.request({ ...get(), abort });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  assert.equal(dec.decode((await reader.read()).value), "first");
  const reason = gone();
  abort.abort(reason);
  await assert.rejects(reader.read(), (e: Error) => e === reason);
  assert.ok(opened[0].destroyedByClient);
  assert.equal(http.idleCount, 0);
  assert.equal(http.busyCount, 0);
});

Deno.test("channel http: an already aborted req.abort sends nothing", async () => {
  const { http, opened } = client(() => {});
  const abort = new RequestAbort();
  const reason = gone();
  abort.abort(reason);
  await assert.rejects(http.raw.request({ ...get(), abort }), (e: Error) => e === reason);
  await assert.rejects(http.raw.upgrade({ ...get(), abort }), (e: Error) => e === reason);
  assert.equal(opened.length, 0);
});

Deno.test("channel http: req.abort while the channel opens rejects at once; the late channel is closed", async () => {
  let arrive!: (ch: FakeChannel) => void;
  const late = new FakeChannel();
  const raw = new Http1Client(
    () => new Promise<Duplex>((r) => (arrive = r)),
    { host: "127.0.0.1:8000" },
  );
  const abort = new RequestAbort();
  const p = raw.request({ ...get(), abort });
  await new Promise((r) => setTimeout(r, 5));
  const reason = gone();
  abort.abort(reason);
  await assert.rejects(p, (e: Error) => e === reason);
  arrive(late);
  await new Promise((r) => setTimeout(r, 5));
  assert.ok(late.destroyedByClient, "a channel that opened after the abort is closed");
  assert.equal(late.written, "", "and never carried the request");
  assert.deepEqual(raw.stats(), { opened: 0, requests: 0, idle: 0, busy: 0, idleKeys: 0 });
});

Deno.test("channel http: a finished exchange stops listening to req.abort", async () => {
  // Read to the end, whole with the head, and without a body: each channel
  // goes back to the pool, and a later abort (the relay aborts on a late
  // cancel) must not destroy it under another request.
  const { http, opened } = client((ch) => void ch.reply(ok("fine")));
  const aborts = [new RequestAbort(), new RequestAbort()];
  const res = await http.raw.request({ ...get(), abort: aborts[0] });
  assert.ok(res.body instanceof Uint8Array);
  const streamed = await http.request({ ...get(), abort: aborts[1] });
  assert.equal(await streamed.text(), "fine");
  for (const a of aborts) a.abort(gone());
  assert.equal(opened.length, 1, "one pooled channel served both");
  assert.equal(opened[0].destroyedByClient, false);
  assert.equal(http.idleCount, 1);
});

Deno.test("channel http: with both signal and abort, either one aborts", async () => {
  for (const which of ["signal", "abort"]) {
    const { http, opened } = client(() => {});
    const ac = new AbortController();
    const abort = new RequestAbort();
    const p = http.raw.request({ ...get("/x", ac.signal), abort });
    await new Promise((r) => setTimeout(r, 5));
    const reason = gone();
    if (which === "signal") ac.abort(reason);
    else abort.abort(reason);
    await assert.rejects(p, (e: Error) => e === reason, which);
    assert.ok(opened[0].destroyedByClient, which);
    assert.equal(http.busyCount, 0);
  }
});

Deno.test("channel http: request() rejects, never throws, when it cannot send", async () => {
  const { http, opened } = client((ch) => void ch.reply(ok("x")));
  // Each failure must come back as a rejected promise: callers chain on it.
  const bad = http.raw.request({ ...get(), method: "BAD METHOD" });
  await assert.rejects(bad, (e: Error) => e instanceof Http1Error && !e.sent);
  const reason = new Error("gone");
  const abort = new RequestAbort();
  abort.abort(reason);
  const aborted = http.raw.request({ ...get(), abort });
  await assert.rejects(aborted, (e: Error) => e === reason);
  // An idle channel, then a closed client.
  assert.equal((await http.raw.request(get())).status, 200);
  assert.equal(http.idleCount, 1);
  http.raw.close();
  const closed = http.raw.request(get());
  await assert.rejects(closed, (e: Error) => e instanceof Http1Error && !e.sent);
  assert.equal(opened.length, 1);
});

Deno.test("channel http: a pooled channel that cannot go back leaves its affinity's pool empty, not broken", async () => {
  let answer = ok("a");
  const { http, opened } = client((ch) => void ch.reply(answer));
  const k = { ...get(), affinity: "k" };
  await (await http.request(k)).text();
  assert.equal(http.idleCount, 1);
  // Taken from the pool, then answered with Connection: close: destroyed.
  answer = ok("b", "connection: close\r\n");
  assert.equal(await (await http.request(k)).text(), "b");
  assert.equal(http.idleCount, 0);
  assert.ok(opened[0].destroyedByClient);
  assert.equal(http.raw.stats().idleKeys, 0, "no empty list left behind");
  // The affinity starts over on a new channel, which is pooled and reused.
  answer = ok("c");
  assert.equal(await (await http.request(k)).text(), "c");
  assert.equal(await (await http.request(k)).text(), "c");
  assert.equal(opened.length, 2);
  assert.equal(http.idleCount, 1);
  // While the pooled channel is out, a second request on the same affinity
  // opens its own; both come back, up to the per-affinity bound.
  const both = await Promise.all([http.request(k), http.request(k)]);
  await Promise.all(both.map((r) => r.text()));
  assert.equal(opened.length, 3);
  assert.equal(http.idleCount, 2);
  await (await http.request(k)).text();
  await (await http.request(k)).text();
  assert.equal(opened.length, 3, "both pooled channels are reused");
  // Many client connections, each taking its channel back out and losing it.
  for (let i = 0; i < 20; i++) {
    answer = ok("d");
    await (await http.request({ ...get(), affinity: `gone${i}` })).text();
    answer = ok("e", "connection: close\r\n");
    await (await http.request({ ...get(), affinity: `gone${i}` })).text();
  }
  assert.equal(http.raw.stats().idleKeys, 1, "only k's list is left");
});

Deno.test("channel http: maxIdlePerAffinity 0 pools nothing", async () => {
  const opened: FakeChannel[] = [];
  const raw = new Http1Client(() => {
    const ch = new FakeChannel();
    ch.onRequest = (c) => void c.reply(ok("x"));
    opened.push(ch);
    return Promise.resolve(ch);
  }, { host: "127.0.0.1:8000", maxIdlePerAffinity: 0 });
  for (let i = 0; i < 3; i++) await raw.request({ ...get(), affinity: "k" });
  assert.equal(raw.stats().idle, 0);
  assert.equal(opened.length, 3);
  assert.ok(opened.every((c) => c.destroyedByClient));
});
