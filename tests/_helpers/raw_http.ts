/**
 * Raw TCP clients for tests of the HTTP/1.1 server: send exact bytes, read
 * exact bytes, see when the server closes. Every read is bounded in time.
 */
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";

/** A raw client connection with a byte-string view of what arrived. */
export class RawClient {
  readonly conn: Deno.TcpConn;
  /** Everything received so far, as a byte string. */
  received = "";
  /** True once the server closed (EOF or reset). */
  closed = false;
  #reading: Promise<void> | null = null;

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  /** Connects to 127.0.0.1:`port`. */
  static async open(port: number): Promise<RawClient> {
    return new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes a byte string (or bytes) completely. */
  async send(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? latin1ToBytes(data) : data;
    let at = 0;
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  #readOnce(): Promise<void> {
    this.#reading ??= (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        const n = await this.conn.read(buf);
        if (n === null) this.closed = true;
        else this.received += bytesToLatin1(buf.subarray(0, n));
      } catch {
        this.closed = true;
      }
    })().finally(() => (this.#reading = null));
    return this.#reading;
  }

  /** Reads until `done(received)` holds or the server closes; throws after `timeoutMs`. */
  async until(done: (received: string) => boolean, timeoutMs = 5_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!done(this.received) && !this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out; received so far: ${JSON.stringify(this.received)}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#readOnce(),
        new Promise<void>((r) => (timer = setTimeout(r, left))),
      ]);
      clearTimeout(timer);
    }
    return this.received;
  }

  /** Reads until the server closes; throws after `timeoutMs`. */
  async untilClosed(timeoutMs = 5_000): Promise<string> {
    await this.until(() => false, timeoutMs).catch((err) => {
      if (!this.closed) throw err;
    });
    if (!this.closed) throw new Error("server did not close");
    return this.received;
  }

  /** Closes our side (idempotent). */
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

/** Number of complete `HTTP/1.1 NNN` status lines in `s`. */
export function countResponses(s: string): number {
  return s.match(/HTTP\/1\.1 [1-5]\d\d /g)?.filter((l) => !l.includes(" 100 ")).length ?? 0;
}
