/**
 * `parseRequestHead` reads a head in one indexed pass; the reference below
 * is the line-splitting parser it replaced. Both must agree on every head:
 * the same fields, flags and, for a refused head, the same status and reason.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";
import { connectionOptions, trimOws } from "../../lib/http1/parse.ts";
import {
  BadRequestError,
  parseRequestHead,
  type RequestHead,
} from "../../lib/http1/request_head.ts";
import type { HeaderPairs } from "../../lib/http1/types.ts";

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TARGET = /^[\x21-\x7e\x80-\xff]+$/;
const HOST = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?$/;

// The parser as it was before the one-pass rewrite (commit e63b5c2).
function referenceParse(bytes: Uint8Array): RequestHead {
  const lines = bytesToLatin1(bytes).split("\n");
  // RFC 9112 §2.2: a server should ignore empty lines before the request line.
  let at = 0;
  while (at < lines.length - 1 && (lines[at] === "" || lines[at] === "\r")) at++;
  const first = lines[at].endsWith("\r") ? lines[at].slice(0, -1) : lines[at];
  const parts = first.split(" ");
  if (parts.length !== 3) throw new BadRequestError(400, "malformed request line");
  const [method, target, version] = parts;
  const v = /^HTTP\/1\.([01])$/.exec(version);
  if (!v) {
    throw new BadRequestError(/^HTTP\/\d\.\d$/.test(version) ? 505 : 400, "unsupported version");
  }
  if (!TOKEN.test(method)) throw new BadRequestError(400, "malformed method");
  if (!TARGET.test(target)) throw new BadRequestError(400, "malformed request target");
  const headers: HeaderPairs = [];
  for (let i = at + 1; i < lines.length; i++) {
    let line = lines[i];
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line === "") continue;
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) throw new BadRequestError(400, "obsolete line folding");
    const colon = line.indexOf(":");
    const name = colon <= 0 ? "" : line.slice(0, colon);
    // No whitespace between name and colon (§5.1: a server must reject it).
    if (!TOKEN.test(name)) throw new BadRequestError(400, "malformed header field");
    const value = trimOws(line.slice(colon + 1));
    // deno-lint-ignore no-control-regex -- control bytes in a value are the point
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) {
      throw new BadRequestError(400, "control character in a header value");
    }
    headers.push([name.toLowerCase(), value]);
  }
  const minor = Number(v[1]);
  let close = false;
  let keepAliveToken = false;
  let expectContinue = false;
  let hosts = 0;
  for (const [n, val] of headers) {
    if (n === "connection") {
      const o = connectionOptions(val);
      close ||= o.close;
      keepAliveToken ||= o.keepAlive;
    } else if (n === "expect") {
      expectContinue = val.toLowerCase() === "100-continue";
    } else if (n === "host") {
      hosts++;
      if (!HOST.test(val)) throw new BadRequestError(400, "malformed Host header");
    }
  }
  // §3.2: exactly one Host in HTTP/1.1.
  if (hosts > 1 || (minor === 1 && hosts === 0)) {
    throw new BadRequestError(400, "HTTP/1.1 request needs exactly one Host header");
  }
  return {
    method,
    target,
    minor,
    headers,
    keepAlive: !close && (minor === 1 || keepAliveToken),
    expectContinue: expectContinue && minor === 1,
  };
}

function outcome(parse: (b: Uint8Array) => RequestHead, head: string): unknown {
  try {
    return parse(latin1ToBytes(head));
  } catch (err) {
    return err instanceof BadRequestError ? `${err.status} ${err.message}` : `threw ${err}`;
  }
}

function agree(head: string): void {
  assert.deepEqual(
    outcome(parseRequestHead, head),
    outcome(referenceParse, head),
    JSON.stringify(head),
  );
}

const lineEnd = fc.constantFrom("\r\n", "\n", "\r\r\n", "\r");
const requestLine = fc.oneof(
  fc.constantFrom(
    "POST /v1/chat/completions HTTP/1.1",
    "GET / HTTP/1.0",
    "GET /a HTTP/2.0",
    "GET /a HTTP/1.1 x",
    "G@T / HTTP/1.1",
    "GET /\x7f HTTP/1.1",
    "GET /caf\xe9 HTTP/1.1",
    "",
    " GET / HTTP/1.1",
  ),
  fc.tuple(
    fc.constantFrom("GET", "POST", "get", "X"),
    fc.constantFrom("/", "/a?b", "http://h/x", "*"),
    fc.constantFrom("HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "http/1.1"),
  ).map((p) => p.join(" ")),
);
const field = fc.oneof(
  fc.tuple(
    fc.constantFrom(
      "Host",
      "host",
      "Connection",
      "Expect",
      "Content-Length",
      "X-A",
      "x a",
      "",
      "Bad\x01",
      "Host ",
    ),
    fc.constantFrom(":", ": ", ":\t", " :", "::"),
    fc.constantFrom(
      "h",
      "h:8080",
      "[::1]:1",
      "bad/host",
      "close",
      "keep-alive",
      "Keep-Alive, Upgrade",
      "100-continue",
      "100-Continue ",
      "5",
      "",
      "  a b  ",
      "x\x01y",
      "x\x7fy",
      "caf\xc3\xa9",
      "a\tb",
    ),
  ).map((p) => p.join("")),
  fc.constantFrom(" folded", "\tfolded", "no colon", ":empty-name", "", "\r"),
);
const head = fc.tuple(
  fc.array(fc.constantFrom("", "\r"), { maxLength: 2 }),
  requestLine,
  fc.array(field, { maxLength: 8 }),
  lineEnd,
  fc.boolean(),
).map(([blanks, line, fields, eol, trailing]) =>
  blanks.map((b) => b + "\n").join("") + [line, ...fields].join(eol) + (trailing ? eol : "")
);

Deno.test("parseRequestHead agrees with the line-splitting parser on random heads", () => {
  fc.assert(fc.property(head, agree), { numRuns: 30_000 });
});

// Heads built from the bytes the parser treats specially (delimiters, the
// edges of each byte class it checks by table) and any other byte, so that
// every class check, the request-line split and the version test meet
// inputs the structured generator above does not make.
const SPECIAL = [
  " ",
  "\t",
  "\r",
  "\n",
  ":",
  "/",
  "\x00",
  "\x1f",
  "\x20",
  "\x7e",
  "\x7f",
  "\x80",
  "\xff",
  "@",
  "[",
  "{",
  "A",
  "Z",
  "a",
  "z",
  "0",
  "9",
  "HTTP/1.1",
  "HTTP/1.0",
  "HTTP/1.",
  "HTTP/2.0",
  "HTTP/1.10",
  "Host: h",
  "host:",
  "Connection: close",
  "Expect: 100-continue",
];
const anyByte = fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c));
const noisyHead = fc.tuple(
  fc.constantFrom("GET", "POST", "get", "G\x80T", "", "M:"),
  fc.array(fc.oneof(fc.constantFrom(...SPECIAL), anyByte), { maxLength: 12 }),
  fc.array(fc.oneof(fc.constantFrom(...SPECIAL), anyByte), { maxLength: 40 }),
).map(([m, line, rest]) => `${m} ${line.join("")}${rest.join("")}`);

Deno.test("parseRequestHead agrees with the line-splitting parser on noisy bytes", () => {
  fc.assert(fc.property(noisyHead, agree), { numRuns: 30_000 });
  fc.assert(
    fc.property(fc.array(anyByte, { maxLength: 64 }).map((a) => a.join("")), agree),
    { numRuns: 10_000 },
  );
});

Deno.test("parseRequestHead agrees with the line-splitting parser on edge heads", () => {
  for (
    const h of [
      "",
      "\n",
      "\r\n",
      "\n\n",
      "GET / HTTP/1.1",
      "GET / HTTP/1.1\r\nHost: h",
      "\r\n\nGET / HTTP/1.1\nHost: h\n",
      "GET / HTTP/1.1\r\nHost: h\r\n\r\nX: 1",
      "GET / HTTP/1.1\r\nHost: h\r\nHost: h",
      "GET / HTTP/1.0\r\nConnection: keep-alive",
      "GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nExpect: x",
      "GET / HTTP/1.1\r\nHost: h\r\nA:b:c",
      "GET / HTTP/1.1\r\nHost: bad/h\r\nX Y: 1",
      "GET / HTTP/1.1\r\nHost: h\r\r\n",
      "GET / HTTP/1.1 \r\nHost: h",
      "GET / HTTP/1.10\r\nHost: h",
      "GET / HTTP/1.\r\nHost: h",
      "GET /  HTTP/1.1\r\nHost: h",
      "GET /\tHTTP/1.1\r\nHost: h",
      "GET / HTTP/1.1\nHost: h\nX-Up: A\x7f",
      "GET / HTTP/1.1\nHost: h\nX-UP:\t a \t",
      "GET / HTTP/1.1\nHost: h\nX\x80: a",
      "GET / HTTP/1.1\nHost: h\n: a",
      "GET / HTTP/1.1\nHost: h\nX-A",
      "GET / HTTP/1.1\nHost:\x00h",
    ]
  ) {
    agree(h);
  }
  assert.deepEqual(
    parseRequestHead(latin1ToBytes("POST /x HTTP/1.1\r\nHost: h\r\nX-A:  1 \r\n")).headers,
    [["host", "h"], ["x-a", "1"]],
  );
});
