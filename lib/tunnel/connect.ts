/**
 * One connection attempt: open SSH to an instance over its endpoint list
 * (direct first, then proxy ones), verifying the host key against its pin.
 * No retries here — the tunnel's loop owns backoff.
 */
// @ts-types="@types/ssh2"
import { type Algorithms, Client } from "ssh2";
import type { Buffer } from "node:buffer";
import type { Readable } from "node:stream";
import { DenoSocket, socketError } from "./deno_socket.ts";
import type { Logger } from "../core/logger.ts";
import { nullLogger } from "../core/logger.ts";
import type { SshEndpoint } from "../core/backend_spec.ts";
import { type ConnectAttempt, HostKeyMismatchError, SshConnectError } from "./errors.ts";
import { authMethods, type AuthSource, describeSources } from "./keys.ts";
import { fingerprint, type HostKeyCheck, type KnownHosts } from "./known_hosts.ts";
import { installPacketCipher } from "./packet_cipher.ts";
import { installChannelDestroy } from "./channel_destroy.ts";

// AES-GCM packets sealed and opened without per-packet cipher construction,
// in one write each (lib/tunnel/packet_cipher.ts; docs/BENCHMARKS.md, "SSH
// packet cost"). Every ssh2 connection in this process uses it.
installPacketCipher();
// Closing a channel without building an error nobody receives (channel_destroy.ts).
installChannelDestroy();

/** Everything one attempt needs; the factory builds it once per tunnel. */
export interface ConnectOptions {
  /** vast.ai instance id: the host-key pin and error messages use it. */
  instanceId: number;
  /** SSH user (vast: `root`). */
  username: string;
  /** Auth sources in order (see keys.ts). */
  auth: readonly AuthSource[];
  /** Pins to check; null skips host-key checking (`--insecure-host-keys`). */
  knownHosts: KnownHosts | null;
  /** Whole attempt per endpoint (TCP + handshake + auth), ms. */
  readyTimeoutMs: number;
  /** SSH keepalive period, ms. */
  keepaliveIntervalMs: number;
  /** Unanswered keepalives before the connection counts as dead. */
  keepaliveCountMax: number;
  /** Cipher/MAC preference; default `SSH_ALGORITHMS` (the benchmark overrides it). */
  algorithms?: SshAlgorithms;
  /** Aborting ends the attempt (the tunnel was closed). */
  signal?: AbortSignal;
  logger?: Logger;
}

/** The part of ssh2's `algorithms` option vastproxy sets. */
export type SshAlgorithms = Pick<Algorithms, "cipher" | "hmac">;

/**
 * Cipher and MAC preference, most preferred first (the client's order wins
 * in SSH negotiation). Under Deno ssh2 always takes its JavaScript crypto
 * path. Measured (docs/BENCHMARKS.md, "SSH cipher choice" and "SSH packet
 * cost"): AES-GCM, with lib/tunnel/packet_cipher.ts installed, is by far the
 * cheapest per small packet (~1 µs for a window adjust against 9–13 µs for
 * chacha20-poly1305 or CTR+HMAC); chacha20-poly1305 moves bulk data about
 * 1.8× faster. AES-GCM comes first anyway: chacha20-poly1305 is what the
 * Terrapin attack (CVE-2023-48795) targets on an sshd without strict key
 * exchange, and vast images often carry old sshds; GCM already meets the
 * bulk target (≥ 100 MB/s). The rest are fallbacks every OpenSSH since 6.5
 * accepts; nothing CBC, arcfour or 3DES.
 */
export const SSH_ALGORITHMS: SshAlgorithms = {
  cipher: [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
  ],
  hmac: [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-sha1",
  ],
};

/** A live, authenticated connection and where it goes. */
export interface Connection {
  client: Client;
  endpoint: SshEndpoint;
  /** `host:port`. */
  address: string;
  /**
   * True once the connection closed. The owner checks it when it attaches
   * its own 'close' listener, since a close during setup (pinning, opening
   * the forward) would otherwise go unnoticed.
   */
  isClosed(): boolean;
}

/** `host:port` of an endpoint (IPv6 hosts in brackets). */
export function endpointAddress(e: { host: string; port: number }): string {
  return e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`;
}

/**
 * Tries each endpoint in order and returns the first that authenticates.
 * A host-key mismatch stops at once (trying another path to the same
 * instance would only hide the problem); other failures are collected into
 * one `SshConnectError` listing every endpoint.
 */
export async function connectAny(
  endpoints: readonly SshEndpoint[],
  opts: ConnectOptions,
): Promise<Connection> {
  const attempts: ConnectAttempt[] = [];
  let lastCause: unknown;
  for (const endpoint of endpoints) {
    if (opts.signal?.aborted) break;
    try {
      return await connectEndpoint(endpoint, opts);
    } catch (err) {
      if (!(err instanceof SshConnectError)) throw err;
      attempts.push(...err.attempts);
      lastCause = err.cause;
    }
  }
  throw new SshConnectError(opts.instanceId, attempts, { cause: lastCause });
}

/**
 * Opens one SSH connection to `endpoint`. Resolves once authenticated (with
 * Nagle disabled) and, on first use, once the host key is pinned; rejects
 * with `HostKeyMismatchError` or an `SshConnectError` holding one attempt.
 *
 * Host keys are checked synchronously against a pin read beforehand: ssh2's
 * asynchronous `hostVerifier` races the server's NEWKEYS and can stall the
 * handshake (seen here against OpenSSH 9.2; see mscdex/ssh2#1040, #1312).
 * A first-use pin is written after authentication instead, under the
 * known-hosts lock, which also catches a concurrent pin of another key.
 */
export async function connectEndpoint(
  endpoint: SshEndpoint,
  opts: ConnectOptions,
): Promise<Connection> {
  const address = endpointAddress(endpoint);
  const failure = (kind: ConnectAttempt["kind"], reason: string, cause?: unknown) =>
    new SshConnectError(
      opts.instanceId,
      [{ endpoint: address, path: endpoint.path, kind, reason }],
      { cause },
    );
  const knownHosts = opts.knownHosts;
  let pinned: string | undefined;
  if (knownHosts) {
    try {
      pinned = (await knownHosts.lookup(opts.instanceId))?.fingerprint;
    } catch (err) {
      throw failure("protocol", `cannot read known-hosts file ${knownHosts.path}: ${err}`, err);
    }
  }

  let offered: Uint8Array | undefined;
  const conn = await handshake(endpoint, address, opts, failure, (key) => {
    offered = key;
    if (!knownHosts || pinned === undefined) return undefined;
    const actual = fingerprint(key);
    if (actual === pinned) return undefined;
    return new HostKeyMismatchError({
      instanceId: opts.instanceId,
      endpoint: address,
      expectedFingerprint: pinned,
      actualFingerprint: actual,
      knownHostsPath: knownHosts.path,
    });
  });

  if (knownHosts && pinned === undefined && offered) {
    let result: HostKeyCheck;
    try {
      result = await knownHosts.check(opts.instanceId, offered);
    } catch (err) {
      endClient(conn.client);
      throw failure("protocol", `cannot write known-hosts file ${knownHosts.path}: ${err}`, err);
    }
    if (result.status === "mismatch") {
      endClient(conn.client);
      throw new HostKeyMismatchError({
        instanceId: opts.instanceId,
        endpoint: address,
        expectedFingerprint: result.expectedFingerprint,
        actualFingerprint: result.actualFingerprint,
        knownHostsPath: knownHosts.path,
      });
    }
  }
  return conn;
}

type Failure = (kind: ConnectAttempt["kind"], reason: string, cause?: unknown) => SshConnectError;
type SshError = Error & { level?: string; code?: string };

/** TCP + SSH handshake + auth; `checkKey` returns an error to refuse the host key. */
function handshake(
  endpoint: SshEndpoint,
  address: string,
  opts: ConnectOptions,
  failure: Failure,
  checkKey: (key: Uint8Array) => HostKeyMismatchError | undefined,
): Promise<Connection> {
  const logger = opts.logger ?? nullLogger;
  const client = new Client();
  let closed = false;
  let mismatch: HostKeyMismatchError | undefined;
  let lastError: SshError | undefined;

  // Permanent listeners: an 'error' without a listener would crash the
  // process, and `closed` must be right for the connection's whole life.
  client.on("error", (err: SshError) => {
    // ssh2 reports an unusable agent as an error but goes on with the next
    // auth method, so it is not the end of the attempt.
    if (err.level === "agent") {
      logger.log("debug", "ssh-agent could not be used", { instance: opts.instanceId });
      return;
    }
    lastError = err;
  });
  client.on("close", () => (closed = true));

  return new Promise<Connection>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      cleanup();
      endClient(client);
      reject(err);
    };
    const onReady = () => {
      if (settled) return;
      settled = true;
      cleanup();
      // Without this every small request/response waits ~40 ms on Nagle.
      client.setNoDelay(true);
      resolve({ client, endpoint, address, isClosed: () => closed });
    };
    const onClose = () => fail(mismatch ?? classify(lastError, opts, failure));
    const onAbort = () => fail(failure("aborted", "tunnel closed"));
    // Our own deadline also covers DNS, which ssh2's readyTimeout does not.
    const deadline = setTimeout(
      () => fail(failure("timeout", `no SSH session within ${seconds(opts.readyTimeoutMs)}`)),
      opts.readyTimeoutMs + 1000,
    );
    const cleanup = () => {
      clearTimeout(deadline);
      opts.signal?.removeEventListener("abort", onAbort);
      client.off("ready", onReady);
      client.off("close", onClose);
    };
    client.on("ready", onReady);
    client.on("close", onClose);
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    // TCP first, on our own socket (deno_socket.ts says why), then SSH over it.
    const start = (sock: DenoSocket) => {
      if (settled) {
        sock.destroy();
        return;
      }
      client.connect({
        sock: sock as unknown as Readable,
        host: endpoint.host,
        port: endpoint.port,
        username: opts.username,
        authHandler: authMethods(opts.auth, opts.username),
        hostVerifier: (key: Buffer): boolean => {
          mismatch = checkKey(new Uint8Array(key));
          return mismatch === undefined;
        },
        readyTimeout: opts.readyTimeoutMs,
        keepaliveInterval: opts.keepaliveIntervalMs,
        keepaliveCountMax: opts.keepaliveCountMax,
        // No compression, ever: every sshd offers "none" (RFC 4253 requires
        // it), and open_queue.ts reads a payload's message type off the
        // opened packet, which only holds for uncompressed payloads.
        algorithms: { ...(opts.algorithms ?? SSH_ALGORITHMS), compress: ["none"] },
      });
    };
    const started = Deno.connect({ hostname: endpoint.host, port: endpoint.port }).then(
      (conn) => start(new DenoSocket(conn)),
      (err) => {
        lastError = socketError(err);
        fail(classify(lastError, opts, failure));
      },
    );
    started.catch((err) => {
      fail(failure("protocol", err instanceof Error ? err.message : String(err), err));
    });
  });
}

function classify(err: SshError | undefined, opts: ConnectOptions, failure: Failure) {
  if (!err) return failure("network", "connection closed during the SSH handshake");
  if (err.level === "client-authentication") {
    const tried = describeSources(opts.auth);
    return failure("auth", `authentication as ${opts.username} failed (tried: ${tried})`, err);
  }
  if (err.level === "client-timeout") {
    return failure("timeout", `no SSH handshake within ${seconds(opts.readyTimeoutMs)}`, err);
  }
  if (err.code === "ECONNREFUSED") return failure("refused", "connection refused", err);
  if (err.code) return failure("network", `${err.code} (${err.message})`, err);
  return failure("protocol", err.message, err);
}

/** Ends an ssh2 client and its socket; safe to call more than once. */
export function endClient(client: Client): void {
  try {
    client.end();
    // end() sends a disconnect and waits for the peer; a dead or stalled
    // peer never answers, so also destroy the socket to free it now.
    (client as unknown as { _sock?: { destroy?: () => void } })._sock?.destroy?.();
  } catch {
    // Already ended.
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
