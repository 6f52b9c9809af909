/**
 * A response body read chunk by chunk without a `ReadableStream`: what the
 * channel client, the relay and our server pass between them while an
 * answer streams.
 *
 * A streamed answer (an SSE token stream) went through two streams, the
 * engine's body and the relay's, each read costing a read request, a
 * promise, a `pull` through WebIDL's callback machinery and a result
 * object, and then through up to eight microtask turns in the server to
 * learn that nothing more was ready (`settledSoon`). A source is read with
 * one promise per chunk, and says synchronously what is ready now
 * (`readNow`), so batching needs no turns. Every source also stands behind
 * an ordinary stream (`streamOfSource`) for any reader that is not ours
 * (`Deno.serve`, tests, a handler that reads `res.body`).
 */

/** A pull-based body. Reads never overlap: one `read()` at a time, `readNow()` only between reads. */
export interface BodySource {
  /** The next chunk, or null at the end. Rejects when the body failed; then and after the end, later reads do the same. */
  read(): Promise<Uint8Array | null>;
  /** A chunk that is here now, null at a known end, or undefined when the next one must be waited for (or the body failed: `read()` says how). */
  readNow(): Uint8Array | null | undefined;
  /** The reader wants no more: release what feeds the body. A pending `read()` resolves with null. */
  cancel(reason?: unknown): void;
}

/**
 * An ordinary stream over `src` (no buffer: a chunk is read only when the
 * stream is read). Whoever reads the stream must not read `src` too.
 */
export function streamOfSource(src: BodySource): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const chunk = await src.read();
      if (chunk === null) controller.close();
      else controller.enqueue(chunk);
    },
    cancel(reason) {
      src.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
