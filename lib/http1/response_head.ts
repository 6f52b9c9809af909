/**
 * The head of a response the HTTP/1.1 server (server.ts) sends: status line,
 * the handler's fields byte for byte, and the framing fields the server owns
 * (`content-length` / `transfer-encoding`, `connection`, `date`).
 */
import { latin1ToBytes, latin1WithTail } from "./latin1.ts";
import { headersOrder, responsePairsOf } from "./raw.ts";

/** How the body after a head is delimited on the wire. */
export type ResponseFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** What `encodeResponseHead` needs besides the `Response`. */
export interface ResponseHeadOptions {
  /** The request's method (HEAD gets the handler's framing fields and no body). */
  method: string;
  /** The request's HTTP minor version (1.0 gets no chunked encoding). */
  minor: number;
  /** False: announce `connection: close` (the server closes after this response). */
  keepAlive: boolean;
  /** The whole body's length when it is already known, else null. */
  knownLength: number | null;
  /**
   * Bytes that follow the head on the wire in the same write (a whole
   * body): `bytes` then holds both, sparing a second buffer and a copy.
   */
  tail?: Uint8Array;
}

/** An encoded head plus what the server must do after it. */
export interface EncodedHead {
  /** The head, followed by `tail` when one was given. */
  bytes: Uint8Array;
  framing: ResponseFraming;
  /** True when the connection must close after the body. */
  close: boolean;
}

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  409: "Conflict",
  413: "Content Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** Fields the server writes itself; the handler's copies are dropped (except on HEAD/304). */
const OWN_FIELDS = new Set(["connection", "keep-alive", "transfer-encoding", "content-length"]);

/** The standard reason phrase of `status`, or "". */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}

/** The `date` field value. */
function httpDate(): string {
  return new Date().toUTCString();
}

/**
 * Encodes the head of `res`. Header values are byte strings and go out as
 * the bytes they stand for. Throws `RangeError` for a value that is not a
 * byte string (the caller answers 500 instead).
 */
export function encodeResponseHead(res: Response, opts: ResponseHeadOptions): EncodedHead {
  // Side-channel pairs (raw.ts) in the order a `Headers` would list them.
  const pairs = responsePairsOf(res);
  const fields: Iterable<[string, string]> = pairs !== undefined
    ? headersOrder(pairs)
    : res.headers;
  return encodeHead(res.status, res.statusText, fields, opts);
}

/**
 * `encodeResponseHead` for a status, reason phrase and fields (in the order
 * they go out) given as they are, with no `Response` around them.
 */
export function encodeHead(
  status: number,
  statusText: string,
  fields: Iterable<[string, string]>,
  opts: ResponseHeadOptions,
): EncodedHead {
  const noBody = opts.method === "HEAD" || status === 204 || status === 304;
  let head = `HTTP/1.1 ${status} ${statusText || reasonPhrase(status)}\r\n`;
  let hasDate = false;
  let handlerLength: number | null = null;
  for (const [name, value] of fields) {
    if (name === "content-length") {
      if (/^[0-9]{1,15}$/.test(value)) handlerLength = Number(value);
    }
    if (OWN_FIELDS.has(name)) {
      // HEAD and 304 describe the body a GET would get: keep those fields as set.
      const describes = name === "content-length" || name === "transfer-encoding";
      if (!(describes && (opts.method === "HEAD" || status === 304))) continue;
    }
    if (name === "date") hasDate = true;
    head += `${name}: ${value}\r\n`;
  }
  if (!hasDate) head += `date: ${httpDate()}\r\n`;
  let framing: ResponseFraming;
  let close = !opts.keepAlive;
  if (noBody) {
    framing = { kind: "none" };
  } else if (opts.knownLength !== null) {
    framing = { kind: "length", length: opts.knownLength };
    head += `content-length: ${opts.knownLength}\r\n`;
  } else if (handlerLength !== null) {
    framing = { kind: "length", length: handlerLength };
    head += `content-length: ${handlerLength}\r\n`;
  } else if (opts.minor === 1) {
    framing = { kind: "chunked" };
    head += "transfer-encoding: chunked\r\n";
  } else {
    // HTTP/1.0 has no chunked coding: the end of the connection ends the body.
    framing = { kind: "close" };
    close = true;
  }
  if (close) head += "connection: close\r\n";
  else if (opts.minor === 0) head += "connection: keep-alive\r\n";
  head += "\r\n";
  return { bytes: latin1WithTail(head, opts.tail ?? null), framing, close };
}

/** A complete small response the server writes on its own (400, 408, 431, 503). */
export function simpleResponse(status: number, extra: Record<string, string> = {}): Uint8Array {
  const body = `${reasonPhrase(status)}\n`;
  let head = `HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n` +
    `content-type: text/plain; charset=utf-8\r\ncontent-length: ${body.length}\r\n` +
    `connection: close\r\ndate: ${httpDate()}\r\n`;
  for (const [k, v] of Object.entries(extra)) head += `${k}: ${v}\r\n`;
  return latin1ToBytes(`${head}\r\n${body}`);
}
