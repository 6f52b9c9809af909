/**
 * WebSocket (any protocol upgrade) through the relay: after the engine's
 * `101`, the listener hands over the client's socket and the two raw byte
 * streams are joined until either side ends. Frames are never parsed.
 */
import type { HeaderPairs } from "../http1/types.ts";
import { type Upgraded, upgradeResponse } from "../http1/upgrade.ts";
import { INSTANCE_HEADER, isEmittableValue } from "./headers.ts";

/**
 * The response that makes the server switch protocols: the engine's 101
 * head (its `Upgrade`, `Connection` and `Sec-WebSocket-*` fields, plus
 * `X-VastProxy-Instance`), then the two raw byte streams joined until
 * either side closes. Closing one side closes the other at once, so an
 * engine sees a client leave within the SSH round trip.
 */
export function switchProtocols(
  instance: number,
  engine: Upgraded,
  onHeaderDropped: (name: string) => void,
  onClosed: (bytes: number) => void,
): Response {
  const headers: HeaderPairs = [];
  for (const [name, value] of engine.headers) {
    if (name === INSTANCE_HEADER) continue;
    if (!isEmittableValue(value)) {
      onHeaderDropped(name);
      continue;
    }
    headers.push([name, value]);
  }
  headers.push([INSTANCE_HEADER, String(instance)]);
  return upgradeResponse({
    statusText: engine.statusText,
    headers,
    onAbandon: () => {
      engine.close();
      onClosed(0);
    },
    onUpgrade: ({ conn, initial, inFlight }) =>
      void joinStreams(conn, [initial, inFlight], engine).then(onClosed),
  });
}

/** Pipes client ↔ engine until either ends; resolves with the bytes relayed both ways. */
async function joinStreams(
  client: Deno.Conn,
  /** What the server already read or is reading, in order, before `client.read`. */
  initial: Promise<Uint8Array>[],
  engine: Upgraded,
): Promise<number> {
  let bytes = 0;
  let closed = false;
  const closeBoth = () => {
    if (closed) return;
    closed = true;
    engine.close();
    try {
      client.close();
    } catch { /* already closed */ }
  };
  const down = (async () => {
    for (let b = await engine.read(); b !== null && !closed; b = await engine.read()) {
      bytes += b.byteLength;
      for (let at = 0; at < b.byteLength;) at += await client.write(b.subarray(at));
    }
  })().catch(() => {}).finally(closeBoth);
  const up = (async () => {
    for (const part of initial) {
      const early = await part;
      if (early.byteLength > 0) {
        bytes += early.byteLength;
        await engine.write(early);
      }
    }
    const buf = new Uint8Array(64 * 1024);
    while (!closed) {
      const n = await client.read(buf);
      if (n === null) break;
      bytes += n;
      await engine.write(buf.slice(0, n));
    }
  })().catch(() => {}).finally(closeBoth);
  await Promise.all([down, up]);
  return bytes;
}
