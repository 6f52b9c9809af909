/**
 * The validated configuration of `vastproxy serve` (and of `demo`, which
 * serves too). lib/cli/config.ts builds it; the app (lib/app/) runs on it from flags, environment and `.env`.
 */

import type { PolicyName } from "../proxy/policies.ts";

/** Routing policy names accepted by `--policy` (declared beside the policies). */
export type { PolicyName };

/** Headless log format. */
export type LogFormat = "text" | "json";

/** Everything `serve` needs, validated. Durations in ms, sizes in bytes. */
export interface ServeConfig {
  apiKey: string;
  apiUrl: string;
  listen: { hostname: string; port: number };
  authToken: string | null;
  /** Explicit key files (`--ssh-key`); empty means agent then default files. */
  sshKeys: string[];
  knownHosts: string;
  insecureHostKeys: boolean;
  /**
   * `--ssh-native-crypto`: every AES-GCM packet through node:crypto instead
   * of lib/tunnel/packet_cipher.ts (whose table-based AES is not hardened
   * against cache-timing observers on the same machine).
   */
  sshNativeCrypto: boolean;
  label: string | null;
  instances: number[];
  remotePort: number | null;
  policy: PolicyName;
  stickyHeader: string | null;
  markLabel: string | null;
  pollIntervalMs: number;
  healthIntervalMs: number;
  maxBodyBytes: number;
  /** `--max-buffered`: all request bodies held in memory at once. */
  maxBufferedBytes: number;
  /** `--body-timeout`: total time to receive one request body. */
  bodyTimeoutMs: number;
  /** `--allowed-host` entries (Host names served without a token besides loopback). */
  allowedHosts: string[];
  /** `--cors-origin` entries, normalized (`http://localhost:3000`) or `*`. */
  corsOrigins: string[];
  drainTimeoutMs: number;
  /** Time a client connection may take to send a request head (`--header-timeout`). */
  headerTimeoutMs: number;
  /** Time an idle keep-alive client connection stays open (`--idle-timeout`). */
  idleTimeoutMs: number;
  /** Open client connections before new ones get 503 (`--max-connections`). */
  maxConnections: number;
  tui: boolean;
  logFormat: LogFormat;
}
