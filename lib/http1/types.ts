/**
 * The shapes of one HTTP/1.1 exchange with an engine, shared by the channel
 * client (client.ts), the tunnel that owns it, and the relay. Header values
 * are *byte strings*: each UTF-16 code unit is one byte (0–255) exactly as it
 * travels on the wire, so obs-text and raw UTF-8 pass through untouched.
 */
import type { AbortView } from "./request_abort.ts";
import type { BodySource } from "./body_source.ts";

/** Header fields in wire order; names lower-case, values byte strings. */
export type HeaderPairs = [name: string, value: string][];

/** One request to an engine. */
export interface Http1Request {
  method: string;
  /** The request target exactly as sent on the request line (path and query). */
  target: string;
  /** Fields to send; `content-length`, `transfer-encoding` and `connection` are the client's own. */
  headers: HeaderPairs;
  /** The whole body (the relay buffers it), or null for none. */
  body: Uint8Array | null;
  /** Aborting destroys the channel, so the engine sees the connection close at once. */
  signal?: AbortSignal;
  /**
   * Like `signal`, without an `AbortSignal` and its listeners (a
   * `RequestAbort`: a plain object): the relay's per-request cancellation,
   * on the hot path. With both set, either one aborts.
   */
  abort?: AbortView;
  /**
   * Who the request is for (e.g. one client connection). An idle channel is
   * reused only for the same affinity, so bytes an engine writes after a
   * response can at worst reach the same client, never another one.
   */
  affinity?: string;
}

/** The final (non-1xx) response of an exchange. */
export interface Http1Response {
  status: number;
  /** Reason phrase as a byte string (may be empty). */
  statusText: string;
  /**
   * Fields in wire order (names lower-case, values byte strings, obs-fold
   * joined). `content-length` is kept only when it delimits the body that
   * `body` yields, or on answers that have no body (HEAD, 204, 304).
   */
  headers: HeaderPairs;
  /**
   * The body: the whole of it as bytes when it had already arrived with the
   * head (its channel is then already released), else a stream read from
   * the channel only as it is consumed; null when the answer has none.
   */
  body: ReadableStream<Uint8Array> | Uint8Array<ArrayBuffer> | null;
  /**
   * When `body` is a stream: the same body without one (body_source.ts),
   * for a reader that never touches `body`. Read one or the other.
   */
  source?: BodySource;
}

/** Anything that sends `Http1Request`s: the channel client, a tunnel, a backend, a test double. */
export interface HttpSender {
  request(req: Http1Request): Promise<Http1Response>;
}

/**
 * A failed exchange. `sent` is false only when the request provably never
 * reached the engine (no channel could be opened, or the channel was closed
 * before a byte was written): only then may the relay replay it elsewhere.
 */
export class Http1Error extends Error {
  /** True once any request byte may have reached the engine. */
  readonly sent: boolean;

  /** `message` carries no URL or secret. */
  constructor(message: string, opts: { sent: boolean; cause?: unknown }) {
    super(message, { cause: opts.cause });
    this.name = "Http1Error";
    this.sent = opts.sent;
  }
}

/** The first value of field `name` (lower-case), or null. */
export function headerValue(headers: HeaderPairs, name: string): string | null {
  for (const [n, v] of headers) if (n === name) return v;
  return null;
}

/**
 * Reads a whole (small) body as bytes, refusing more than `limit` bytes; for
 * the proxy's own exchanges (health checks, model lists, abort), never for
 * relayed traffic, which streams.
 */
export async function readAll(res: Http1Response, limit: number): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array(0);
  if (res.body instanceof Uint8Array) {
    if (res.body.byteLength > limit) {
      throw new Http1Error(`response body over ${limit} bytes`, { sent: true });
    }
    return res.body;
  }
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) throw new Http1Error(`response body over ${limit} bytes`, { sent: true });
      chunks.push(value);
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
