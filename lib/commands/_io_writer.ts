/** Adapts a CliIo text sink to the byte writer loggers take. */
import type { ByteWriter } from "../ui/log.ts";

const decoder = new TextDecoder();

/** A ByteWriter that forwards to `sink` (e.g. `io.err`). */
export function textWriter(sink: (text: string) => void): ByteWriter {
  return {
    write(p: Uint8Array): number {
      sink(decoder.decode(p));
      return p.length;
    },
  };
}
