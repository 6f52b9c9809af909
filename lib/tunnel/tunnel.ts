/**
 * The contract between the proxy and an SSH tunnel. lib/tunnel/ssh.ts
 * implements it over ssh2; tests and the proxy's unit tests use fakes, so the
 * proxy never depends on SSH internals.
 */
import type { BackendSpec, SshPath } from "../core/backend_spec.ts";
import type { ChannelRequest } from "../http1/client.ts";

export type { ChannelRequest } from "../http1/client.ts";

/** Lifecycle state of a tunnel. */
export type TunnelState =
  | "connecting" // first connect or reconnect in progress (including backoff)
  | "up" // connected, local forward listening
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
  /** Local forward port on 127.0.0.1, when up. */
  localPort: number | null;
  /** Why the tunnel is not up (no secrets), or null. */
  reason: string | null;
  /** When `state` last changed (epoch ms). */
  since: number;
}

/** What a tunnel tells its owner. */
export type TunnelEvent =
  | { type: "up"; path: SshPath; endpoint: string; localPort: number }
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

/** An SSH connection to one instance plus its local forward, self-healing. */
export interface Tunnel {
  /** The instance this tunnel reaches. */
  readonly instanceId: number;
  /** Current state. */
  status(): TunnelStatus;
  /** `http://127.0.0.1:<localPort>` while up, else undefined. */
  baseUrl(): string | undefined;
  /**
   * Optional fast path: sends one HTTP/1.1 request straight over an SSH
   * channel of the *current* connection (no local TCP hop, no fetch). Rejects
   * with a `TypeError` (as fetch does) when the tunnel is not up or the
   * channel fails before response headers. Tunnels without it are reached
   * through `baseUrl()`.
   */
  request?(req: ChannelRequest): Promise<Response>;
  /** Runs a command on the instance; rejects with a typed error on failure or timeout. */
  exec(command: string, opts?: { timeoutMs?: number }): Promise<ExecResult>;
  /** Drops the current connection (if any) and reconnects now, resetting backoff. */
  reconnect(): void;
  /** Registers a listener; returns an unsubscribe function. Events are delivered in order. */
  subscribe(listener: (event: TunnelEvent) => void): () => void;
  /**
   * Closes the tunnel. `graceful` stops accepting new forward sockets and lets
   * open ones finish (up to `timeoutMs`) before ending the SSH connection.
   */
  close(opts?: { graceful?: boolean; timeoutMs?: number }): Promise<void>;
}

/** Options every tunnel gets from its owner. */
export interface TunnelOptions {
  /**
   * Checks a freshly opened path before it replaces a proxied one (the direct
   * upgrade): given the new forward's base URL, resolves true when healthy.
   */
  verify?: (baseUrl: string) => Promise<boolean>;
}

/** Creates tunnels; injectable so the proxy is testable without SSH. */
export interface TunnelFactory {
  /** Opens (asynchronously, in the background) a tunnel for `spec`. */
  open(spec: BackendSpec, opts?: TunnelOptions): Tunnel;
}
