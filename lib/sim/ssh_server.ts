/**
 * An in-process SSH server standing in for a vast.ai instance (or vast's SSH
 * proxy) in the demo and in fleet-scale tests. It speaks real SSH through
 * ssh2's `Server`, so the proxy's tunnel code runs unchanged against it:
 * public-key auth, `direct-tcpip` forwards to loopback ports, and `exec` of
 * `nvidia-smi`. It listens on 127.0.0.1 only.
 */
import { Buffer } from "node:buffer";
import { timingSafeEqual } from "node:crypto";
import net from "node:net";
// @ts-types="@types/ssh2"
import { type Connection, type ParsedKey, Server, utils } from "ssh2";

/** Options of `startSimSshServer`. */
export interface SimSshServerOptions {
  /** Host private key (PEM or OpenSSH format). */
  hostKey: string | Uint8Array;
  /** The one client public key accepted, as an `authorized_keys` line (`ssh-ed25519 AAAA… comment`). */
  authorizedKey: string;
  /**
   * Maps the port a client forwards to (the LLM server's port "inside the
   * instance") to the real loopback port of the simulated engine;
   * `undefined` keeps the requested port.
   */
  portMap?: (requestedPort: number) => number | undefined;
  /** Output of `nvidia-smi …` (default: one line saying no GPUs, exit 0). */
  nvidiaSmi?: () => string;
  /** Port to listen on (default 0: any free port). */
  port?: number;
}

/** A running simulated SSH server. */
export interface SimSshServer {
  /** The port it listens on (127.0.0.1). */
  readonly port: number;
  /** Currently open client connections. */
  readonly connections: number;
  /** Drops every client connection but keeps listening (simulates a network blip). */
  disconnectAll(): void;
  /** Ends every client connection and forward, and stops listening. */
  close(): Promise<void>;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  // Constant time, as ssh2's own example does, though timing hardly matters here.
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Starts the server; resolves once it is listening. */
export async function startSimSshServer(opts: SimSshServerOptions): Promise<SimSshServer> {
  const parsed = utils.parseKey(opts.authorizedKey);
  if (parsed instanceof Error) {
    throw new Error(`Cannot start the simulated SSH server: authorizedKey is not a public key`, {
      cause: parsed,
    });
  }
  const allowed: ParsedKey = Array.isArray(parsed) ? parsed[0] : parsed;
  const allowedBlob = allowed.getPublicSSH();
  const clients = new Set<Connection>();
  const sockets = new Set<net.Socket>();
  const hostKey = typeof opts.hostKey === "string" ? opts.hostKey : Buffer.from(opts.hostKey);

  const server = new Server({ hostKeys: [hostKey] }, (client) => {
    clients.add(client);
    client.on("close", () => clients.delete(client));
    // A client vanishing mid-handshake emits ECONNRESET; it must not crash the demo.
    client.on("error", () => {});

    client.on("authentication", (ctx) => {
      if (ctx.method !== "publickey") return ctx.reject(["publickey"]);
      const keyOk = ctx.key.algo === allowed.type && sameBytes(ctx.key.data, allowedBlob);
      if (!keyOk) return ctx.reject(["publickey"]);
      // Without a signature the client is only asking whether this key would
      // do; accepting tells it to sign. With one, the signature must verify.
      if (ctx.signature && ctx.blob) {
        if (allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
          return ctx.reject(["publickey"]);
        }
      }
      ctx.accept();
    });

    client.on("ready", () => {
      client.on("tcpip", (accept, reject, info) => {
        const port = opts.portMap?.(info.destPort) ?? info.destPort;
        const sock = net.connect({ host: "127.0.0.1", port });
        sockets.add(sock);
        sock.setNoDelay(true);
        let channel: ReturnType<typeof accept> | undefined;
        sock.once("connect", () => {
          channel = accept();
          // Either side closing closes the other, so neither the engine nor
          // the client is left with a half-dead connection.
          channel.on("close", () => sock.destroy());
          channel.on("error", () => sock.destroy());
          channel.pipe(sock).pipe(channel);
        });
        sock.on("error", () => {
          // Before connect: refuse the channel like sshd ("connect failed").
          if (!channel) reject?.();
        });
        sock.on("close", () => {
          sockets.delete(sock);
          channel?.close();
        });
      });

      client.on("session", (accept) => {
        const session = accept();
        session.on("exec", (acceptExec, _reject, info) => {
          const stream = acceptExec();
          const command = info.command.trim();
          if (/^nvidia-smi(\s|$)/.test(command)) {
            const out = opts.nvidiaSmi?.() ?? "No devices were found\n";
            stream.write(out);
            stream.exit(0);
          } else {
            const name = command.split(/\s+/)[0] ?? "";
            stream.stderr.write(`bash: ${name}: command not found\n`);
            stream.exit(127);
          }
          stream.end();
        });
        // No interactive shells: the proxy never needs one.
        session.on("shell", (_accept, reject) => reject());
        session.on("pty", (_accept, reject) => reject?.());
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  // Listener errors after start (rare on loopback) must not become uncaught.
  server.on("error", () => {});
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;

  const dropAll = () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    for (const c of clients) {
      c.end();
      // end() is a polite disconnect; a client that never answers (stuck
      // mid-handshake) would keep close() waiting forever, so cut its TCP
      // socket after a grace period. `_sock` is ssh2's (stable in 1.x).
      const timer = setTimeout(() => {
        (c as unknown as { _sock?: net.Socket })._sock?.destroy();
      }, 1000);
      c.once("close", () => clearTimeout(timer));
    }
  };

  return {
    port,
    get connections() {
      return clients.size;
    },
    disconnectAll: dropAll,
    close() {
      return new Promise<void>((resolve) => {
        dropAll();
        server.close(() => resolve());
      });
    },
  };
}
