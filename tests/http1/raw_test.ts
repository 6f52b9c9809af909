/**
 * The server ↔ relay side channel (lib/http1/raw.ts): header pairs in place
 * of `Headers` objects, and a buffered request body handed over whole. Each
 * fast path must give what the ordinary path gives, byte for byte.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  headersOrder,
  pairsGet,
  rawRequestOf,
  requestHeader,
  responseBytesOf,
  responsePairsOf,
  responseWithPairs,
} from "../../lib/http1/raw.ts";
import { serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import type { HeaderPairs } from "../../lib/http1/types.ts";
import { CorsPolicy } from "../../lib/proxy/cors.ts";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { upstreamRequestHeaders } from "../../lib/proxy/headers.ts";
import { BodyBudget, BodyReader } from "../../lib/proxy/body.ts";
import { RawClient } from "../_helpers/raw_http.ts";

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
