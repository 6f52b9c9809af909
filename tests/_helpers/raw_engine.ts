/**
 * A raw-socket engine double: reads each request head (and its body by
 * Content-Length) and answers with scripted raw bytes, so tests can send
 * responses no real server would (conflicting lengths, bare LF, stray bytes
 * after a response). Counts requests per target and connections accepted.
 */
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";

/** One request as the engine read it; header values and `head` are byte strings. */
export interface RawRequest {
  method: string;
  target: string;
  headers: [string, string][];
  /** The whole head, byte for byte (latin1 string). */
  head: string;
  body: Uint8Array;
  /** 0-based index of the request on the engine (all connections). */
  index: number;
}

/** A scripted answer: bytes, or parts written one by one, optionally then closing. */
export type RawReply =
  | Uint8Array
  | string
  | { parts: (Uint8Array | string)[]; close?: boolean; delayMs?: number; partDelayMs?: number }
  | null; // close without answering

/** A running raw engine. */
export interface RawEngine {
  url: string;
  port: number;
  /** Requests received per target. */
  counts: Map<string, number>;
  /** Every request, in arrival order. */
  requests: RawRequest[];
  /** Connections accepted. */
  connections: number;
  count(target: string): number;
  close(): Promise<void>;
}

/** Strings are written as byte strings (one byte per code unit); use `utf8()` for UTF-8 text. */
function bytesOf(p: Uint8Array | string): Uint8Array {
  return typeof p === "string" ? latin1ToBytes(p) : p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Starts a raw engine on 127.0.0.1:0 answering with `script`. */
export function startRawEngine(
  script: (req: RawRequest) => RawReply | Promise<RawReply>,
): RawEngine {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  let index = 0;
  const engine: RawEngine = {
    url: `http://127.0.0.1:${port}`,
    port,
    counts: new Map(),
    requests: [],
    connections: 0,
    count: (t) => engine.counts.get(t) ?? 0,
    async close() {
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await Promise.allSettled(tasks);
      await accepting;
    },
  };

  async function serve(conn: Deno.Conn): Promise<void> {
    let buf = new Uint8Array(0);
    const readMore = async (): Promise<boolean> => {
      const chunk = new Uint8Array(64 * 1024);
      let n: number | null;
      try {
        n = await conn.read(chunk);
      } catch {
        return false;
      }
      if (n === null) return false;
      const next = new Uint8Array(buf.length + n);
      next.set(buf);
      next.set(chunk.subarray(0, n), buf.length);
      buf = next;
      return true;
    };
    try {
      for (;;) {
        let end = -1;
        while ((end = findEnd(buf)) === -1) if (!(await readMore())) return;
        const head = bytesToLatin1(buf.subarray(0, end));
        const lines = head.split(/\r?\n/);
        const [method, target] = lines[0].split(" ");
        const headers: [string, string][] = [];
        for (const l of lines.slice(1)) {
          const c = l.indexOf(":");
          if (c > 0) headers.push([l.slice(0, c).toLowerCase(), l.slice(c + 1).trim()]);
        }
        const cl = Number(headers.find(([n]) => n === "content-length")?.[1] ?? 0);
        while (buf.length < end + cl) if (!(await readMore())) return;
        const body = buf.slice(end, end + cl);
        buf = buf.slice(end + cl);
        const req: RawRequest = { method, target, headers, head, body, index: index++ };
        engine.requests.push(req);
        engine.counts.set(target, engine.count(target) + 1);
        const reply = await script(req);
        if (reply === null) return;
        if (typeof reply === "string" || reply instanceof Uint8Array) {
          await writeAll(conn, bytesOf(reply));
          continue;
        }
        if (reply.delayMs) await sleep(reply.delayMs);
        for (const p of reply.parts) {
          await writeAll(conn, bytesOf(p));
          if (reply.partDelayMs) await sleep(reply.partDelayMs);
        }
        if (reply.close) return;
      }
    } catch {
      // peer went away
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      engine.connections++;
      conns.add(conn);
      tasks.push(serve(conn));
    }
  })();
  return engine;
}

async function writeAll(conn: Deno.Conn, b: Uint8Array): Promise<void> {
  for (let at = 0; at < b.length;) at += await conn.write(b.subarray(at));
}

function findEnd(buf: Uint8Array): number {
  for (let i = 0; i + 1 < buf.length; i++) {
    if (buf[i] !== 10) continue;
    if (buf[i + 1] === 10) return i + 2;
    if (buf[i + 1] === 13 && buf[i + 2] === 10) return i + 3;
  }
  return -1;
}

/** UTF-8 bytes of `s` (for writing non-latin1 text as real UTF-8 on the wire). */
export function utf8(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** A complete `200` response with `body` and a content-length. */
export function ok(body: string, extra = ""): string {
  return `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n${extra}\r\n${body}`;
}
