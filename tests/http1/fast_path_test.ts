/**
 * Hot-path shortcuts in lib/http1 against the code they replaced (commit
 * 095742b), kept here as references: the request and response encoders
 * write a head and the body that leaves with it into one buffer
 * (`latin1WithTail`), `writeLatin1` copies an ASCII head natively, and
 * `framingOf` reads one plain Content-Length without the general path.
 * Every input must give the same bytes, framing or error.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  bytesToLatin1,
  latin1ToBytes,
  latin1WithTail,
  writeLatin1,
} from "../../lib/http1/latin1.ts";
import {
  encodeRequest,
  findHeadEnd,
  type Framing,
  framingOf,
  type ResponseHead,
  trimOws,
} from "../../lib/http1/parse.ts";
import { encodeResponseHead, type ResponseHeadOptions } from "../../lib/http1/response_head.ts";
import { concatBytes } from "../../lib/core/slab.ts";
import { responseWithPairs } from "../../lib/http1/raw.ts";
import { type HeaderPairs, Http1Error } from "../../lib/http1/types.ts";

function referenceWriteLatin1(s: string, out: Uint8Array, at: number): number {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError("header text is not a byte string");
    out[at++] = c;
  }
  return at;
}

const OWN_FIELDS = new Set(["content-length", "transfer-encoding", "connection", "keep-alive"]);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// deno-lint-ignore no-control-regex -- as in parse.ts
const UNSAFE_TEXT = /[\r\n\0]|[^\x00-\xff]/;
// deno-lint-ignore no-control-regex -- as in parse.ts
const UNSAFE_TARGET = /[\s\0]|[^\x00-\xff]/;

function referenceEncodeRequest(
  method: string,
  target: string,
  headers: HeaderPairs,
  body: Uint8Array | null,
  host: string,
  upgrade = false,
): Uint8Array {
  if (!TOKEN.test(method) || target === "" || UNSAFE_TARGET.test(target)) {
    throw new Http1Error("invalid request line for the engine", { sent: false });
  }
  let head = `${method} ${target} HTTP/1.1\r\n`;
  let hasHost = false;
  for (const [name, value] of headers) {
    if (OWN_FIELDS.has(name)) continue;
    if (!TOKEN.test(name) || UNSAFE_TEXT.test(value)) {
      throw new Http1Error(`invalid request header ${JSON.stringify(name)}`, { sent: false });
    }
    if (name === "host") hasHost = true;
    head += `${name}: ${value}\r\n`;
  }
  if (!hasHost) head = head.replace("\r\n", `\r\nhost: ${host}\r\n`);
  if (upgrade) head += "connection: upgrade\r\n";
  const needsLength = body !== null || !(method === "GET" || method === "HEAD");
  if (needsLength) head += `content-length: ${body?.byteLength ?? 0}\r\n`;
  head += "\r\n";
  if (!body || body.byteLength === 0) return latin1ToBytes(head);
  const out = new Uint8Array(head.length + body.byteLength);
  const at = referenceWriteLatin1(head, out, 0);
  out.set(body, at);
  return out;
}

/** The outcome of `fn`: its bytes, or the error's class and message. */
function outcome(fn: () => Uint8Array): { bytes: number[] } | { error: string } {
  try {
    return { bytes: [...fn()] };
  } catch (err) {
    return { error: `${(err as Error).name}: ${(err as Error).message}` };
  }
}

// Byte strings with the characters that matter: ASCII, CR/LF/NUL, obs-text,
// and code units above 0xff (not byte strings).
const char = fc.oneof(
  fc.constantFrom("a", "Z", "0", " ", "\t", ":", "/", "\r", "\n", "\0", "\x7f"),
  fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)),
  fc.constantFrom("\u0100", "\u20ac", "\ud83d"),
  fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
);
const text = fc.array(char, { maxLength: 40 }).map((cs) => cs.join(""));
const asciiText = fc.string({ unit: "binary-ascii", maxLength: 200 });
const bytes = fc.option(fc.uint8Array({ maxLength: 64 }), { nil: null });

Deno.test("writeLatin1 matches the per-character loop at any offset", () => {
  fc.assert(
    fc.property(fc.oneof(text, asciiText), fc.nat({ max: 8 }), (s, at) => {
      const a = new Uint8Array(at + s.length + 4).fill(0xee);
      const b = new Uint8Array(at + s.length + 4).fill(0xee);
      const ra = outcome(() => {
        const end = writeLatin1(s, a, at);
        return Uint8Array.of(end, ...a);
      });
      const rb = outcome(() => {
        const end = referenceWriteLatin1(s, b, at);
        return Uint8Array.of(end, ...b);
      });
      assert.deepEqual(ra, rb);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("latin1WithTail is the head's bytes followed by the tail", () => {
  fc.assert(
    fc.property(fc.oneof(text, asciiText), bytes, (s, tail) => {
      const expected = outcome(() =>
        tail === null || tail.byteLength === 0
          ? latin1ToBytes(s)
          : concatBytes([latin1ToBytes(s), tail])
      );
      assert.deepEqual(outcome(() => latin1WithTail(s, tail)), expected);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("latin1WithTail: exact bytes for obs-text and an empty tail", () => {
  assert.deepEqual([...latin1WithTail("a\xff\x80", Uint8Array.of(1, 2))], [0x61, 0xff, 0x80, 1, 2]);
  assert.deepEqual([...latin1WithTail("ok", new Uint8Array(0))], [0x6f, 0x6b]);
  assert.throws(() => latin1WithTail("\u0100", Uint8Array.of(1)), RangeError);
});

const name = fc.oneof(
  fc.constantFrom("content-type", "host", "content-length", "connection", "x-a", "bad name", ""),
  text,
);
const method = fc.constantFrom("GET", "HEAD", "POST", "PUT", "BAD METHOD", "");
const target = fc.oneof(fc.constantFrom("/v1/chat/completions", "/", "", "/a b"), text);

Deno.test("encodeRequest gives the same bytes or error as before", () => {
  fc.assert(
    fc.property(
      method,
      target,
      fc.array(fc.tuple(name, text), { maxLength: 6 }),
      bytes,
      fc.boolean(),
      (m, t, headers, body, upgrade) => {
        const pairs = headers as HeaderPairs;
        assert.deepEqual(
          outcome(() => encodeRequest(m, t, pairs, body, "127.0.0.1:8000", upgrade)),
          outcome(() => referenceEncodeRequest(m, t, pairs, body, "127.0.0.1:8000", upgrade)),
        );
      },
    ),
    { numRuns: 3000 },
  );
});

Deno.test("encodeRequest gives the same bytes as before for valid requests, with and without Host", () => {
  // Valid heads are rare among the generated ones above; here every one is.
  const safeName = fc.constantFrom("host", "content-type", "user-agent", "x-a", "connection");
  const safeValue = fc.string({ unit: "binary-ascii", maxLength: 12 }).map((v) =>
    v.replace(/[^\x20-\x7e]/g, "v")
  );
  fc.assert(
    fc.property(
      fc.constantFrom("GET", "POST"),
      fc.array(fc.tuple(safeName, safeValue), { maxLength: 5 }),
      bytes,
      fc.boolean(),
      (m, headers, body, upgrade) => {
        const pairs = headers as HeaderPairs;
        assert.deepEqual(
          outcome(() => encodeRequest(m, "/x", pairs, body, "127.0.0.1:8000", upgrade)),
          outcome(() => referenceEncodeRequest(m, "/x", pairs, body, "127.0.0.1:8000", upgrade)),
        );
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("encodeRequest: exact bytes of a chat request", () => {
  const body = new TextEncoder().encode('{"model":"m"}');
  const out = encodeRequest(
    "POST",
    "/v1/chat/completions",
    [["content-type", "application/json"], ["x-b", "\xe9"]],
    body,
    "127.0.0.1:8000",
  );
  const expected = "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n" +
    "content-type: application/json\r\nx-b: \xe9\r\ncontent-length: 13\r\n\r\n" +
    '{"model":"m"}';
  assert.deepEqual([...out], [...latin1ToBytes(expected)]);
});

Deno.test("encodeResponseHead with a tail is the head followed by the body", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom("content-type", "x-a", "date", "content-length"), text), {
        maxLength: 5,
      }),
      fc.uint8Array({ maxLength: 64 }),
      fc.constantFrom(200, 404, 503),
      fc.boolean(),
      fc.constantFrom(0, 1),
      (pairs, body, status, keepAlive, minor) => {
        const opts: ResponseHeadOptions = {
          method: "POST",
          minor,
          keepAlive,
          knownLength: body.byteLength,
        };
        // The `date` field is the current second: both encodings in one try,
        // retried when a second boundary fell between them.
        for (let attempt = 0; attempt < 3; attempt++) {
          const make = () =>
            responseWithPairs(body, { status }, pairs.map(([n, v]) => [n, v] as [string, string]));
          const old = outcome(() => {
            const enc = encodeResponseHead(make(), opts);
            return body.byteLength > 0 ? concatBytes([enc.bytes, body]) : enc.bytes;
          });
          const now = outcome(() => encodeResponseHead(make(), { ...opts, tail: body }).bytes);
          if (JSON.stringify(old) === JSON.stringify(now) || attempt === 2) {
            assert.deepEqual(now, old);
            break;
          }
        }
      },
    ),
    { numRuns: 500 },
  );
});

function referenceFramingOf(method: string, head: ResponseHead): Framing {
  const s = head.status;
  if (method === "HEAD" || s < 200 || s === 204 || s === 205 || s === 304) return { kind: "none" };
  let te: string | null = null;
  let cl: string | null = null;
  for (const [n, v] of head.headers) {
    if (n === "transfer-encoding") te = te === null ? v : `${te}, ${v}`;
    else if (n === "content-length") cl = cl === null ? v : `${cl}, ${v}`;
  }
  if (method === "CONNECT" && s < 300) {
    throw new Http1Error("engine opened a tunnel for CONNECT", { sent: true });
  }
  if (te !== null) {
    const codings = te.split(",").map((c) => trimOws(c).toLowerCase()).filter((c) => c !== "");
    if (codings.filter((c) => c === "chunked").length > 1) {
      throw new Http1Error("chunked applied more than once by the engine", { sent: true });
    }
    return codings.at(-1) === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  if (cl === null) return { kind: "close" };
  const values = new Set(cl.split(",").map(trimOws));
  const [only] = values;
  if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only)) {
    throw new Http1Error("conflicting or invalid Content-Length from the engine", { sent: true });
  }
  return { kind: "length", length: Number(only) };
}

function framingOutcome(fn: () => Framing): Framing | { error: string } {
  try {
    return fn();
  } catch (err) {
    return { error: `${(err as Error).name}: ${(err as Error).message}` };
  }
}

Deno.test("framingOf gives the same framing or error as before", () => {
  const clValue = fc.oneof(
    fc.constantFrom("0", "5", "007", "1234567890123", "999999999999999", "1000000000000000"),
    fc.constantFrom("", " 5", "5 ", "5, 5", "5,6", "-1", "+5", "0x10", "5\t", "1e3", "٣"),
    fc.stringMatching(/^[0-9, \t]{0,18}$/),
    text,
  );
  const field = fc.oneof(
    fc.tuple(fc.constant("content-length"), clValue),
    fc.tuple(fc.constant("transfer-encoding"), fc.constantFrom("chunked", "gzip", "gzip, chunked")),
    fc.tuple(fc.constant("x-a"), text),
  );
  fc.assert(
    fc.property(
      fc.constantFrom("GET", "POST", "HEAD", "CONNECT"),
      fc.constantFrom(100, 200, 204, 205, 304, 404),
      fc.array(field, { maxLength: 3 }),
      (method, status, headers) => {
        const head: ResponseHead = {
          minor: 1,
          status,
          statusText: "",
          headers: headers as HeaderPairs,
          keepAlive: true,
          keepAliveTimeout: null,
        };
        assert.deepEqual(
          framingOutcome(() => framingOf(method, head)),
          framingOutcome(() => referenceFramingOf(method, head)),
        );
      },
    ),
    { numRuns: 5000 },
  );
});

Deno.test("bytesToLatin1 and latin1ToBytes: one code unit per byte, both ways, ASCII or not", () => {
  const reference = (b: Uint8Array) => Array.from(b, (x) => String.fromCharCode(x)).join("");
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.uint8Array({ max: 0x7f, maxLength: 600 }),
    // A BOM and the windows-1252 range, which other decoders rewrite.
    fc.constantFrom(
      Uint8Array.of(0xef, 0xbb, 0xbf, 0x41),
      Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i),
      Uint8Array.from({ length: 256 }, (_, i) => i),
    ),
  );
  fc.assert(
    fc.property(bytes, (b) => {
      const s = bytesToLatin1(b);
      assert.equal(s, reference(b));
      assert.deepEqual(latin1ToBytes(s), b);
    }),
    { numRuns: 1000 },
  );
});

// findHeadEnd as it was (commit 8093f80): a `Uint8Array.indexOf` per line.
function referenceFindHeadEnd(buf: Uint8Array, from: number): number {
  let i = buf.indexOf(10, Math.max(0, from));
  while (i !== -1) {
    if (buf[i + 1] === 10) return i + 2;
    if (buf[i + 1] === 13 && buf[i + 2] === 10) return i + 3;
    i = buf.indexOf(10, i + 1);
  }
  return -1;
}

Deno.test("findHeadEnd finds the same end as the indexOf scan, from any offset", () => {
  // Mostly CR, LF and a letter, so line ends of every shape (and none) turn up.
  const bytes = fc.array(
    fc.oneof(fc.constantFrom(10, 13, 13, 10, 65), fc.integer({ min: 0, max: 255 })),
    { maxLength: 48 },
  ).map((a) => new Uint8Array(a));
  fc.assert(
    fc.property(bytes, fc.integer({ min: -4, max: 52 }), fc.nat(8), (buf, from, cut) => {
      // Also on a view that ends early: bytes past it must not count.
      const view = new Uint8Array([...buf, 10, 10]).subarray(0, Math.max(0, buf.length - cut));
      assert.equal(findHeadEnd(buf, from), referenceFindHeadEnd(buf, from));
      assert.equal(findHeadEnd(view, from), referenceFindHeadEnd(view, from));
    }),
    { numRuns: 20_000 },
  );
  const head = latin1ToBytes("POST / HTTP/1.1\r\nHost: h\r\n\r\nbody\n\n");
  assert.equal(findHeadEnd(head, 0), 28);
  assert.equal(findHeadEnd(head, 30), 34);
  assert.equal(findHeadEnd(head.subarray(0, 27), 0), -1);
});
