/**
 * The byte-level half of the HTTP/1.1 server (server.ts): parsing a request
 * head and deciding how its body is framed (RFC 9112). A server is stricter
 * than the client's response parser, because a request the proxy reads one
 * way and a front proxy reads another is request smuggling: whitespace before
 * a colon, obs-fold, Content-Length together with Transfer-Encoding and a
 * malformed length are all refused rather than repaired.
 */
import { bytesToLatin1 } from "./latin1.ts";
import {
  BYTE_CLASS,
  connectionOptions,
  CTL,
  TCHAR,
  trimmedSlice,
  trimOws,
  UPPER,
  VCHAR,
} from "./parse.ts";
import type { HeaderPairs } from "./types.ts";

/** A parsed request head. */
export interface RequestHead {
  method: string;
  /** The request target exactly as sent (byte string). */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  /** Fields in order: names lower-case, values byte strings. */
  headers: HeaderPairs;
  /** HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`. */
  keepAlive: boolean;
  /** `Expect: 100-continue` was sent. */
  expectContinue: boolean;
}

/** How a request body is delimited. */
export type RequestFraming = { kind: "none" } | { kind: "length"; length: number } | {
  kind: "chunked";
};

/** A request the server must refuse with `status`, then close the connection. */
export class BadRequestError extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.name = "BadRequestError";
    this.status = status;
  }
}

const DIGITS = /^[0-9]{1,15}$/;
// A Host value that cannot change where the URL's path starts (no `/`, `?`,
// `#`, `@`, `\`): reg-name, IPv4, [IPv6] and an optional port.
const HOST = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=%]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{0,5})?$/;

/** True when every code unit of `text[from, to)` is of class `k` (and there is one). */
function allOf(text: string, from: number, to: number, k: number): boolean {
  if (from >= to) return false;
  for (let i = from; i < to; i++) if ((BYTE_CLASS[text.charCodeAt(i)] & k) === 0) return false;
  return true;
}

/** The status for a version other than HTTP/1.0 and HTTP/1.1: a well-formed other one is 505. */
function versionError(version: string): BadRequestError {
  return new BadRequestError(/^HTTP\/\d\.\d$/.test(version) ? 505 : 400, "unsupported version");
}

/**
 * Parses a request head (request line and fields, without the terminating
 * empty line). Throws `BadRequestError` for anything that cannot be read one
 * way only.
 */
export function parseRequestHead(bytes: Uint8Array): RequestHead {
  // One pass over the text by index: no array of lines, no per-line copies
  // to strip a CR, and the fields the server acts on are noted as they pass.
  const text = bytesToLatin1(bytes);
  const n = text.length;
  // RFC 9112 §2.2: a server should ignore empty lines before the request line.
  let start = 0;
  let nl = text.indexOf("\n");
  while (nl !== -1 && (nl === start || (nl === start + 1 && text.charCodeAt(start) === 13))) {
    start = nl + 1;
    nl = text.indexOf("\n", start);
  }
  let end = nl === -1 ? n : nl;
  if (end > start && text.charCodeAt(end - 1) === 13) end--;
  // Exactly two spaces: method, target, version (as `split(" ")` into three).
  const sp1 = text.indexOf(" ", start);
  const sp2 = sp1 === -1 || sp1 >= end ? -1 : text.indexOf(" ", sp1 + 1);
  if (sp2 === -1 || sp2 >= end) throw new BadRequestError(400, "malformed request line");
  const sp3 = text.indexOf(" ", sp2 + 1);
  if (sp3 !== -1 && sp3 < end) throw new BadRequestError(400, "malformed request line");
  // "HTTP/1.0" or "HTTP/1.1"
  const digit = text.charCodeAt(sp2 + 8);
  if (end - sp2 !== 9 || !text.startsWith("HTTP/1.", sp2 + 1) || (digit !== 48 && digit !== 49)) {
    throw versionError(text.slice(sp2 + 1, end));
  }
  const minor = digit - 48;
  if (!allOf(text, start, sp1, TCHAR)) throw new BadRequestError(400, "malformed method");
  if (!allOf(text, sp1 + 1, sp2, VCHAR)) {
    throw new BadRequestError(400, "malformed request target");
  }
  // The usual two as constants: no copy, and later lookups and comparisons
  // of an internalized string are cheaper.
  const method = sp1 - start === 4 && text.startsWith("POST", start)
    ? "POST"
    : sp1 - start === 3 && text.startsWith("GET", start)
    ? "GET"
    : text.slice(start, sp1);
  const target = text.slice(sp1 + 1, sp2);
  const headers: HeaderPairs = [];
  let close = false;
  let keepAliveToken = false;
  let expectContinue = false;
  let hosts = 0;
  let at = nl + 1;
  while (nl !== -1) {
    const s = at;
    nl = text.indexOf("\n", s);
    let e = nl === -1 ? n : nl;
    at = e + 1;
    if (e > s && text.charCodeAt(e - 1) === 13) e--;
    if (e === s) continue;
    const c0 = text.charCodeAt(s);
    if (c0 === 0x20 || c0 === 0x09) throw new BadRequestError(400, "obsolete line folding");
    // The name runs to the first byte that is not a tchar, which must be the
    // colon: no whitespace between name and colon (§5.1: a server must reject it).
    let colon = s;
    let upper = 0;
    for (; colon < e; colon++) {
      const k = BYTE_CLASS[text.charCodeAt(colon)];
      if ((k & TCHAR) === 0) break;
      upper |= k;
    }
    if (colon === s || colon === e || text.charCodeAt(colon) !== 58) {
      throw new BadRequestError(400, "malformed header field");
    }
    // The value without surrounding SP / HTAB (as `trimOws`), checked whole.
    const value = trimmedSlice(text, colon + 1, e);
    for (let i = 0; i < value.length; i++) {
      if ((BYTE_CLASS[value.charCodeAt(i)] & CTL) !== 0) {
        throw new BadRequestError(400, "control character in a header value");
      }
    }
    const lower = (upper & UPPER) === 0 ? text.slice(s, colon) : text.slice(s, colon).toLowerCase();
    headers.push([lower, value]);
    if (lower === "connection") {
      const o = connectionOptions(value);
      close ||= o.close;
      keepAliveToken ||= o.keepAlive;
    } else if (lower === "expect") {
      expectContinue = value.toLowerCase() === "100-continue";
    } else if (lower === "host") {
      hosts++;
    }
  }
  // After all lines, as before: a malformed line anywhere is the same 400 as a bad Host.
  if (hosts > 0) {
    for (const [name, value] of headers) {
      if (name === "host" && !HOST.test(value)) {
        throw new BadRequestError(400, "malformed Host header");
      }
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

/**
 * How the body of `head` is framed. Content-Length together with
 * Transfer-Encoding, a Content-Length that is not one decimal number and
 * Transfer-Encoding in HTTP/1.0 are refused with 400 (the classic smuggling
 * shapes); a coding other than plain `chunked` with 501.
 */
export function requestFraming(head: RequestHead): RequestFraming {
  let te: string | null = null;
  let cl: string | null = null;
  for (const [n, v] of head.headers) {
    if (n === "transfer-encoding") te = te === null ? v : `${te}, ${v}`;
    else if (n === "content-length") cl = cl === null ? v : `${cl}, ${v}`;
  }
  if (te !== null) {
    if (cl !== null) {
      throw new BadRequestError(400, "both Content-Length and Transfer-Encoding");
    }
    if (head.minor === 0) throw new BadRequestError(400, "Transfer-Encoding in HTTP/1.0");
    const codings = te.split(",").map((c) => trimOws(c).toLowerCase()).filter((c) => c !== "");
    if (codings.length !== 1 || codings[0] !== "chunked") {
      throw new BadRequestError(501, "unsupported transfer coding");
    }
    return { kind: "chunked" };
  }
  if (cl === null) return { kind: "none" };
  // One plain number (nearly every request): the general check below would say the same.
  if (DIGITS.test(cl)) {
    const n = Number(cl);
    return n === 0 ? { kind: "none" } : { kind: "length", length: n };
  }
  // Repeated identical values ("5, 5", or two fields) are one length.
  const values = new Set(cl.split(",").map(trimOws));
  const [only] = values;
  if (values.size !== 1 || !DIGITS.test(only)) {
    throw new BadRequestError(400, "invalid Content-Length");
  }
  const length = Number(only);
  return length === 0 ? { kind: "none" } : { kind: "length", length };
}
