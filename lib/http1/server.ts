/**
 * The proxy's listener: an HTTP/1.1 server on `Deno.listen` that runs a
 * `Deno.serve`-shaped handler. It exists for what `Deno.serve` cannot do:
 * close connections that idle or dribble a head (slow loris), cap the number
 * of open client connections, and survive `accept()` failing when the
 * process runs out of file descriptors (`Deno.serve` rejects its promise and
 * the process exits). Per-connection work lives in `_server_conn.ts`.
 *
 * Over the cap a new connection is accepted, answered with a minimal 503
 * and closed, so clients get an answer rather than a hung connect; an
 * `accept()` error backs off (100 ms doubling to 1 s) while the connections
 * already open keep being served. Each of these is logged once per burst,
 * not once per connection.
 */
import type { LogFields, Logger } from "../core/logger.ts";
import { nullLogger } from "../core/logger.ts";
import { errorText } from "../core/errors.ts";
import { ServerConn, type ServerHandler } from "./_server_conn.ts";
import { simpleResponse } from "./response_head.ts";
import { MAX_HEAD_BYTES } from "./parse.ts";

export type { ServerHandler, ServerHandlerInfo } from "./_server_conn.ts";

/** Options of `serveHttp1`. */
export interface Http1ServerOptions {
  hostname: string;
  /** 0 picks a free port. */
  port: number;
  /** Time to receive a complete request head, from accept or from its first byte [10 s]; then 408. */
  headerTimeoutMs?: number;
  /** Time a kept-alive connection may wait for the next request [60 s]; then closed. */
  idleTimeoutMs?: number;
  /** Open client connections; more are answered 503 and closed [1000]. */
  maxConnections?: number;
  /** Largest request head [64 KiB]; larger ones get 431. */
  maxHeadBytes?: number;
  /** Turns a handler exception into a response [plain 500]. */
  onError?: (err: unknown) => Response | Promise<Response>;
  /** Where shedding and accept failures are reported [nowhere]. */
  logger?: Logger;
  /** Least time between two log lines about the same kind of trouble [10 s]. */
  logIntervalMs?: number;
}

/** Connections being answered 503 at once; beyond this they are closed without an answer. */
const MAX_SHEDDING = 128;
/** How long a shed connection may take to read its 503. */
const SHED_LINGER_MS = 1_000;
const SHED_RESPONSE = simpleResponse(503, { "retry-after": "1" });

/** A running server; the shape of `Deno.HttpServer` where it matters. */
export class Http1Server {
  /** The address it listens on (the real port when 0 was asked for). */
  readonly addr: Deno.NetAddr;
  /** Resolves when the server stopped and every connection closed. */
  readonly finished: Promise<void>;
  #listener: Deno.TcpListener;
  #conns = new Map<ServerConn, Promise<void>>();
  #stopping = false;
  #shedding = 0;
  #maxConnections: number;
  #backoffTimer: { id: ReturnType<typeof setTimeout>; wake: () => void } | null = null;
  #shedLog: BurstLog;
  #acceptLog: BurstLog;
  #connOptions: ConstructorParameters<typeof ServerConn>[1];

  constructor(listener: Deno.TcpListener, opts: Http1ServerOptions, handler: ServerHandler) {
    this.#listener = listener;
    this.addr = listener.addr;
    this.#maxConnections = opts.maxConnections ?? 1000;
    const logger = opts.logger ?? nullLogger;
    const interval = opts.logIntervalMs ?? 10_000;
    this.#shedLog = new BurstLog(
      logger,
      "connection limit reached: answering new connections 503 until some close; " +
        "raise --max-connections if this is expected",
      interval,
    );
    this.#acceptLog = new BurstLog(
      logger,
      "cannot accept connections (out of file descriptors?); still serving open ones, retrying",
      interval,
    );
    const host = this.addr.hostname.includes(":") ? `[${this.addr.hostname}]` : this.addr.hostname;
    this.#connOptions = {
      handler,
      onError: opts.onError ??
        (() => new Response("Internal Server Error\n", { status: 500 })),
      headerTimeoutMs: opts.headerTimeoutMs ?? 10_000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
      maxHeadBytes: opts.maxHeadBytes ?? MAX_HEAD_BYTES,
      listenHost: `${host}:${this.addr.port}`,
      stopping: () => this.#stopping,
      onListenerError: (err) =>
        logger.log("error", "a response-completion listener failed", { error: errorText(err) }),
    };
    this.finished = this.#acceptLoop();
  }

  /** Open client connections (shed ones not counted). */
  get connections(): number {
    return this.#conns.size;
  }

  /** The connection cap in force. */
  get maxConnections(): number {
    return this.#maxConnections;
  }

  /**
   * Stops accepting, closes connections that wait for a request, lets
   * requests in flight finish (their connections close after the response).
   * Resolves with `finished`.
   */
  shutdown(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = true;
      try {
        this.#listener.close();
      } catch { /* closed */ }
      if (this.#backoffTimer) {
        clearTimeout(this.#backoffTimer.id);
        this.#backoffTimer.wake();
      }
      for (const c of this.#conns.keys()) if (c.waiting) c.close();
    }
    return this.finished;
  }

  /** Shuts down and closes every connection, in flight or not (the end of a drain). */
  closeAll(): Promise<void> {
    const done = this.shutdown();
    for (const c of this.#conns.keys()) c.close();
    return done;
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 0;
    while (!this.#stopping) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
        backoff = 0;
      } catch (err) {
        if (this.#stopping) break;
        // EMFILE/ENFILE and friends: the pending connection stays queued, so
        // retrying at once would spin. Wait, keep serving, try again.
        backoff = backoff === 0 ? 100 : Math.min(1_000, backoff * 2);
        this.#acceptLog.note({ error: errorText(err), open: this.#conns.size });
        await new Promise<void>((wake) => {
          const id = setTimeout(wake, backoff);
          this.#backoffTimer = { id, wake };
        });
        this.#backoffTimer = null;
        continue;
      }
      if (this.#stopping) {
        closeQuietly(conn);
        break;
      }
      if (this.#conns.size >= this.#maxConnections) {
        this.#shed(conn);
        continue;
      }
      try {
        // SSE tokens are tiny writes that must leave at once.
        conn.setNoDelay(true);
      } catch { /* closed already */ }
      const c = new ServerConn(conn, this.#connOptions);
      this.#conns.set(
        c,
        c.run().catch(() => {}).finally(() => this.#conns.delete(c)),
      );
    }
    while (this.#conns.size > 0) await Promise.all(this.#conns.values());
  }

  /** Answers one connection over the cap with 503 and closes it. */
  #shed(conn: Deno.TcpConn): void {
    this.#shedLog.note({ open: this.#conns.size, max: this.#maxConnections });
    if (this.#shedding >= MAX_SHEDDING) {
      closeQuietly(conn);
      return;
    }
    this.#shedding++;
    const timer = setTimeout(() => closeQuietly(conn), SHED_LINGER_MS);
    void (async () => {
      try {
        let at = 0;
        while (at < SHED_RESPONSE.length) at += await conn.write(SHED_RESPONSE.subarray(at));
        // Half-close, then read what the client sent until it closes: closing
        // with unread bytes would reset the connection and could lose the 503.
        await conn.closeWrite();
        const sink = new Uint8Array(4096);
        for (let total = 0; total < 64 * 1024;) {
          const n = await conn.read(sink);
          if (n === null) break;
          total += n;
        }
      } catch {
        /* the client left or the linger timer closed it */
      } finally {
        clearTimeout(timer);
        closeQuietly(conn);
        this.#shedding--;
      }
    })();
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch { /* closed already */ }
}

/**
 * Logs the first event of a burst at once, then at most one line per
 * interval with how many happened since: trouble that hits every connection
 * must not write a line per connection.
 */
class BurstLog {
  #logger: Logger;
  #msg: string;
  #intervalMs: number;
  #last = -Infinity;
  #count = 0;

  constructor(logger: Logger, msg: string, intervalMs: number) {
    this.#logger = logger;
    this.#msg = msg;
    this.#intervalMs = intervalMs;
  }

  note(fields: LogFields): void {
    this.#count++;
    const now = Date.now();
    if (now - this.#last < this.#intervalMs) return;
    this.#logger.log("warn", this.#msg, { ...fields, count: this.#count });
    this.#last = now;
    this.#count = 0;
  }
}

/**
 * Listens on `hostname:port` and serves `handler`. Throws like `Deno.listen`
 * (`Deno.errors.AddrInUse`, …) when the address cannot be bound.
 */
export function serveHttp1(opts: Http1ServerOptions, handler: ServerHandler): Http1Server {
  const listener = Deno.listen({ hostname: opts.hostname, port: opts.port, transport: "tcp" });
  return new Http1Server(listener, opts, handler);
}
