/**
 * Where SSH authentication comes from, loaded once per factory.
 *
 * Order (first that the server accepts wins): the ssh-agent at
 * `SSH_AUTH_SOCK`, then each `--ssh-key` file, then the default files
 * `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist. Keys are read and
 * parsed here, once, so a connection storm never re-reads or re-decrypts
 * them; an encrypted key without a (correct) passphrase is skipped with a log
 * line naming the file — never the passphrase.
 */
// @ts-types="@types/ssh2"
import { utils } from "ssh2";
import type { AnyAuthMethod, ParsedKey } from "ssh2";
import type { Logger } from "../core/logger.ts";
import { nullLogger } from "../core/logger.ts";

/** One way to authenticate. */
export type AuthSource =
  | { kind: "agent"; socket: string }
  | { kind: "key"; path: string; key: ParsedKey };

/** Inputs of `loadAuthSources`; env and home are resolved by the caller. */
export interface LoadAuthOptions {
  /** ssh-agent socket path; null/empty means no agent. */
  agentSocket?: string | null;
  /** Explicit key files (`--ssh-key`), tried in order after the agent. */
  sshKeys?: readonly string[];
  /** Default key files, tried last when they exist (see `defaultKeyFiles`). */
  defaultKeys?: readonly string[];
  /** Passphrase for encrypted keys (`VASTPROXY_SSH_PASSPHRASE`); a secret. */
  passphrase?: string | null;
  /** Where skipped keys are reported. */
  logger?: Logger;
}

/** `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` under `home` (OpenSSH's order). */
export function defaultKeyFiles(home: string | undefined): string[] {
  if (!home) return [];
  return ["id_ed25519", "id_ecdsa", "id_rsa"].map((n) => `${home}/.ssh/${n}`);
}

/**
 * Reads and parses every usable key. Missing explicit keys and unparseable
 * or locked keys are logged and skipped (not thrown): one bad file must not
 * keep the agent or the other keys from working.
 */
export function loadAuthSources(opts: LoadAuthOptions): AuthSource[] {
  const logger = opts.logger ?? nullLogger;
  const sources: AuthSource[] = [];
  if (opts.agentSocket) sources.push({ kind: "agent", socket: opts.agentSocket });

  const seen = new Set<string>();
  const explicit = (opts.sshKeys ?? []).map((path) => ({ path, explicit: true }));
  const defaults = (opts.defaultKeys ?? []).map((path) => ({ path, explicit: false }));
  for (const { path, explicit: isExplicit } of [...explicit, ...defaults]) {
    if (seen.has(path)) continue;
    seen.add(path);
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (err) {
      // Default files are optional; an explicit one that is missing is the
      // user's mistake and worth an error line.
      if (isExplicit || !(err instanceof Deno.errors.NotFound)) {
        logger.log(isExplicit ? "error" : "warn", "cannot read SSH key; skipping it", {
          file: path,
          error: err instanceof Error ? err.name : String(err),
        });
      }
      continue;
    }
    const key = parsePrivateKey(text, opts.passphrase ?? undefined);
    if (key instanceof Error) {
      logger.log("warn", skipMessage(key, Boolean(opts.passphrase)), { file: path });
      continue;
    }
    sources.push({ kind: "key", path, key });
  }
  if (sources.length === 0) {
    logger.log("warn", "no SSH agent or key available; connections will fail to authenticate", {});
  }
  return sources;
}

function parsePrivateKey(text: string, passphrase: string | undefined): ParsedKey | Error {
  const parsed = utils.parseKey(text, passphrase);
  if (parsed instanceof Error) return parsed;
  // parseKey may return a list for files holding several keys; use the first.
  const key = Array.isArray(parsed) ? parsed[0] as ParsedKey | undefined : parsed;
  if (!key) return new Error("no key in file");
  if (!key.isPrivateKey()) return new Error("not a private key");
  return key;
}

function skipMessage(err: Error, hadPassphrase: boolean): string {
  const encrypted = /encrypted|passphrase/i.test(err.message);
  if (encrypted && !hadPassphrase) {
    return "SSH key is encrypted and VASTPROXY_SSH_PASSPHRASE is not set; skipping it";
  }
  if (encrypted) return "SSH key could not be decrypted with VASTPROXY_SSH_PASSPHRASE; skipping it";
  return `SSH key could not be parsed (${err.message}); skipping it`;
}

/** ssh2 `authHandler` entries for `username`, one per source, in order. */
export function authMethods(sources: readonly AuthSource[], username: string): AnyAuthMethod[] {
  return sources.map((s): AnyAuthMethod =>
    s.kind === "agent"
      ? { type: "agent", username, agent: s.socket }
      : { type: "publickey", username, key: s.key }
  );
}

/** `agent, /home/u/.ssh/id_ed25519` — what was tried, for error messages. */
export function describeSources(sources: readonly AuthSource[]): string {
  if (sources.length === 0) return "no agent or key available";
  return sources.map((s) => (s.kind === "agent" ? "agent" : s.path)).join(", ");
}
