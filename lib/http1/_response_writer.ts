/**
 * Helpers of the HTTP/1.1 server's response writer (_server_conn.ts):
 * framing body chunks for a response's framing, and telling a body chunk
 * that is ready now from one still waiting on I/O.
 */
import { latin1ToBytes } from "./latin1.ts";
import type { ResponseFraming } from "./response_head.ts";

const CRLF = latin1ToBytes("\r\n");
const LAST_CHUNK = latin1ToBytes("0\r\n\r\n");
/** What `settledSoon` returns for a promise still pending. */
export const PENDING: unique symbol = Symbol("pending");

/** Frames body chunks for one response's framing and checks a declared length. */
export class Framer {
  #framing: ResponseFraming;
  #sent = 0;
  /** The body went past its declared length (the extra bytes were not sent). */
  overflow = false;

  constructor(framing: ResponseFraming) {
    this.#framing = framing;
  }

  /** True when what was sent matches the framing (a declared length was met). */
  get complete(): boolean {
    return this.#framing.kind !== "length" || this.#sent === this.#framing.length;
  }

  /** The wire bytes for `chunks`, plus the terminator when `last`. */
  frame(chunks: Uint8Array[], last: boolean): Uint8Array[] {
    const out: Uint8Array[] = [];
    const f = this.#framing;
    for (const c of chunks) {
      if (c.byteLength === 0) continue;
      if (f.kind === "chunked") {
        out.push(latin1ToBytes(`${c.byteLength.toString(16)}\r\n`), c, CRLF);
      } else if (f.kind === "length") {
        const room = f.length - this.#sent;
        if (c.byteLength > room) this.overflow = true;
        if (room > 0) out.push(c.byteLength > room ? c.subarray(0, room) : c);
        this.#sent += Math.min(room, c.byteLength);
      } else if (f.kind === "close") {
        out.push(c);
      }
    }
    if (last && f.kind === "chunked") out.push(LAST_CHUNK);
    return out;
  }
}

/**
 * `p`'s value if it settles within a few microtask turns, else PENDING. A
 * stream whose chunks are already queued answers at once, so a small
 * response leaves in one write; a stream waiting on I/O (an SSE token)
 * does not, and what is ready is flushed first.
 */
export async function settledSoon<T>(p: Promise<T>): Promise<T | typeof PENDING> {
  let value: T | typeof PENDING = PENDING;
  let failed = false;
  let error: unknown;
  p.then((v) => (value = v), (e) => {
    failed = true;
    error = e;
  });
  for (let i = 0; i < 8 && value === PENDING && !failed; i++) await null;
  if (failed) throw error;
  return value;
}
