/**
 * The byte-level half of the HTTP/1.1 client (client.ts), per RFC 9112:
 * finding and parsing a response head, deciding how its body is framed,
 * encoding the request, and a streaming `Transfer-Encoding: chunked`
 * decoder. Pure functions over `Uint8Array`s, so every framing rule is
 * testable without a stream.
 */
import { bytesToLatin1, latin1WithTail } from "./latin1.ts";
import { type HeaderPairs, Http1Error } from "./types.ts";

/** Largest response head accepted; real engines send well under 1 KiB. */
export const MAX_HEAD_BYTES = 64 * 1024;

/**
 * Most header fields accepted in one response head (real engines send a
 * dozen). Deno's `Headers` iterates in time quadratic in the number of
 * distinct names (6,000 names: 5 s, 12,000: 20 s of blocked event loop), and
 * 64 KiB holds over 10,000 tiny fields, so without this bound one engine
 * response could stall every client of the proxy. hyper's client stops at 100.
 */
export const MAX_HEADER_FIELDS = 256;

const CR = 13;
const LF = 10;

/**
 * Index just past the empty line that ends a head, searching from `from`, or
 * -1. Lines may end in CRLF or a bare LF (RFC 9112 §2.2 lets a recipient
 * accept both), so both `\n\n` and `\n\r\n` close a head.
 */
export function findHeadEnd(buf: Uint8Array, from: number): number {
  // A plain loop: a head is a few hundred bytes in a handful of lines, and
  // a `Uint8Array.indexOf` call per line cost five times the whole scan.
  const n = buf.length;
  for (let i = Math.max(0, from); i < n; i++) {
    if (buf[i] !== LF) continue;
    const next = buf[i + 1];
    if (next === LF) return i + 2;
    if (next === CR && buf[i + 2] === LF) return i + 3;
  }
  return -1;
}

/** Where a caller should resume `findHeadEnd` after appending bytes to `buf`. */
export function resumeFrom(length: number): number {
  return Math.max(0, length - 3);
}

/** A parsed response head. */
export interface ResponseHead {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: number;
  status: number;
  /** Reason phrase as a byte string. */
  statusText: string;
  /** Fields in order: names lower-case, values byte strings with obs-fold joined by a space. */
  headers: HeaderPairs;
  /** HTTP/1.1 without `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`. */
  keepAlive: boolean;
  /** Seconds from `Keep-Alive: timeout=N`, or null. */
  keepAliveTimeout: number | null;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const CL_DIGITS = /^[0-9]{1,15}$/;

/** Strips leading and trailing SP / HTAB only (String.prototype.trim would also eat 0xa0). */
export function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === 0x20 || s.charCodeAt(a) === 0x09)) a++;
  while (b > a && (s.charCodeAt(b - 1) === 0x20 || s.charCodeAt(b - 1) === 0x09)) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * Parses a head (status line and fields, without the terminating empty
 * line). Throws `Http1Error` (sent) for a head that cannot be read safely: a
 * bad status line, a line without a colon, a field name that is not a token,
 * or a fold with nothing before it.
 */
export function parseHead(bytes: Uint8Array): ResponseHead {
  // One pass over the text by index (as parseRequestHead does): no array of
  // lines, no per-line copies, no regex run per line; every answer from an
  // engine goes through here.
  const text = bytesToLatin1(bytes);
  const n = text.length;
  let nl = text.indexOf("\n");
  let end = nl === -1 ? n : nl;
  if (end > 0 && text.charCodeAt(end - 1) === CR) end--;
  if (!isStatusLine(text, end)) {
    throw new Http1Error(
      `malformed status line from the engine: ${JSON.stringify(text.slice(0, end).slice(0, 80))}`,
      { sent: true },
    );
  }
  const minor = text.charCodeAt(7) - 0x30;
  const status = (text.charCodeAt(9) - 0x30) * 100 + (text.charCodeAt(10) - 0x30) * 10 +
    text.charCodeAt(11) - 0x30;
  const statusText = end > 12 ? text.slice(13, end) : "";
  const headers: HeaderPairs = [];
  let at = nl + 1;
  while (nl !== -1) {
    const s = at;
    nl = text.indexOf("\n", s);
    let e = nl === -1 ? n : nl;
    at = e + 1;
    if (e > s && text.charCodeAt(e - 1) === CR) e--;
    if (e === s) continue;
    const c0 = text.charCodeAt(s);
    if (c0 === 0x20 || c0 === 0x09) {
      // obs-fold (RFC 9112 §5.2): a recipient replaces it with a space.
      const last = headers.at(-1);
      if (!last) {
        throw new Http1Error("malformed response head: fold before any field", { sent: true });
      }
      const more = trimmedSlice(text, s, e);
      last[1] = last[1] === "" ? more : more === "" ? last[1] : `${last[1]} ${more}`;
      continue;
    }
    if (headers.length >= MAX_HEADER_FIELDS) {
      throw new Http1Error(`response head with over ${MAX_HEADER_FIELDS} fields`, { sent: true });
    }
    const colon = text.indexOf(":", s);
    if (colon <= s || colon >= e) {
      throw new Http1Error("malformed response header line", { sent: true });
    }
    // Whitespace before the colon is not allowed; a proxy removes it (§5.1).
    let ne = colon;
    while (ne > s && (text.charCodeAt(ne - 1) === 0x20 || text.charCodeAt(ne - 1) === 0x09)) ne--;
    // Token check and "any upper case?" in one pass: engines send lower-case
    // names, which then need no lowercased copy.
    let upper = false;
    for (let k = s; k < ne; k++) {
      const c = text.charCodeAt(k);
      const kind = BYTE_CLASS[c];
      if ((kind & TCHAR) === 0) {
        throw new Http1Error("malformed response header name", { sent: true });
      }
      if ((kind & UPPER) !== 0) upper = true;
    }
    const name = upper ? text.slice(s, ne).toLowerCase() : text.slice(s, ne);
    headers.push([name, trimmedSlice(text, colon + 1, e)]);
  }
  let close = false;
  let keepAliveToken = false;
  let keepAliveTimeout: number | null = null;
  for (const [n, v] of headers) {
    if (n === "connection") {
      const o = connectionOptions(v);
      close ||= o.close;
      keepAliveToken ||= o.keepAlive;
    } else if (n === "keep-alive") {
      const t = /(?:^|[,;\s])timeout\s*=\s*"?([0-9]{1,6})/i.exec(v);
      if (t) keepAliveTimeout = Number(t[1]);
    }
  }
  return {
    minor,
    status,
    statusText,
    headers,
    keepAlive: !close && (minor === 1 || keepAliveToken),
    keepAliveTimeout,
  };
}

/**
 * Whether `text.slice(0, end)` matches
 * `^HTTP/1\.[01] [1-5][0-9]{2}(?:[ \t].*)?$`, where `.` excludes CR (no LF
 * can occur before `end`).
 */
function isStatusLine(text: string, end: number): boolean {
  if (end < 12 || !text.startsWith("HTTP/1.")) return false;
  const minor = text.charCodeAt(7);
  if ((minor !== 0x30 && minor !== 0x31) || text.charCodeAt(8) !== 0x20) return false;
  const d0 = text.charCodeAt(9);
  const d1 = text.charCodeAt(10);
  const d2 = text.charCodeAt(11);
  if (d0 < 0x31 || d0 > 0x35 || d1 < 0x30 || d1 > 0x39 || d2 < 0x30 || d2 > 0x39) return false;
  if (end === 12) return true;
  const sep = text.charCodeAt(12);
  if (sep !== 0x20 && sep !== 0x09) return false;
  for (let k = 13; k < end; k++) if (text.charCodeAt(k) === CR) return false;
  return true;
}

/** `trimOws(text.slice(from, to))` with one slice. */
export function trimmedSlice(text: string, from: number, to: number): string {
  while (from < to && (text.charCodeAt(from) === 0x20 || text.charCodeAt(from) === 0x09)) from++;
  while (to > from && (text.charCodeAt(to - 1) === 0x20 || text.charCodeAt(to - 1) === 0x09)) to--;
  return text.slice(from, to);
}

/**
 * One entry per byte: what it may be in a head. The head parsers (requests
 * in request_head.ts, responses here) check names, values and the request
 * line with one loop per piece over this table rather than a regex, a slice
 * and a trim each (the checks are those of the regexes the reference
 * parsers in tests/http1/request_head_test.ts and _before/parse_head.ts use).
 */
export const BYTE_CLASS = new Uint8Array(256);
const TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** tchar (RFC 9110 §5.6.2): method and field-name bytes. */
export const TCHAR = 1;
/** An upper-case letter: a name holding one needs `toLowerCase`. */
export const UPPER = 2;
/** A byte not allowed in a field value: control bytes except HTAB, and DEL. */
export const CTL = 4;
/** A byte allowed in a request target: visible ASCII and obs-text. */
export const VCHAR = 8;
for (let c = 0; c < 256; c++) {
  let k = 0;
  if (TCHARS.includes(String.fromCharCode(c))) k |= TCHAR;
  if (c >= 0x41 && c <= 0x5a) k |= UPPER;
  if ((c < 0x20 && c !== 0x09) || c === 0x7f) k |= CTL;
  if ((c >= 0x21 && c <= 0x7e) || c >= 0x80) k |= VCHAR;
  BYTE_CLASS[c] = k;
}

/** The `close` and `keep-alive` options of one `Connection` field value (requests and responses). */
export function connectionOptions(value: string): { close: boolean; keepAlive: boolean } {
  let close = false;
  let keepAlive = false;
  for (const t of value.toLowerCase().split(",")) {
    const opt = trimOws(t);
    if (opt === "close") close = true;
    else if (opt === "keep-alive") keepAlive = true;
  }
  return { close, keepAlive };
}

/** How a response body is delimited (RFC 9112 §6.3). */
export type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/**
 * The body framing of a response to `method`. Transfer-Encoding wins over
 * Content-Length; a response whose last coding is not chunked is read until
 * close; differing Content-Length values are a protocol error.
 */
export function framingOf(method: string, head: ResponseHead): Framing {
  const s = head.status;
  // 205 has no content either (RFC 9110 §15.3.6); what an engine sends after it is discarded.
  if (method === "HEAD" || s < 200 || s === 204 || s === 205 || s === 304) return { kind: "none" };
  let te: string | null = null;
  let cl: string | null = null;
  for (const [n, v] of head.headers) {
    if (n === "transfer-encoding") te = te === null ? v : `${te}, ${v}`;
    else if (n === "content-length") cl = cl === null ? v : `${cl}, ${v}`;
  }
  // A 2xx to CONNECT turns the connection into a tunnel (RFC 9112 §6.3 rule
  // 2): nothing after the head is an HTTP message any more.
  if (method === "CONNECT" && s < 300) {
    throw new Http1Error("engine opened a tunnel for CONNECT", { sent: true });
  }
  if (te !== null) {
    const codings = te.split(",").map((c) => trimOws(c).toLowerCase()).filter((c) => c !== "");
    // chunked applied twice cannot be framed once (§6.1): a protocol error.
    if (codings.filter((c) => c === "chunked").length > 1) {
      throw new Http1Error("chunked applied more than once by the engine", { sent: true });
    }
    return codings.at(-1) === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  if (cl === null) return { kind: "close" };
  // One plain number (nearly every answer): the general check below would
  // say the same, without a split, a Set and a regex over its one value.
  if (CL_DIGITS.test(cl)) return { kind: "length", length: Number(cl) };
  // Repeated identical values ("5, 5", or two fields) are one length.
  const values = new Set(cl.split(",").map(trimOws));
  const [only] = values;
  if (values.size !== 1 || !CL_DIGITS.test(only)) {
    throw new Http1Error("conflicting or invalid Content-Length from the engine", { sent: true });
  }
  return { kind: "length", length: Number(only) };
}

/**
 * True when a response's framing, although readable, is ambiguous enough
 * that the connection must not carry another message (RFC 9112 §6.1, §6.3):
 * Transfer-Encoding together with Content-Length (the classic
 * request-smuggling / response-splitting shape), or Transfer-Encoding in an
 * HTTP/1.0 message. Another parser on the path may have framed it
 * differently, so nothing after it can be trusted to start a new answer.
 */
export function closeAfter(head: ResponseHead): boolean {
  let te = false;
  let cl = false;
  for (const [n] of head.headers) {
    if (n === "transfer-encoding") te = true;
    else if (n === "content-length") cl = true;
  }
  return te && (cl || head.minor === 0);
}

/** Fields the client frames itself; callers' copies are ignored. */
const OWN_FIELDS = new Set(["content-length", "transfer-encoding", "connection", "keep-alive"]);
/** A byte string that would split the request head or is not a byte string. */
// deno-lint-ignore no-control-regex -- matching control bytes is the point
const UNSAFE_TEXT = /[\r\n\0]|[^\x00-\xff]/;
// deno-lint-ignore no-control-regex -- as above
const UNSAFE_TARGET = /[\s\0]|[^\x00-\xff]/;

/**
 * The request as one buffer (head and body), so a typical chat request
 * leaves in one channel write, hence one SSH packet. Header values go out
 * byte for byte; `Host` is added when absent; `Content-Length` always comes
 * from the body actually sent; `upgrade` adds `Connection: upgrade` (the
 * caller passes the `Upgrade` field). Throws `Http1Error` (not sent) for a
 * target or field that would break the head.
 */
export function encodeRequest(
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
  // `Host` goes first when the caller has none (the relay never passes the
  // client's): known before the loop, so the head is built in order, not
  // searched and copied again to put it there.
  let hasHost = false;
  for (let i = 0; i < headers.length; i++) {
    if (headers[i][0] === "host") {
      hasHost = true;
      break;
    }
  }
  let head = hasHost
    ? `${method} ${target} HTTP/1.1\r\n`
    : `${method} ${target} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of headers) {
    if (OWN_FIELDS.has(name)) continue;
    if (!TOKEN.test(name) || UNSAFE_TEXT.test(value)) {
      throw new Http1Error(`invalid request header ${JSON.stringify(name)}`, { sent: false });
    }
    head += `${name}: ${value}\r\n`;
  }
  if (upgrade) head += "connection: upgrade\r\n";
  // Bodyless POST-like requests carry an explicit zero length, as fetch does.
  const needsLength = body !== null || !(method === "GET" || method === "HEAD");
  if (needsLength) head += `content-length: ${body?.byteLength ?? 0}\r\n`;
  head += "\r\n";
  return latin1WithTail(head, body);
}

/** Decoder states (plain numbers: a hot switch). */
const ChunkState = { Size: 0, Data: 1, DataCr: 2, DataLf: 3, Trailer: 4, Done: 5 } as const;

/** Longest chunk-size or trailer line accepted. */
const MAX_LINE = 8 * 1024;

/**
 * A streaming `Transfer-Encoding: chunked` decoder. `push()` takes bytes as
 * they arrive, split anywhere, and hands out the payload as views into the
 * input (no copying). Chunk extensions and trailer fields are read and
 * dropped (Deno.serve cannot send trailers on).
 */
export class ChunkedDecoder {
  #state: number = ChunkState.Size;
  #remaining = 0;
  // A size or trailer line that straddles reads (rare: lines are tiny).
  #line = "";
  // Trailer bytes so far: bounded like a head, so an engine cannot hold a
  // response open forever with a trailer section the client never sees.
  #trailerBytes = 0;
  /** Bytes after the terminating chunk, set once done (non-empty: the channel cannot be reused). */
  rest: Uint8Array = new Uint8Array(0);

  /** True once the last chunk and its trailers were read. */
  get done(): boolean {
    return this.#state === ChunkState.Done;
  }

  /** Decodes `buf`, calling `emit` for each payload slice; throws `Http1Error` on bad framing. */
  push(buf: Uint8Array, emit: (data: Uint8Array) => void): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      switch (this.#state) {
        case ChunkState.Data: {
          const take = Math.min(this.#remaining, n - i);
          emit(buf.subarray(i, i + take));
          i += take;
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = ChunkState.DataCr;
          break;
        }
        case ChunkState.DataCr:
          // A bare LF after the data is tolerated, like a bare LF elsewhere.
          if (buf[i] === CR) i++;
          this.#state = ChunkState.DataLf;
          break;
        case ChunkState.DataLf:
          if (buf[i++] !== LF) throw new Http1Error("malformed chunked body", { sent: true });
          this.#state = ChunkState.Size;
          break;
        case ChunkState.Size:
        case ChunkState.Trailer: {
          const lf = buf.indexOf(LF, i);
          const end = lf === -1 ? n : lf;
          this.#line += bytesToLatin1(buf.subarray(i, end));
          if (this.#line.length > MAX_LINE) {
            throw new Http1Error("chunk line too long", { sent: true });
          }
          i = end;
          if (lf === -1) break;
          i++; // past LF
          const line = this.#line.endsWith("\r") ? this.#line.slice(0, -1) : this.#line;
          this.#line = "";
          if (this.#state === ChunkState.Trailer) {
            this.#trailerBytes += line.length + 2;
            if (this.#trailerBytes > MAX_HEAD_BYTES) {
              throw new Http1Error("trailer section too long", { sent: true });
            }
            if (line === "") {
              this.#state = ChunkState.Done;
              this.rest = buf.subarray(i);
              return;
            }
            break; // a trailer field: dropped
          }
          const size = parseChunkSize(line);
          if (size === 0) this.#state = ChunkState.Trailer;
          else {
            this.#remaining = size;
            this.#state = ChunkState.Data;
          }
          break;
        }
        case ChunkState.Done:
          this.rest = buf.subarray(i);
          return;
      }
    }
  }
}

function parseChunkSize(line: string): number {
  const semi = line.indexOf(";"); // chunk extensions are dropped
  // Leading zeros are legal (1*HEXDIG); only the significant digits are
  // bounded, so "0000000000000005" is 5 and "ffffffffffffffff" is refused.
  const hex = trimOws(semi === -1 ? line : line.slice(0, semi)).replace(/^0+(?=[0-9a-fA-F])/, "");
  if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) {
    throw new Http1Error("malformed chunk size", { sent: true });
  }
  return parseInt(hex, 16);
}
