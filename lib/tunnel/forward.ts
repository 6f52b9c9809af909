/**
 * The local end of a tunnel: a TCP listener on 127.0.0.1:0 whose every
 * accepted socket is piped through its own SSH `direct-tcpip` channel to
 * `127.0.0.1:<remotePort>` inside the instance.
 */
import * as net from "node:net";
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import type { Logger } from "../core/logger.ts";
import { nullLogger } from "../core/logger.ts";

/** The part of an ssh2 `Client` a forward uses (lets tests pass a fake). */
export interface ForwardOutClient {
  forwardOut(
    srcIP: string,
    srcPort: number,
    dstIP: string,
    dstPort: number,
    callback: (err: Error | undefined, channel: ClientChannel) => void,
  ): unknown;
}

/** A listening local forward. */
export interface Forward {
  /** Local port on 127.0.0.1. */
  readonly port: number;
  /** Sockets currently open through the forward. */
  readonly openSockets: number;
  /**
   * Stops accepting. `graceful` (default true) waits for open sockets to end
   * on their own — closing idle keep-alive ones (see `drainIdleMs`) — up to
   * `timeoutMs` (default 30 s), then destroys the rest;
   * otherwise they are destroyed at once. Calling it again with
   * `graceful: false` while a graceful close waits ends the wait.
   */
  close(opts?: { graceful?: boolean; timeoutMs?: number }): Promise<void>;
}

/** Options of `startForward`. */
export interface ForwardOptions {
  logger?: Logger;
  /** Destination host inside the instance (default `127.0.0.1`). */
  remoteHost?: string;
  /** Instance id, only for log fields. */
  instanceId?: number;
  /**
   * During a graceful close, a socket whose last bytes came from the
   * instance and that has been quiet this long is treated as an idle
   * keep-alive connection and closed (default 5 000 ms). See `close()`.
   */
  drainIdleMs?: number;
}

/** What a graceful close needs to know about one socket. */
interface Activity {
  /** Last time bytes moved either way (ms since epoch). */
  lastAt: number;
  /** True when the last bytes came from the instance (a response). */
  fromServer: boolean;
  /** True once any byte moved. */
  used: boolean;
}

/** Listens on 127.0.0.1:0 and forwards each connection to `remotePort` over `conn`. */
export function startForward(
  conn: ForwardOutClient,
  remotePort: number,
  opts: ForwardOptions = {},
): Promise<Forward> {
  const logger = opts.logger ?? nullLogger;
  const remoteHost = opts.remoteHost ?? "127.0.0.1";
  const drainIdleMs = opts.drainIdleMs ?? 5_000;
  const sockets = new Map<net.Socket, Activity>();
  let closing = false;
  let drained: (() => void) | undefined;

  const release = (socket: net.Socket) => {
    if (!sockets.delete(socket)) return;
    if (sockets.size === 0) drained?.();
  };

  const onSocket = (socket: net.Socket) => {
    if (closing) return socket.destroy();
    const activity: Activity = { lastAt: Date.now(), fromServer: false, used: false };
    sockets.set(socket, activity);
    socket.setNoDelay(true);
    let channel: ClientChannel | undefined;
    // Both sides need an 'error' listener: an unhandled one crashes the
    // process, and a reset on either side is routine (client cancelled,
    // instance server restarted).
    socket.on("error", () => {});
    socket.on("close", () => {
      release(socket);
      closeChannel(channel);
    });
    // The socket starts paused, so bytes sent before the channel opens wait
    // in its buffer until pipe() below starts reading.
    try {
      conn.forwardOut("127.0.0.1", 0, remoteHost, remotePort, (err, ch) => {
        if (err) {
          logger.log("debug", "forward channel refused", {
            instance: opts.instanceId,
            remotePort,
            error: err.message,
          });
          socket.destroy();
          return;
        }
        channel = ch;
        if (socket.destroyed) return closeChannel(ch);
        ch.on("error", () => {});
        ch.on("close", () => socket.destroy());
        socket.pipe(ch).pipe(socket);
        // Listeners added only now: earlier ones would start the socket
        // flowing before the channel could take the bytes.
        const seen = (fromServer: boolean) => () => {
          activity.lastAt = Date.now();
          activity.fromServer = fromServer;
          activity.used = true;
        };
        socket.on("data", seen(false));
        ch.on("data", seen(true));
      });
    } catch (err) {
      // forwardOut throws synchronously when the connection is already gone.
      logger.log("debug", "forward channel not opened", {
        instance: opts.instanceId,
        error: err instanceof Error ? err.message : String(err),
      });
      socket.destroy();
    }
  };

  const server = net.createServer({ noDelay: true }, onSocket);
  server.on("error", (err) => {
    logger.log("warn", "forward listener failed", {
      instance: opts.instanceId,
      error: err.message,
    });
  });

  return new Promise<Forward>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      const port = (server.address() as net.AddressInfo).port;
      let closed: Promise<void> | undefined;
      resolve({
        port,
        get openSockets() {
          return sockets.size;
        },
        close({ graceful = true, timeoutMs = 30_000 } = {}) {
          // An immediate close during a graceful one cuts the wait short.
          if (!graceful) drained?.();
          closed ??= (async () => {
            closing = true;
            const stopped = new Promise<void>((r) => server.close(() => r()));
            if (graceful && sockets.size > 0) {
              let timer: ReturnType<typeof setTimeout> | undefined;
              let sweeper: ReturnType<typeof setInterval> | undefined;
              await new Promise<void>((r) => {
                drained = r;
                timer = setTimeout(r, timeoutMs);
                // HTTP clients keep finished connections open for reuse, so
                // "wait until every socket closes" would always hit the
                // timeout. A TCP forward cannot see request boundaries; the
                // best signal is: the instance spoke last (a response was
                // delivered) and the socket has been quiet for drainIdleMs.
                // A request still waiting for its first byte (client spoke
                // last) is never cut before the timeout.
                const sweep = () => {
                  const now = Date.now();
                  for (const [s, a] of sockets) {
                    if ((a.fromServer || !a.used) && now - a.lastAt >= drainIdleMs) s.destroy();
                  }
                };
                sweep();
                sweeper = setInterval(sweep, Math.max(10, Math.min(250, drainIdleMs / 2)));
              });
              clearTimeout(timer);
              clearInterval(sweeper);
            }
            for (const s of sockets.keys()) s.destroy();
            await stopped;
          })();
          return closed;
        },
      });
    });
  });
}

function closeChannel(channel: ClientChannel | undefined): void {
  if (!channel) return;
  try {
    channel.close();
  } catch {
    // Already closed, or the connection died: nothing left to release.
  }
}
