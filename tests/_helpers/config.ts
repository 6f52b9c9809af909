/**
 * A `ServeConfig` for tests that start the proxy with `startProxy()`: the
 * defaults a test rarely cares about (loopback listen on a free port, no
 * token, text logs, no TUI), overridden by what it does care about.
 */
import type { ServeConfig } from "../../lib/app/serve_config.ts";
import { SshTunnelFactory, type SshTunnelFactoryOptions } from "../../lib/tunnel/factory.ts";

/** Defaults for every field but the API endpoint and key. */
const DEFAULTS: Omit<ServeConfig, "apiKey" | "apiUrl"> = {
  listen: { hostname: "127.0.0.1", port: 0 },
  authToken: null,
  sshKeys: [],
  knownHosts: "/nonexistent/known_hosts",
  insecureHostKeys: false,
  sshNativeCrypto: false,
  label: null,
  instances: [],
  remotePort: null,
  policy: "least-inflight",
  stickyHeader: null,
  markLabel: null,
  pollIntervalMs: 60_000,
  healthIntervalMs: 200,
  maxBodyBytes: 1024 * 1024,
  maxBufferedBytes: 64 * 1024 * 1024,
  bodyTimeoutMs: 30_000,
  allowedHosts: [],
  corsOrigins: [],
  drainTimeoutMs: 1_000,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  maxConnections: 1000,
  tui: false,
  logFormat: "text",
};

/** The test defaults with `patch` applied; `apiKey` and `apiUrl` are required. */
export function testServeConfig(
  patch: Partial<ServeConfig> & Pick<ServeConfig, "apiKey" | "apiUrl">,
): ServeConfig {
  return { ...DEFAULTS, ...patch };
}

/**
 * An `SshTunnelFactory` for tests: only `keyPath` authenticates (no agent, no
 * default key files, no passphrase from the environment, so the developer's
 * own SSH setup never leaks in), with a short connect timeout and fast
 * reconnects. `extra` overrides anything.
 */
export function testTunnelFactory(
  keyPath: string,
  knownHostsPath: string,
  extra: Partial<SshTunnelFactoryOptions> = {},
): SshTunnelFactory {
  return new SshTunnelFactory({
    sshKeys: [keyPath],
    knownHostsPath,
    insecureHostKeys: false,
    agentSocket: null,
    passphrase: null,
    defaultKeyFiles: [],
    readyTimeoutMs: 3_000,
    backoffBaseMs: 100,
    backoffMaxMs: 500,
    ...extra,
  });
}
