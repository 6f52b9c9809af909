/**
 * The rig of the body-source tests (tests/source_review/, relay_source_test):
 * a scripted raw engine on loopback, the real channel client (TCP instead
 * of SSH), the relay and our server, and a raw client. `stripSource`
 * forces the stream path for comparison; `countedSource` tells whether the
 * relay read the source.
 */
import { serveHttp1 } from "../../lib/http1/server.ts";
import type { Http1Response } from "../../lib/http1/types.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { FakeTarget, relayOver } from "./fake_pool.ts";
import { tcpHttp1Client } from "./tcp_client.ts";
import { RawClient } from "./raw_http.ts";
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `res` without its source: the relay then takes the stream path. */
export function withoutSource(res: Http1Response): Http1Response {
  const { source: _dropped, ...rest } = res;
  return rest;
}

/** `res` with its source's reads reported to `onRead` (to tell the relay took that path). */
export function countedSource(res: Http1Response, onRead: () => void): Http1Response {
  const source = res.source;
  if (source === undefined) return res;
  return {
    ...res,
    source: {
      read: () => (onRead(), source.read()),
      readNow: () => (onRead(), source.readNow()),
      cancel: (reason?: unknown) => source.cancel(reason),
    },
  };
}

/** One engine-side connection, for the script. */
export class EngineSide {
  closedByProxy = false;
  #closedResolve!: () => void;
  /** Resolves once the proxy closed this connection (engine read EOF / error). */
  readonly closedP = new Promise<void>((r) => (this.#closedResolve = r));
  requests = 0;
  written = 0;
  constructor(readonly conn: Deno.Conn) {}
  async write(s: string | Uint8Array): Promise<boolean> {
    const b = typeof s === "string" ? latin1ToBytes(s) : s;
    try {
      let at = 0;
      while (at < b.length) {
        at += await this.conn.write(b.subarray(at));
        this.written = at;
      }
      return true;
    } catch {
      return false;
    }
  }
  close() {
    try {
      this.conn.close();
    } catch { /* */ }
  }
  _markClosed() {
    this.closedByProxy = true;
    this.#closedResolve();
  }
}

export type Script = (side: EngineSide, index: number) => Promise<void>;

export function startEngine(script: Script) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sides: EngineSide[] = [];
  let index = 0;
  const tasks: Promise<void>[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      const side = new EngineSide(conn);
      sides.push(side);
      tasks.push((async () => {
        // Reads request heads forever; each head runs the script (sequentially).
        const buf = new Uint8Array(65536);
        let seen = "";
        let running: Promise<void> = Promise.resolve();
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            seen += bytesToLatin1(buf.subarray(0, n));
            let at;
            while ((at = seen.indexOf("\r\n\r\n")) >= 0) {
              seen = seen.slice(at + 4);
              side.requests++;
              const i = index++;
              running = running.then(() => script(side, i)).catch(() => {});
            }
          }
        } catch { /* reset */ }
        side._markClosed();
        await running;
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    sides,
    async close() {
      listener.close();
      for (const s of sides) s.close();
      await serving.catch(() => {});
      await Promise.allSettled(tasks);
    },
  };
}

export interface Rig {
  port: number;
  target: FakeTarget;
  lines: RequestLogLine[];
  client: ReturnType<typeof tcpHttp1Client>;
  sourceUsed: () => boolean;
  close(): Promise<void>;
}

export function startRig(
  enginePort: number,
  opts: { stripSource?: boolean; denoServe?: boolean; throwInLog?: boolean } = {},
): Rig {
  const client = tcpHttp1Client(enginePort);
  const target = new FakeTarget(7, { baseUrl: `http://127.0.0.1:${enginePort}` });
  let used = false;
  target.sender = async (req) => {
    const res: Http1Response = await client.request(req);
    return opts.stripSource ? withoutSource(res) : countedSource(res, () => (used = true));
  };
  const lines: RequestLogLine[] = [];
  const h = relayOver([target], {
    onRequestLog: (l) => {
      lines.push(l);
      if (opts.throwInLog) throw new Error("log sink failed");
    },
  });
  if (opts.denoServe) {
    const ac = new AbortController();
    const srv = Deno.serve({ hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} }, h);
    return {
      port: srv.addr.port,
      target,
      lines,
      client,
      sourceUsed: () => used,
      async close() {
        ac.abort();
        await srv.finished.catch(() => {});
        client.close();
      },
    };
  }
  const srv = serveHttp1({ hostname: "127.0.0.1", port: 0 }, h);
  return {
    port: srv.addr.port,
    target,
    lines,
    client,
    sourceUsed: () => used,
    async close() {
      await srv.closeAll();
      client.close();
    },
  };
}

/** Decodes a chunked body from the wire text after the head; null if not complete/valid. */
export function dechunk(s: string): { body: string; complete: boolean } {
  let at = 0;
  let body = "";
  for (;;) {
    const nl = s.indexOf("\r\n", at);
    if (nl < 0) return { body, complete: false };
    const size = parseInt(s.slice(at, nl), 16);
    if (Number.isNaN(size)) return { body, complete: false };
    if (size === 0) return { body, complete: s.slice(nl + 2, nl + 4) === "\r\n" };
    if (s.length < nl + 2 + size + 2) return { body, complete: false };
    body += s.slice(nl + 2, nl + 2 + size);
    at = nl + 2 + size + 2;
  }
}

/** Splits a response wire into head and body text. */
export function split(wire: string) {
  const i = wire.indexOf("\r\n\r\n");
  return { head: wire.slice(0, i), body: wire.slice(i + 4) };
}

export { RawClient };

/** Runs one GET through a rig and returns the wire; waits for release + log. */
export async function oneRequest(
  rig: Rig,
  path = "/v1/x",
  opts: { method?: string; minor?: number; timeoutMs?: number; extra?: string } = {},
) {
  const c = await RawClient.open(rig.port);
  try {
    await c.send(
      `${opts.method ?? "GET"} ${path} HTTP/1.${opts.minor ?? 1}\r\nHost: h\r\n${
        opts.extra ?? ""
      }\r\n`,
    );
    await c.until((s) => {
      const { head, body } = split(s);
      if (!s.includes("\r\n\r\n")) return false;
      if (/transfer-encoding: chunked/i.test(head)) return dechunk(body).complete;
      const m = /content-length: (\d+)/i.exec(head);
      if (m) return body.length >= Number(m[1]);
      return false;
    }, opts.timeoutMs ?? 5_000).catch(() => {});
    // A little longer to see a close.
    await c.until(() => false, 200).catch(() => {});
    return { wire: c.received.replace(/\r\ndate: [^\r]*/i, ""), closed: c.closed };
  } finally {
    c.close();
  }
}
