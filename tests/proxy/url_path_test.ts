/**
 * `pathnameOf` (lib/proxy/url_path.ts) must answer exactly what
 * `new URL(url).pathname` answers: the relay routes on it, and a
 * difference in dot-segment handling would let `/x/../vastproxy/…` past
 * the admin check or keep a real admin path from it.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { pathnameOf } from "../../lib/proxy/url_path.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { createHandler, type RequestLogLine } from "../../lib/proxy/relay.ts";
import { createPolicy } from "../../lib/proxy/policies.ts";
import { FakePool, FakeTarget } from "../_helpers/fake_pool.ts";
import { RawClient } from "../_helpers/raw_http.ts";

/** `new URL(url).pathname`, or null when the parser refuses `url`. */
function parserPathname(url: string): string | null {
  try {
    return new URL(url).pathname;
  } catch {
    return null;
  }
}

function same(url: string): void {
  const want = parserPathname(url);
  if (want === null) return; // never reaches the relay: the Request constructor refuses it
  assert.equal(pathnameOf(url), want, JSON.stringify(url));
}

const BASES = [
  "http://h",
  "http://proxy.test:8080",
  "HTTPS://Example.COM",
  "http://u:p@h",
  "http://[::1]:9",
  "http://127.0.0.1",
];

// Pieces the fast path handles itself: dots and their percent spellings, in any case.
const plainPiece = fc.constantFrom(
  "/",
  ".",
  "..",
  "%2e",
  "%2E",
  ".%2e",
  "%2e.",
  "%2E%2e",
  "%2",
  "%",
  "%41",
  "v1",
  "vastproxy",
  "a.b",
  "...",
  "e",
  "c:",
  "Z:",
  "~",
  "@",
  ":",
  ";=,",
  "!$&'()*+",
  "-_",
);
// Everything else a request target may hold (and some it may not): the
// fast path must hand these to the parser, or agree with it.
const widePiece = fc.oneof(
  plainPiece,
  fc.constantFrom("?", "#", "\\", "|", "[", "]", "^", "`", "{", "}", '"', "<", ">", " ", "\t"),
  fc.integer({ min: 0x21, max: 0xff }).map((c) => String.fromCharCode(c)),
  fc.constantFrom("é", "\u{1F600}", "\u00a0"),
);

Deno.test("pathnameOf equals new URL().pathname over random plain targets", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...BASES),
      fc.array(plainPiece, { maxLength: 14 }),
      fc.constantFrom("", "?q=1", "?a/../b", "#f", "?x#y/.."),
      (base, pieces, tail) => same(`${base}/${pieces.join("")}${tail}`),
    ),
    { numRuns: 20_000 },
  );
});

Deno.test("pathnameOf equals new URL().pathname over random wide targets", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...BASES),
      fc.array(widePiece, { maxLength: 14 }),
      (base, pieces) => same(`${base}/${pieces.join("")}`),
    ),
    { numRuns: 20_000 },
  );
});

Deno.test("pathnameOf equals new URL().pathname for URLs without a path, and other schemes", () => {
  for (const base of BASES) {
    for (const tail of ["", "?", "?q=/..", "#", "#/a/..", "/", "//", "/./", "/../.."]) {
      same(base + tail);
    }
  }
  for (
    const url of [
      "http:/h/a/../b",
      "http:\\\\h\\a\\..\\b",
      "http://h\\a/../b",
      "ftp://h/a/../b",
      "file:///a/../b",
      "data:text/plain,a/../b",
      "foo://h/a/%2e%2e/b",
      "urn:x/../y",
      "http://h/a\tb/../c",
      " http://h/a/../b ",
    ]
  ) {
    same(url);
  }
});

Deno.test("pathnameOf resolves dot segments as the URL parser does", () => {
  const cases: [string, string][] = [
    ["/vastproxy/../v1/x", "/v1/x"],
    ["/v1/%2e%2e/vastproxy/status", "/vastproxy/status"],
    ["/v1/%2E./vastproxy", "/vastproxy"],
    ["/a/..", "/"],
    ["/a/.", "/a/"],
    ["/../../a", "/a"],
    ["/a/./b/../../c/", "/c/"],
    ["/a/...", "/a/..."],
    ["//a/../b", "//b"],
    ["/v1/chat/completions", "/v1/chat/completions"],
    // The parser never removes a segment that looks like a Windows drive
    // letter (`e:`), in http(s) too, nor anything before it.
    ["/e:/..", "/e:/"],
    ["/a/b/e:/../..", "/a/b/e:/"],
    ["/E:/../vastproxy/status", "/E:/vastproxy/status"],
    ["/e:x/..", "/"],
    ["/e%3A/..", "/"],
    ["/1:/..", "/"],
  ];
  for (const [target, want] of cases) {
    assert.equal(pathnameOf(`http://h${target}`), want, target);
    assert.equal(new URL(`http://h${target}`).pathname, want, `${target} (parser)`);
  }
});

Deno.test("relay over the server routes raw dot-segment targets as the URL parser resolves them", async () => {
  const pool = new FakePool([new FakeTarget(1, { models: ["m"] })]);
  const lines: RequestLogLine[] = [];
  let adminCalls = 0;
  const h = createHandler({
    pool,
    policy: createPolicy("round-robin"),
    stickyHeader: null,
    authToken: null,
    maxBodyBytes: 1024,
    onRequestLog: (l) => lines.push(l),
    admin: () => {
      adminCalls++;
      return new Response("admin");
    },
  });
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (req, info) => h(req, info));
  const get = async (target: string) => {
    const c = await RawClient.open(server.addr.port);
    try {
      await c.send(`GET ${target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`);
      await c.until((_s) => c.closed);
      return c.received;
    } finally {
      c.close();
    }
  };
  try {
    // A plain `Request` would already have resolved these; the server hands them over raw.
    const models = await get("/vastproxy/../v1/models");
    assert.match(models, /"id":"m"/);
    assert.equal(await get("/v1/%2e%2e/vastproxy/status").then((s) => s.endsWith("admin")), true);
    assert.equal(adminCalls, 1);
    assert.deepEqual(lines.map((l) => l.path), ["/v1/models", "/vastproxy/status"]);
  } finally {
    await server.closeAll();
  }
});
