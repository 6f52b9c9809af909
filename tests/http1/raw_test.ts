/**
 * The server ↔ relay side channel (lib/http1/raw.ts): header pairs in place
 * of `Headers` objects, and a buffered request body handed over whole. Each
 * fast path must give what the ordinary path gives, byte for byte.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  hasBody,
  headersOrder,
  onRequestAbort,
  pairsGet,
  rawRequestOf,
  RequestAbort,
  requestHeader,
  responseBytesOf,
  responsePairsOf,
  responseWithPairs,
  serverRequest,
} from "../../lib/http1/raw.ts";
import { serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import type { ServerHandlerInfo } from "../../lib/http1/_server_conn.ts";
import { BadRequestError, requestFraming } from "../../lib/http1/request_head.ts";
import type { HeaderPairs } from "../../lib/http1/types.ts";
import { CorsPolicy } from "../../lib/proxy/cors.ts";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { upstreamRequestHeaders } from "../../lib/proxy/headers.ts";
import { BodyBudget, BodyReader } from "../../lib/proxy/body.ts";
import { countResponses, RawClient } from "../_helpers/raw_http.ts";

const NAMES = ["a", "b", "set-cookie", "vary", "x-y", "content-type", "connection", "te", "host"];
const pairArb = fc.array(
  fc.tuple(
    fc.constantFrom(...NAMES),
    // Header values as the parsers leave them: no surrounding whitespace, may be empty.
    fc.stringMatching(/^(?:[!-~\x80-\xff](?:[\t !-~\x80-\xff]*[!-~\x80-\xff])?)?$/),
  ),
  { maxLength: 30 },
);

function toHeaders(pairs: HeaderPairs): Headers {
  const h = new Headers();
  for (const [n, v] of pairs) h.append(n, v);
  return h;
}

Deno.test("headersOrder and pairsGet answer what Headers iteration and get() answer", () => {
  fc.assert(
    fc.property(pairArb, (pairs) => {
      const h = toHeaders(pairs);
      assert.deepEqual(headersOrder(pairs.map(([n, v]) => [n, v])), [...h]);
      for (const n of [...NAMES, "absent"]) assert.equal(pairsGet(pairs, n), h.get(n), n);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("upstreamRequestHeaders gives the same fields from pairs as from Headers", () => {
  fc.assert(
    fc.property(pairArb, fc.option(fc.constant("tok"), { nil: null }), (pairs, auth) => {
      assert.deepEqual(
        upstreamRequestHeaders(pairs.map(([n, v]) => [n, v]), auth),
        upstreamRequestHeaders(toHeaders(pairs), auth),
      );
    }),
    { numRuns: 1000 },
  );
});

Deno.test("upstreamRequestHeaders from pairs equals Headers with every dropped and Connection-listed name", () => {
  const names = [
    "host",
    "content-length",
    "authorization",
    "x-vastproxy-instance",
    "expect",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "x-a",
    "x-b",
    "set-cookie",
    "accept",
  ];
  const value = fc.oneof(
    fc.constantFrom("", "1", "a b"),
    // Connection-style lists naming other fields, in any case and spacing.
    fc.array(fc.constantFrom(...names, "X-A", " x-b ", "close", ""), { maxLength: 4 })
      // Trimmed, as the server's parser leaves values.
      .map((l) => l.join(",").trim()),
  );
  const pairs = fc.array(
    fc.tuple(fc.constantFrom(...names, "connection", "connection"), value),
    { maxLength: 16 },
  );
  fc.assert(
    fc.property(pairs, fc.option(fc.constant("tok"), { nil: null }), (ps, auth) => {
      const h = new Headers();
      for (const [n, v] of ps) h.append(n, v);
      assert.deepEqual(
        upstreamRequestHeaders(ps.map(([n, v]) => [n, v]), auth),
        upstreamRequestHeaders(h, auth),
      );
    }),
    { numRuns: 5000 },
  );
});

Deno.test("CORS and the response guard edit side-channel pairs as they edit Headers", () => {
  const policies = [new CorsPolicy([]), new CorsPolicy(["http://a.test"]), new CorsPolicy(["*"])];
  const values = fc.array(
    fc.tuple(
      fc.constantFrom("vary", "access-control-allow-origin", "x-a", "content-type"),
      fc.constantFrom("", "origin", "Accept", "*", "v\x01x", "text/plain", "a, b"),
    ),
    { maxLength: 8 },
  );
  fc.assert(
    fc.property(values, fc.constantFrom(0, 1, 2), fc.boolean(), (pairs, p, allowed) => {
      const origin = allowed ? "http://a.test" : null;
      const droppedA: string[] = [];
      const droppedB: string[] = [];
      const viaPairs = guardResponse(
        policies[p].apply(
          responseWithPairs(null, { status: 200 }, pairs.map(([n, v]) => [n, v])),
          origin,
        ),
        (n) => droppedA.push(n),
      );
      assert.ok(responsePairsOf(viaPairs) !== undefined, "still on the side channel");
      const viaHeaders = guardResponse(
        policies[p].apply(new Response(null, { status: 200, headers: pairs }), origin),
        (n) => droppedB.push(n),
      );
      assert.deepEqual(headersOrder(responsePairsOf(viaPairs)!), [...viaHeaders.headers]);
      assert.deepEqual(droppedA, droppedB);
    }),
    { numRuns: 1000 },
  );
});

Deno.test("reading res.headers of a pairs response makes Headers the truth", () => {
  const res = responseWithPairs(null, { status: 204 }, [["x-a", "1"], ["x-a", "2"]]);
  assert.deepEqual(responsePairsOf(res), [["x-a", "1"], ["x-a", "2"]]);
  assert.equal(res.headers.get("x-a"), "1, 2");
  assert.equal(responsePairsOf(res), undefined);
  res.headers.set("x-b", "3");
  assert.equal(res.headers.get("x-b"), "3");
});

/** The whole answer of `handler` to `request`, with the date field blanked. */
async function wire(handler: ServerHandler, request: string): Promise<string> {
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, handler);
  try {
    const c = await RawClient.open(server.addr.port);
    try {
      await c.send(request);
      await c.until((s) => s.includes("\r\n\r\n") && s.endsWith("END"));
      return c.received.replace(/\r\ndate: [^\r]*/, "\r\ndate: X");
    } finally {
      c.close();
    }
  } finally {
    await server.closeAll();
  }
}

Deno.test("the server writes a pairs response byte-identical to a Headers response", async () => {
  const pairs: HeaderPairs = [
    ["x-b", "2"],
    ["set-cookie", "a=1"],
    ["content-type", "application/json"],
    ["x-b", "3"],
    ["x-raw", "caf\xc3\xa9"],
    ["set-cookie", "b=2"],
    ["x-vastproxy-instance", "7"],
  ];
  const body = () => new TextEncoder().encode('{"ok":true}END');
  const request = "GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
  const fast = await wire(
    () => responseWithPairs(body(), { status: 200 }, pairs.map(([n, v]) => [n, v])),
    request,
  );
  const slow = await wire(() => new Response(body(), { status: 200, headers: pairs }), request);
  assert.equal(fast, slow);
  assert.match(fast, /x-b: 2, 3\r\n/);
});

Deno.test("the server's Request: raw url, lazy headers equal to the head, body taken whole", async () => {
  const seen: Record<string, unknown> = {};
  const handler: ServerHandler = async (req) => {
    seen.url = req.url;
    seen.raw = rawRequestOf(req)?.headers;
    seen.auth = requestHeader(req, "authorization");
    seen.multi = requestHeader(req, "x-m");
    const read = await new BodyReader({
      maxBodyBytes: 1000,
      budget: new BodyBudget({ maxBytes: 10_000 }),
    }).read(req);
    seen.body = read.ok ? new TextDecoder().decode(read.body!) : read.code;
    seen.after = req.body ? new Uint8Array(await req.arrayBuffer()).length : null;
    seen.headers = [...req.headers];
    return new Response("END");
  };
  const out = await wire(
    handler,
    "POST /a/'b'?q=\"1\" HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nX-M: 1\r\n" +
      "X-M: 2\r\nContent-Length: 5\r\n\r\nhello",
  );
  assert.match(out, /^HTTP\/1\.1 200 OK\r\n/);
  assert.equal(seen.url, "http://h/a/'b'?q=\"1\"");
  assert.deepEqual(seen.raw, [
    ["host", "h"],
    ["authorization", "Bearer t"],
    ["x-m", "1"],
    ["x-m", "2"],
    ["content-length", "5"],
  ]);
  assert.equal(seen.auth, "Bearer t");
  assert.equal(seen.multi, "1, 2");
  assert.equal(seen.body, "hello");
  assert.equal(seen.after, 0, "the stream reads as empty once the body was taken");
  assert.deepEqual(seen.headers, [
    ["authorization", "Bearer t"],
    ["content-length", "5"],
    ["host", "h"],
    ["x-m", "1, 2"],
  ]);
});

Deno.test("a body taken whole stays as it was while the connection reads on", async () => {
  // Kept, not decoded, until every request was served: the bytes must not
  // change as later reads (pipelined, later packets, a large head) arrive.
  const taken: Uint8Array[] = [];
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (req) => {
    const bytes = rawRequestOf(req)!.takeBody();
    if (bytes !== null) taken.push(bytes);
    return new Response("END");
  });
  const post = (body: string, extra = "") =>
    `POST / HTTP/1.1\r\nHost: h\r\n${extra}Content-Length: ${body.length}\r\n\r\n${body}`;
  try {
    const c = await RawClient.open(server.addr.port);
    try {
      await c.send(post("one") + post("two"));
      await c.until((s) => countResponses(s) === 2);
      await c.send(post("three", `X-Big: ${"b".repeat(3000)}\r\n`));
      await c.until((s) => countResponses(s) === 3);
      await c.send(post("four") + post("five"));
      await c.until((s) => countResponses(s) === 5);
    } finally {
      c.close();
    }
  } finally {
    await server.closeAll();
  }
  assert.deepEqual(taken.map((b) => new TextDecoder().decode(b)), [
    "one",
    "two",
    "three",
    "four",
    "five",
  ]);
});

Deno.test("a body not yet buffered is read from the stream as before", async () => {
  let body: string | undefined;
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    const read = await new BodyReader({ maxBodyBytes: 1000 }).read(req);
    body = read.ok ? new TextDecoder().decode(read.body!) : read.code;
    return new Response("END");
  });
  try {
    const c = await RawClient.open(server.addr.port);
    try {
      await c.send("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhello");
      await new Promise((r) => setTimeout(r, 50));
      await c.send("world");
      await c.until((s) => s.endsWith("END"));
    } finally {
      c.close();
    }
  } finally {
    await server.closeAll();
  }
  assert.equal(body, "helloworld");
});

/** A promise's value, or the name of the error it rejected with. */
const settle = <T>(p: Promise<T>) => p.then((v) => v, (e) => `error ${(e as Error).name}`);

const NOT_A_BODY_MODE = Symbol("not a body mode");
/** The ways `readBodyAs` reads a body. */
const BODY_MODES = [
  "text",
  "json",
  "arrayBuffer",
  "bytes",
  "blob",
  "formData",
  "stream",
  "textStream",
];

/**
 * What reading the body of `r` one way (`mode`: a Body member, the stream,
 * or Deno's textStream) gives, as comparable data; NOT_A_BODY_MODE for
 * other modes.
 */
async function readBodyAs(r: Request | Response, mode: string): Promise<unknown> {
  switch (mode) {
    case "text":
      return await settle(r.text());
    case "json":
      return await settle(r.json());
    case "arrayBuffer":
      return await settle(r.arrayBuffer().then((b) => [...new Uint8Array(b)]));
    case "bytes":
      return await settle(r.bytes().then((b) => [...b]));
    case "blob":
      return await settle(r.blob().then(async (b) => [b.type, b.size, await b.text()]));
    case "formData":
      return await settle(r.formData().then((f) => [...f].map(([k, v]) => [k, String(v)])));
    case "stream":
      return r.body === null ? null : await new Response(r.body).text();
    case "textStream": {
      const ts = (r as unknown as { textStream(): ReadableStream<string> }).textStream();
      return (await Array.fromAsync(ts)).join("");
    }
  }
  return NOT_A_BODY_MODE;
}

/**
 * Everything a handler can learn from `req`, consuming its body the way
 * `mode` says, then trying to read it again.
 */
async function snapshot(req: Request, mode: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = { hasBody: hasBody(req) };
  out.method = req.method;
  out.url = req.url;
  out.headers = [...req.headers];
  out.usedBefore = req.bodyUsed;
  out.body = req.body === null ? null : "stream";
  out.aborted = req.signal.aborted;
  out.misc = [req.cache, req.redirect, req.mode, req.credentials, req.keepalive];
  const read = await readBodyAs(req, mode);
  if (read !== NOT_A_BODY_MODE) out.got = read;
  switch (mode) {
    case "clone": {
      const c = req.clone();
      out.got = [c.method, c.url, [...c.headers], c.signal.aborted, await c.text()];
      break;
    }
    // `new Request(req)` and `new Request(req, init)` (what fetch(req) does)
    // read the Request's internal slots, not its getters.
    case "newRequest": {
      const c = await settle(Promise.resolve().then(() => new Request(req)));
      out.got = typeof c === "string"
        ? c
        : [c.method, c.url, [...c.headers], c.signal.aborted, await c.text()];
      break;
    }
    case "newRequestInit": {
      const c = await settle(
        Promise.resolve().then(() => new Request(req, { headers: { a: "b" } })),
      );
      out.got = typeof c === "string" ? c : [c.method, [...c.headers], await c.text()];
      break;
    }
    case "newRequestBody": {
      const c = await settle(Promise.resolve().then(() => new Request(req, { body: "x" })));
      out.got = typeof c === "string" ? c : [c.method, [...c.headers], await c.text()];
    }
  }
  out.usedAfter = req.bodyUsed;
  out.again = await settle(req.text());
  return out;
}

Deno.test("the server's Request answers every member as an ordinary Request does", async () => {
  const cases: { method: string; head: string; body: string; chunked?: boolean }[] = [
    { method: "POST", head: "Content-Type: application/json", body: '{"model":"m","n":[1,2]}' },
    { method: "POST", head: "Content-Type: application/x-www-form-urlencoded", body: "a=1&b=2" },
    { method: "PUT", head: "Content-Type: text/plain", body: "caf\xc3\xa9", chunked: true },
    { method: "post", head: "Content-Type: application/json", body: "{bad" },
    { method: "POST", head: "X-A: 1", body: "" },
    { method: "GET", head: "X-A: 1", body: "" },
    { method: "patch", head: "Content-Type: application/json", body: "[1]" },
  ];
  const modes = [
    ...BODY_MODES,
    "clone",
    "newRequest",
    "newRequestInit",
    "newRequestBody",
  ];
  for (const c of cases) {
    for (const mode of modes) {
      let fast: Record<string, unknown> | undefined;
      const framing = c.chunked
        ? `Transfer-Encoding: chunked\r\n\r\n${
          c.body.length.toString(16)
        }\r\n${c.body}\r\n0\r\n\r\n`
        : `Content-Length: ${c.body.length}\r\n\r\n${c.body}`;
      const request = `${c.method} /p/q?x=1 HTTP/1.1\r\nHost: h:8\r\n${c.head}\r\n${framing}`;
      await wire(async (req) => {
        fast = await snapshot(req, mode);
        return new Response("END");
      }, request);
      // What an ordinary Request with the same head and body (as a stream,
      // as the server's body always was) gives.
      const pairs: HeaderPairs = request.split("\r\n\r\n")[0].split("\r\n").slice(1).map(
        (l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()],
      );
      const bodyless = c.body === "" || c.method === "GET";
      const plain = new Request("http://h:8/p/q?x=1", {
        method: c.method,
        headers: pairs,
        body: bodyless ? null : ReadableStream.from([latin1Bytes(c.body)]),
        // @ts-ignore: `duplex` is required for a stream body, not yet in every lib.dom
        duplex: "half",
      });
      assert.deepEqual(fast, await snapshot(plain, mode), `${c.method} ${c.head} ${mode}`);
    }
  }
});

function latin1Bytes(s: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(s, (ch) => ch.charCodeAt(0));
}

Deno.test("the server refuses and normalises methods as the Request constructor does", async () => {
  for (const method of ["get", "Options", "delete", "FOO", "CONNECT", "trace", "track"]) {
    let seen: string | undefined;
    const out = await wire(
      (req) => {
        seen = req.method;
        return new Response("END");
      },
      `${method} /x HTTP/1.1\r\nHost: h\r\n\r\n`,
    ).catch((e) => String(e));
    let want: string | null;
    try {
      want = new Request("http://h/x", { method }).method;
    } catch {
      want = null;
    }
    if (want === null) {
      assert.match(out, /^HTTP\/1\.1 400 /, method);
      assert.equal(seen, undefined);
    } else {
      assert.match(out, /^HTTP\/1\.1 200 /, method);
      assert.equal(seen, want, method);
    }
  }
});

Deno.test("RequestAbort: a signal made before or after the abort is aborted with its reason", () => {
  const reason = new DOMException("gone", "AbortError");
  const early = new RequestAbort();
  const signal = early.signal;
  const calls: string[] = [];
  signal.addEventListener("abort", () => calls.push("signal"));
  const a = () => calls.push("a");
  const b = () => calls.push("b");
  const c = () => calls.push("c");
  early.onAbort(a);
  early.onAbort(b);
  early.onAbort(c);
  early.offAbort(b);
  assert.equal(early.aborted, false);
  assert.equal(signal.aborted, false);
  early.abort(reason);
  early.abort(new Error("second"));
  assert.deepEqual(calls, ["signal", "a", "c"], "signal first, then callbacks, each once");
  assert.equal(signal.reason, reason);
  assert.equal(early.signal, signal, "one signal per request");

  const late = new RequestAbort();
  late.abort(reason);
  assert.equal(late.signal.aborted, true);
  assert.equal(late.signal.reason, reason);
  late.onAbort(() => calls.push("late"));
  assert.deepEqual(calls, ["signal", "a", "c"], "no callback after the abort");

  const off = new RequestAbort();
  off.onAbort(a);
  off.offAbort(a);
  off.abort(reason);
  assert.deepEqual(calls, ["signal", "a", "c"]);
});

Deno.test("onRequestAbort: fires on client disconnect, never after a finished answer, for plain Requests too", async () => {
  const fired: string[] = [];
  let started!: () => void;
  const handlerStarted = new Promise<void>((r) => (started = r));
  let gone!: () => void;
  const goneSeen = new Promise<void>((r) => (gone = r));
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (req) => {
    const path = req.url.slice(req.url.indexOf("/", 7));
    onRequestAbort(req, () => {
      fired.push(path);
      gone();
    });
    if (path === "/quick") return new Response("END");
    started();
    return goneSeen.then(() => new Response("late"));
  });
  try {
    const quick = await RawClient.open(server.addr.port);
    await quick.send("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n");
    await quick.until((s) => s.endsWith("END"));
    quick.close();
    const c = await RawClient.open(server.addr.port);
    await c.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    await handlerStarted;
    c.close();
    await Promise.race([goneSeen, new Promise((r) => setTimeout(r, 3000))]);
  } finally {
    await server.closeAll();
  }
  assert.deepEqual(fired, ["/slow"]);

  const ctl = new AbortController();
  const plain = new Request("http://h/", { signal: ctl.signal });
  let n = 0;
  const stop = onRequestAbort(plain, () => n++);
  stop();
  onRequestAbort(plain, () => n++);
  ctl.abort();
  assert.equal(n, 1, "removed callbacks stay quiet");
  onRequestAbort(plain, () => n++);
  assert.equal(n, 2, "an aborted request calls back at once");
});

Deno.test("new Request(req) and fetch-style copies follow the client's disconnect", async () => {
  let copied!: Request;
  let started!: () => void;
  const handlerStarted = new Promise<void>((r) => (started = r));
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    copied = new Request(req, { headers: { a: "b" } });
    started();
    await new Promise<void>((r) => {
      copied.signal.addEventListener("abort", () => r());
      setTimeout(r, 3000);
    });
    return new Response("late");
  });
  try {
    const c = await RawClient.open(server.addr.port);
    await c.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    await handlerStarted;
    c.close();
    for (let i = 0; i < 300 && !copied.signal.aborted; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await server.closeAll();
  }
  assert.equal(copied.method, "POST");
  assert.equal(copied.signal.aborted, true, "the copy's signal never aborted");
});

Deno.test("get/head in any case are bodyless like GET/HEAD: the body stays unread, the connection closes", async () => {
  const seen: string[] = [];
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req) => {
    seen.push(`${req.method} ${hasBody(req)} ${await req.text()}`);
    return new Response("END");
  });
  try {
    for (const method of ["GET", "get", "Get", "head"]) {
      const c = await RawClient.open(server.addr.port);
      try {
        // The "body" is a whole second request: it must never be served.
        const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
        await c.send(
          `${method} /x HTTP/1.1\r\nHost: x\r\nContent-Length: ${smuggled.length}\r\n\r\n` +
            smuggled,
        );
        const out = await c.untilClosed();
        assert.equal(out.match(/HTTP\/1\.1 /g)?.length, 1, `${method}: ${out}`);
      } finally {
        c.close();
      }
    }
  } finally {
    await server.closeAll();
  }
  assert.deepEqual(seen, ["GET false ", "GET false ", "GET false ", "HEAD false "]);
});

Deno.test("requestFraming: a plain Content-Length reads as the general rule reads it", () => {
  // The rule before the one-number shortcut: every comma-separated value trimmed, all equal,
  // one to fifteen digits.
  const general = (cl: string) => {
    const values = new Set(cl.split(",").map((v) => v.replace(/^[ \t]+|[ \t]+$/g, "")));
    const [only] = values;
    if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only)) return "400";
    return Number(only) === 0 ? "none" : `length ${Number(only)}`;
  };
  const framingOf = (cl: string) => {
    try {
      const f = requestFraming({
        method: "POST",
        target: "/",
        minor: 1,
        headers: [["host", "h"], ["content-length", cl]],
        keepAlive: true,
        expectContinue: false,
      });
      return f.kind === "length" ? `length ${f.length}` : f.kind;
    } catch (err) {
      return err instanceof BadRequestError ? String(err.status) : "threw";
    }
  };
  fc.assert(
    fc.property(
      fc.oneof(
        fc.stringMatching(/^[0-9]{1,17}$/),
        fc.stringMatching(/^[0-9, \t+\-.ex]{0,20}$/),
        fc.nat().map((n) => `${n}, ${n}`),
      ),
      (cl) => assert.equal(framingOf(cl), general(cl), JSON.stringify(cl)),
    ),
    { numRuns: 5000 },
  );
});

/** GETs each path on a connection of its own, reading the answer (ending "END") before closing. */
async function getEach(port: number, paths: string[]): Promise<void> {
  for (const p of paths) {
    const c = await RawClient.open(port);
    await c.send(`GET ${p} HTTP/1.1\r\nHost: h\r\n\r\n`);
    await c.until((s) => s.endsWith("END"));
    c.close();
  }
}

/** GETs `path` and leaves while the handler is still at work. */
async function leaveDuring(port: number, path: string): Promise<void> {
  const c = await RawClient.open(port);
  await c.send(`GET ${path} HTTP/1.1\r\nHost: h\r\n\r\n`);
  await new Promise((r) => setTimeout(r, 50));
  c.close();
  await new Promise((r) => setTimeout(r, 50));
}

Deno.test("info.completed settles as before, whether read during or after the exchange", async () => {
  const seen: Promise<string>[] = [];
  const outcome = (p: Promise<void>) => p.then(() => "ok", (e) => `failed ${(e as Error).name}`);
  let release!: () => void;
  const hold = new Promise<void>((r) => (release = r));
  let late: ServerHandlerInfo | undefined;
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (req, info) => {
    const path = req.url.slice(req.url.indexOf("/", 7));
    if (path === "/early") seen.push(outcome(info.completed));
    if (path === "/late") late = info; // read only after the answer went out
    if (path === "/gone") {
      seen.push(outcome(info.completed));
      await hold;
    }
    return new Response("END");
  });
  try {
    await getEach(server.addr.port, ["/early", "/late"]);
    await new Promise((r) => setTimeout(r, 20));
    seen.push(outcome(late!.completed));
    await leaveDuring(server.addr.port, "/gone");
    release();
    assert.deepEqual(await Promise.all(seen), ["ok", "ok", "failed Interrupted"]);
  } finally {
    release();
    await server.closeAll();
  }
});

Deno.test("info.onCompleted tells what info.completed does, after the write, and a throwing listener costs nothing", async () => {
  const told: string[] = [];
  const errors: string[] = [];
  let release!: () => void;
  const hold = new Promise<void>((r) => (release = r));
  let late: ServerHandlerInfo | undefined;
  let inStack = false;
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    logger: {
      log: (level, msg, fields) => {
        if (level === "error") errors.push(`${msg}: ${fields?.error}`);
      },
    },
  }, async (req, info) => {
    const path = req.url.slice(req.url.indexOf("/", 7));
    if (path === "/early") {
      info.onCompleted((ok) => told.push(`early ${ok}`));
      // A second listener, and one that throws: both heard, the throw reported.
      info.onCompleted((ok) => told.push(`early again ${ok}`));
      info.onCompleted(() => {
        throw new Error("listener bug");
      });
    }
    if (path === "/late") late = info;
    if (path === "/gone") {
      info.onCompleted((ok) => told.push(`gone ${ok}`));
      await hold;
    }
    return new Response("END");
  });
  try {
    await getEach(server.addr.port, ["/early", "/late", "/early"]);
    await new Promise((r) => setTimeout(r, 20));
    // Asked after the end: told later, never inside the caller's stack.
    inStack = true;
    late!.onCompleted((ok) => told.push(`late ${ok} ${inStack ? "in stack" : "later"}`));
    inStack = false;
    await new Promise((r) => setTimeout(r, 0));
    await leaveDuring(server.addr.port, "/gone");
    release();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(told, [
      "early true",
      "early again true",
      "early true",
      "early again true",
      "late true later",
      "gone false",
    ]);
    assert.deepEqual(errors, [
      "a response-completion listener failed: listener bug",
      "a response-completion listener failed: listener bug",
    ]);
    // The server still serves (the same connection: tests/http1/on_completed_review_test.ts).
    const again = await RawClient.open(server.addr.port);
    await again.send("GET /x HTTP/1.1\r\nHost: h\r\n\r\nGET /y HTTP/1.1\r\nHost: h\r\n\r\n");
    await again.until((s) => s.split("END").length === 3);
    again.close();
  } finally {
    release();
    await server.closeAll();
  }
});

Deno.test("responseBytesOf(): a bytes body beside the response, until someone reads res.body", async () => {
  const bytes = new TextEncoder().encode("abc");
  const res = responseWithPairs(bytes, { status: 200 }, []);
  assert.equal(responseBytesOf(res), bytes);
  assert.equal(responseBytesOf(responseWithPairs(null, { status: 200 }, [])), undefined);
  assert.equal(responseBytesOf(new Response(bytes)), undefined, "no side channel");
  assert.equal(await res.text(), "abc");
  // Consumed through the stream: the server must not write the bytes again.
  assert.equal(responseBytesOf(res), undefined);
});

Deno.test("the server's Request refuses exactly the URLs the Request constructor refuses, cached or not", () => {
  const hosts = fc.oneof(
    fc.constantFrom(
      "h",
      "h:8",
      "127.0.0.1:80",
      "[::1]:8080",
      "[::1",
      "a..b",
      "-x-",
      "h:",
      "h:99999",
    ),
    fc.constantFrom("a@b", "", "a b", "a%2", "a?b", "a#b", "a\\b", "x/y", "[fe80::1%25e]", "ÿ"),
    fc.stringMatching(/^[A-Za-z0-9.\-_:[\]@%?#/\\ ]{0,12}$/),
  );
  const targets = fc.constantFrom("/", "/v1/x?q=1", "//x", "/a/../b", "/%zz", "/\u00ff");
  const abort = new RequestAbort();
  const check = (url: string, note: string) => {
    let want: string;
    try {
      want = new Request(url).url === "" ? "?" : "ok";
    } catch (e) {
      want = (e as Error).name;
    }
    let got: string;
    try {
      const req = serverRequest({ url, method: "GET", body: null, abort }, {
        headers: [],
        takeBody: () => null,
      });
      got = req.url === url && req instanceof Request ? "ok" : "?";
    } catch (e) {
      got = (e as Error).name;
    }
    assert.equal(got, want, `${JSON.stringify(url)} (${note})`);
  };
  // Twice per case: the second answer comes from the host cache.
  fc.assert(
    fc.property(hosts, targets, (host, target) => {
      const url = `http://${host}${target}`;
      for (let i = 0; i < 2; i++) check(url, `call ${i + 1}`);
    }),
    { numRuns: 500 },
  );
  // In sequences: each URL after others, some sharing the start of the last good one.
  const url = fc.oneof(
    fc.tuple(hosts, targets).map(([h, t]) => `http://${h}${t}`),
    fc.tuple(hosts, fc.constantFrom("@x/", ":1@x/", "/", ".evil/", "[/")).map(([h, t]) =>
      `http://h${h}${t}`
    ),
  );
  fc.assert(
    fc.property(fc.array(url, { minLength: 1, maxLength: 6 }), (urls) => {
      for (const [i, u] of urls.entries()) check(u, `#${i + 1} of ${JSON.stringify(urls)}`);
    }),
    { numRuns: 500 },
  );
});

/** Every member of a response, read after `use` did something with it. */
async function responseSnapshot(res: Response, use: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  out.isResponse = res instanceof Response;
  out.fields = [res.status, res.statusText, res.ok, res.type, res.url, res.redirected];
  out.usedBefore = res.bodyUsed;
  const read = await readBodyAs(res, use);
  if (read !== NOT_A_BODY_MODE) out.got = read;
  switch (use) {
    case "clone": {
      const c = res.clone();
      out.got = [c.status, c.statusText, [...c.headers], await c.text(), await res.text()];
      break;
    }
    case "newResponse":
      out.got = await settle(new Response(res.body, res).text());
      break;
    case "editHeaders":
      res.headers.set("x-added", "1");
      out.got = [...res.headers];
      break;
    case "twice":
      out.got = [await settle(res.text()), await settle(res.text())];
      break;
  }
  out.usedAfter = res.bodyUsed;
  out.headers = [...res.headers];
  out.inspect = Deno.inspect(res).replace(/^\w+ /, "");
  return out;
}

Deno.test("a bytes response answers every member as an ordinary Response does", async () => {
  const cases: { status: number; statusText: string; pairs: HeaderPairs; body: string }[] = [
    {
      status: 200,
      statusText: "OK",
      pairs: [["content-type", "application/json"]],
      body: '{"a":1}',
    },
    { status: 201, statusText: "", pairs: [["x-a", "1"], ["x-a", "2"]], body: "caf\xc3\xa9" },
    {
      status: 400,
      statusText: "Bad \xff",
      pairs: [["content-type", "application/x-www-form-urlencoded"]],
      body: "a=1&b=2",
    },
    {
      status: 599,
      statusText: "Odd",
      pairs: [["set-cookie", "a=1"], ["set-cookie", "b=2"]],
      body: "",
    },
  ];
  const uses = [
    ...BODY_MODES,
    "clone",
    "newResponse",
    "editHeaders",
    "twice",
  ];
  for (const c of cases) {
    for (const use of uses) {
      const init = { status: c.status, statusText: c.statusText };
      const fast = responseWithPairs(latin1Bytes(c.body), init, c.pairs.map((p) => [...p]));
      const plain = new Response(latin1Bytes(c.body), { ...init, headers: c.pairs });
      assert.deepEqual(
        await responseSnapshot(fast, use),
        await responseSnapshot(plain, use),
        `${c.status} ${use}`,
      );
    }
  }
  // Where the constructor throws, so does the side channel.
  for (const init of [{ status: 600 }, { status: 199 }, { status: 200, statusText: "\n" }]) {
    assert.throws(() => new Response(new Uint8Array(1), init));
    assert.throws(() => responseWithPairs(new Uint8Array(1), init, []));
  }
});

Deno.test("the server's Request: edits to req.headers reach new Request(req) however often it was copied", () => {
  // An ordinary Request's `headers` and its inner request share one header
  // list, so `new Request(req)` (and `fetch(req)`) always send the fields
  // as they are now. The server's Request made its inner request once, from
  // a copy of the fields, and later edits were lost from every later copy.
  const abort = new RequestAbort();
  const req = serverRequest({ url: "http://h/p", method: "GET", body: null, abort }, {
    headers: [["host", "h"], ["x-a", "1"]],
    takeBody: () => null,
  });
  const plain = new Request("http://h/p", { headers: [["host", "h"], ["x-a", "1"]] });
  for (const r of [req, plain]) {
    assert.equal(new Request(r).headers.get("x-a"), "1");
    r.headers.set("x-m", "9");
    r.headers.delete("x-a");
    const copy = new Request(r);
    assert.equal(copy.headers.get("x-m"), "9", "a field added after the first copy");
    assert.equal(copy.headers.get("x-a"), null, "a field deleted after the first copy");
    // And the other way: the copy's edits never reach the original.
    copy.headers.set("x-c", "1");
    assert.equal(r.headers.get("x-c"), null);
  }
});

Deno.test("a bytes response: Response's own members called on it see res.headers, edits included", async () => {
  const res = responseWithPairs(new TextEncoder().encode("hi"), { status: 200 }, [["x-a", "1"]]);
  const plain = new Response("hi", { headers: [["x-a", "1"]] });
  const headersGet = Object.getOwnPropertyDescriptor(Response.prototype, "headers")!.get!;
  for (const r of [res, plain]) {
    assert.equal(headersGet.call(r), r.headers);
    assert.ok(r.body !== null); // the body stream (and any inner response) exists before the edit
    r.headers.set("content-type", "text/x-edited");
    const c = Response.prototype.clone.call(r);
    assert.deepEqual([...c.headers], [["content-type", "text/x-edited"], ["x-a", "1"]]);
    assert.equal((await r.blob()).type, "text/x-edited");
    assert.equal(await c.text(), "hi");
  }
});
