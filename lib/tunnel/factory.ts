/**
 * `SshTunnelFactory`: turns the `--ssh-key` / `--known-hosts` configuration
 * into the settings every `SshTunnel` shares. Keys are read and parsed once
 * here, not once per connection.
 */
import { type Clock, realClock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import { nullLogger } from "../core/logger.ts";
import type { BackendSpec } from "../core/backend_spec.ts";
import { defaultKeyFiles, loadAuthSources } from "./keys.ts";
import { KnownHosts } from "./known_hosts.ts";
import { SshTunnel, type TunnelSettings } from "./ssh.ts";
import type { Tunnel, TunnelFactory, TunnelOptions } from "./tunnel.ts";

/** Options of `SshTunnelFactory`; times in ms, defaults in brackets. */
export interface SshTunnelFactoryOptions {
  /** Explicit key files (`--ssh-key`), tried after the agent and before default files. */
  sshKeys: string[];
  /** `--known-hosts` file. */
  knownHostsPath: string;
  /** Skip host-key pinning (`--insecure-host-keys`). */
  insecureHostKeys: boolean;
  /** Passphrase for encrypted keys [`$VASTPROXY_SSH_PASSPHRASE`]; null: none. */
  passphrase?: string | null;
  /** ssh-agent socket [`$SSH_AUTH_SOCK`]; null: no agent. */
  agentSocket?: string | null;
  /** Default key files [`~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`]. */
  defaultKeyFiles?: string[];
  /** SSH user [`root`]. */
  username?: string;
  clock?: Clock;
  random?: () => number;
  logger?: Logger;
  /** Connect timeout per endpoint [10 000]. */
  readyTimeoutMs?: number;
  /** SSH keepalive period [10 000]. */
  keepaliveIntervalMs?: number;
  /** Unanswered keepalives before the connection is dead [3]. */
  keepaliveCountMax?: number;
  /** Direct-path retry period on proxied tunnels [60 000]. */
  directRetryMs?: number;
  /** Uptime after which backoff resets [60 000]. */
  healthyResetMs?: number;
  /** First reconnect delay [1 000], doubling up to `backoffMaxMs` [60 000]. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Drain time of a connection replaced by a direct one [30 000]. */
  drainTimeoutMs?: number;
  /** How long an idle HTTP channel stays pooled [3 000, below engines' 5 s keep-alive]. */
  idleChannelTtlMs?: number;
}

/** Opens `SshTunnel`s; keys and pins are loaded once here, not per connection. */
export class SshTunnelFactory implements TunnelFactory {
  #settings: TunnelSettings;

  /** Reads and parses the SSH keys now (synchronously, once). */
  constructor(opts: SshTunnelFactoryOptions) {
    const logger = opts.logger ?? nullLogger;
    const auth = loadAuthSources({
      agentSocket: opts.agentSocket === undefined ? env("SSH_AUTH_SOCK") : opts.agentSocket,
      sshKeys: opts.sshKeys,
      defaultKeys: opts.defaultKeyFiles ?? defaultKeyFiles(env("HOME")),
      passphrase: opts.passphrase === undefined ? env("VASTPROXY_SSH_PASSPHRASE") : opts.passphrase,
      logger,
    });
    this.#settings = {
      connect: {
        username: opts.username ?? "root",
        auth,
        knownHosts: opts.insecureHostKeys ? null : new KnownHosts(opts.knownHostsPath, { logger }),
        readyTimeoutMs: opts.readyTimeoutMs ?? 10_000,
        keepaliveIntervalMs: opts.keepaliveIntervalMs ?? 10_000,
        keepaliveCountMax: opts.keepaliveCountMax ?? 3,
        logger,
      },
      clock: opts.clock ?? realClock,
      random: opts.random ?? Math.random,
      logger,
      directRetryMs: opts.directRetryMs ?? 60_000,
      healthyResetMs: opts.healthyResetMs ?? 60_000,
      backoffBaseMs: opts.backoffBaseMs ?? 1_000,
      backoffMaxMs: opts.backoffMaxMs ?? 60_000,
      drainTimeoutMs: opts.drainTimeoutMs ?? 30_000,
      idleChannelTtlMs: opts.idleChannelTtlMs,
    };
  }

  /** Starts a tunnel to `spec` in the background. */
  open(spec: BackendSpec, opts?: TunnelOptions): Tunnel {
    return new SshTunnel(spec, this.#settings, opts);
  }
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    // No --allow-env: behave as if unset.
    return undefined;
  }
}
