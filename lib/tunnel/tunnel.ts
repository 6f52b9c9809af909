/**
 * The contract between the proxy and an SSH tunnel. lib/tunnel/ssh.ts
 * implements it over ssh2; the proxy's unit tests use doubles that send the
 * same `Http1Request`s through the same HTTP/1.1 client over TCP, so the
 * proxy never depends on SSH internals and tests run the production path.
 */
import type { BackendSpec, SshPath } from "../core/backend_spec.ts";
import type { Http1Request, Http1Response } from "../http1/types.ts";
import type { Upgraded } from "../http1/upgrade.ts";

/** Lifecycle state of a tunnel. */
export type TunnelState =
  | "connecting" // first connect or reconnect in progress (including backoff)
  | "up" // connected: requests travel over its channels
  | "down" // connection lost; reconnect scheduled
  | "hostkey-mismatch" // refused: pinned host key differs; no retry
  | "closed"; // close() called

/** A point-in-time view of a tunnel. */
export interface TunnelStatus {
  state: TunnelState;
  /** Path of the live connection, when up. */
  path: SshPath | null;
  /** `host:port` of the live (or last tried) SSH endpoint. */
  endpoint: string | null;
  /** Why the tunnel is not up (no secrets), or null. */
  reason: string | null;
  /** When `state` last changed (epoch ms). */
  since: number;
}

/** What a tunnel tells its owner. */
export type TunnelEvent =
  | { type: "up"; path: SshPath; endpoint: string }
  | { type: "down"; reason: string }
  | { type: "hostkey-mismatch"; reason: string }
  | { type: "closed" };

/** Result of a remote command. */
export interface ExecResult {
  stdout: string;
  stderr: string;
  /** Exit code, or null when the command was killed by a signal or timed out. */
  code: number | null;
}

/** An SSH connection to one instance, self-healing; every HTTP exchange rides its channels. */
export interface Tunnel {
  /** The instance this tunnel reaches. */
  readonly instanceId: number;
  /** Current state. */
  status(): TunnelStatus;
  /**
   * Sends one HTTP/1.1 request over a channel of the *current* connection.
   * Rejects with `Http1Error` (its `sent` tells whether the engine may have
   * seen it; not sent while the tunnel is down) or the signal's reason.
   */
  request(req: Http1Request): Promise<Http1Response>;
  /**
   * Sends an upgrade request (WebSocket) on a fresh channel of the current
   * connection: `Upgraded` (the raw channel) on 101, else an ordinary answer.
   */
  upgrade(req: Http1Request): Promise<Upgraded | Http1Response>;
  /** Runs a command on the instance; rejects with a typed error on failure or timeout. */
  exec(command: string, opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Drops the current connection (if any) and reconnects now, resetting backoff. */
  reconnect(): void;
  /** Registers a listener; returns an unsubscribe function. Events are delivered in order. */
  subscribe(listener: (event: TunnelEvent) => void): () => void;
  /**
   * Closes the tunnel. `graceful` refuses new requests and lets those in
   * flight finish (up to `timeoutMs`) before ending the SSH connection.
   */
  close(opts?: { graceful?: boolean; timeoutMs?: number }): Promise<void>;
}

/** Options every tunnel gets from its owner. */
export interface TunnelOptions {
  /**
   * Checks a freshly opened path before it replaces a proxied one (the direct
   * upgrade): given a sender over the new connection's channels, resolves
   * true when the engine answers healthily through it.
   */
  verify?: (send: (req: Http1Request) => Promise<Http1Response>) => Promise<boolean>;
}

/** Creates tunnels; injectable so the proxy is testable without SSH. */
export interface TunnelFactory {
  /** Opens (asynchronously, in the background) a tunnel for `spec`. */
  open(spec: BackendSpec, opts?: TunnelOptions): Tunnel;
}
