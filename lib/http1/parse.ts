/**
 * The byte-level half of the channel HTTP/1.1 client (channel_http.ts):
 * finding and parsing a response head, the request head, and a streaming
 * `Transfer-Encoding: chunked` decoder. Pure functions over `Uint8Array`s, so
 * the framing rules are testable without any stream.
 */

/** Raised for a malformed or truncated response. A `TypeError`, as fetch's network errors are. */
export class ChannelHttpError extends TypeError {
  /** `message` carries no URL or secret. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ChannelHttpError";
  }
}

/** Largest response head accepted; real engines send well under 1 KiB. */
export const MAX_HEAD_BYTES = 64 * 1024;

const CR = 13;
const LF = 10;

/**
 * Index just past the `\r\n\r\n` that ends a head, searching from `from`, or
 * -1. Scans bytes rather than decoding text: the head is usually one read.
 */
export function findHeadEnd(buf: Uint8Array, from: number): number {
  for (let i = Math.max(0, from); i + 3 < buf.length; i++) {
    if (buf[i + 3] !== LF) {
      // The 4th byte must be LF; skip ahead when it is not even CR or LF.
      const b = buf[i + 3];
      if (b !== CR) i += 3;
      continue;
    }
    if (buf[i] === CR && buf[i + 1] === LF && buf[i + 2] === CR) return i + 4;
  }
  return -1;
}

/** A parsed response head. */
export interface ResponseHead {
  status: number;
  statusText: string;
  headers: Headers;
  /** `HTTP/1.1` (and not `Connection: close`): the connection may be reused. */
  keepAlive: boolean;
}

const latin1 = new TextDecoder("latin1");
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5][0-9]{2})(?: (.*))?$/;

/** Parses a head (status line + fields, without the final CRLFCRLF); throws `ChannelHttpError`. */
export function parseHead(bytes: Uint8Array): ResponseHead {
  const lines = latin1.decode(bytes).split("\r\n");
  const m = STATUS_LINE.exec(lines[0]);
  if (!m) {
    throw new ChannelHttpError(`malformed status line: ${JSON.stringify(lines[0].slice(0, 80))}`);
  }
  const headers = new Headers();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new ChannelHttpError("malformed header line");
    try {
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    } catch (err) {
      throw new ChannelHttpError("invalid header in response", { cause: err });
    }
  }
  const connection = headers.get("connection")?.toLowerCase() ?? "";
  const keepAlive = m[1] === "1" && !/(^|,)\s*close\s*(,|$)/.test(connection);
  return { status: Number(m[2]), statusText: m[3] ?? "", headers, keepAlive };
}

/** How a response body is delimited (RFC 9112 §6.3). */
export type Framing =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** The body framing of a response to `method`; throws on a contradictory Content-Length. */
export function framingOf(method: string, head: ResponseHead): Framing {
  const s = head.status;
  if (method === "HEAD" || s === 204 || s === 304 || s < 200) return { kind: "none" };
  const te = head.headers.get("transfer-encoding");
  if (te !== null) {
    // Chunked must be the last coding; anything else is read until close.
    return /(^|,)\s*chunked\s*$/i.test(te) ? { kind: "chunked" } : { kind: "close" };
  }
  const cl = head.headers.get("content-length");
  if (cl === null) return { kind: "close" };
  // Repeated identical values arrive combined as "n, n".
  const values = new Set(cl.split(",").map((v) => v.trim()));
  const [only] = values;
  if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only)) {
    throw new ChannelHttpError("invalid Content-Length in response");
  }
  return { kind: "length", length: Number(only) };
}

const encoder = new TextEncoder();

/**
 * The request as one buffer (head + body) so it leaves in one channel write,
 * hence one SSH packet for a typical chat request. `headers` already went
 * through the relay's rewriting; `Host` is added when absent, and
 * `Content-Length` always comes from the body actually sent.
 */
export function encodeRequest(
  method: string,
  path: string,
  headers: Headers,
  body: Uint8Array | null,
  host: string,
): Uint8Array {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  if (!headers.has("host")) head += `host: ${host}\r\n`;
  for (const [name, value] of headers) {
    if (name === "content-length" || name === "transfer-encoding" || name === "connection") {
      continue;
    }
    head += `${name}: ${value}\r\n`;
  }
  // fetch sends a zero length for bodyless POST-like requests; so do we.
  const needsLength = body !== null || !(method === "GET" || method === "HEAD");
  if (needsLength) head += `content-length: ${body?.byteLength ?? 0}\r\n`;
  head += "\r\n";
  if (!body || body.byteLength === 0) return encoder.encode(head);
  const out = new Uint8Array(head.length * 3 + body.byteLength);
  const { written } = encoder.encodeInto(head, out);
  out.set(body, written);
  return out.subarray(0, written + body.byteLength);
}

/** Decoder states (plain numbers: a hot switch). */
const ChunkState = { Size: 0, Data: 1, DataCr: 2, DataLf: 3, Trailer: 4, Done: 5 } as const;

/** Longest chunk-size or trailer line accepted. */
const MAX_LINE = 8 * 1024;

/**
 * A streaming `Transfer-Encoding: chunked` decoder. `push()` takes bytes as
 * they arrive, split anywhere, and hands out the payload as views into the
 * input (no copying); trailers are read and ignored.
 */
export class ChunkedDecoder {
  #state: number = ChunkState.Size;
  #remaining = 0;
  // A size or trailer line that straddles reads (rare: lines are tiny).
  #line = "";
  /** Bytes after the terminating chunk, set once done (non-empty: protocol error for reuse). */
  rest: Uint8Array = new Uint8Array(0);

  /** True once the last chunk and its trailers were read. */
  get done(): boolean {
    return this.#state === ChunkState.Done;
  }

  /** Decodes `buf`, calling `emit` for each payload slice; throws `ChannelHttpError` on bad framing. */
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
          if (buf[i] === CR) {
            this.#state = ChunkState.DataLf;
            i++;
            break;
          }
          this.#state = ChunkState.DataLf; // tolerate a bare LF
          break;
        case ChunkState.DataLf:
          if (buf[i++] !== LF) throw new ChannelHttpError("malformed chunked body");
          this.#state = ChunkState.Size;
          break;
        case ChunkState.Size:
        case ChunkState.Trailer: {
          const lf = buf.indexOf(LF, i);
          const end = lf === -1 ? n : lf;
          this.#line += latin1.decode(buf.subarray(i, end));
          if (this.#line.length > MAX_LINE) throw new ChannelHttpError("chunk line too long");
          i = end;
          if (lf === -1) break;
          i++; // past LF
          const line = this.#line.endsWith("\r") ? this.#line.slice(0, -1) : this.#line;
          this.#line = "";
          if (this.#state === ChunkState.Trailer) {
            if (line === "") {
              this.#state = ChunkState.Done;
              this.rest = buf.subarray(i);
              return;
            }
            break; // a trailer field: ignored
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
  const semi = line.indexOf(";"); // chunk extensions are ignored
  const hex = (semi === -1 ? line : line.slice(0, semi)).trim();
  if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) throw new ChannelHttpError("malformed chunk size");
  return parseInt(hex, 16);
}
