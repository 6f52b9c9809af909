/**
 * Typed errors of the SSH tunnel layer. Each message says what failed, the
 * state, and what to do about it; none ever carries a secret (instance token,
 * key passphrase) — only ids, endpoints, file paths and fingerprints.
 */
import type { SshPath } from "../core/backend_spec.ts";

/** The instance offered a host key different from the one pinned for it. */
export class HostKeyMismatchError extends Error {
  /** vast.ai instance id whose pin did not match. */
  readonly instanceId: number;
  /** `host:port` that offered the key. */
  readonly endpoint: string;
  /** `SHA256:…` of the pinned key. */
  readonly expectedFingerprint: string;
  /** `SHA256:…` of the key the server offered. */
  readonly actualFingerprint: string;
  /** The known-hosts file holding the pin. */
  readonly knownHostsPath: string;

  /** Builds the error and its user-facing message. */
  constructor(fields: {
    instanceId: number;
    endpoint: string;
    expectedFingerprint: string;
    actualFingerprint: string;
    knownHostsPath: string;
  }) {
    super(
      `Cannot connect to instance ${fields.instanceId} at ${fields.endpoint} over SSH: ` +
        `host key changed (pinned ${fields.expectedFingerprint}, offered ${fields.actualFingerprint}); ` +
        `remove its line from ${fields.knownHostsPath} to accept the new key`,
    );
    this.name = "HostKeyMismatchError";
    this.instanceId = fields.instanceId;
    this.endpoint = fields.endpoint;
    this.expectedFingerprint = fields.expectedFingerprint;
    this.actualFingerprint = fields.actualFingerprint;
    this.knownHostsPath = fields.knownHostsPath;
  }
}

/** Why one endpoint could not be used. */
export type ConnectFailureKind =
  | "refused"
  | "timeout"
  | "auth"
  | "network"
  | "protocol"
  | "aborted";

/** One failed attempt on one endpoint. */
export interface ConnectAttempt {
  /** `host:port`. */
  endpoint: string;
  path: SshPath;
  kind: ConnectFailureKind;
  /** Short human reason, e.g. `connection refused`. */
  reason: string;
}

/** Every endpoint of an instance failed (or it has none). */
export class SshConnectError extends Error {
  /** vast.ai instance id. */
  readonly instanceId: number;
  /** What happened on each endpoint, in the order tried. */
  readonly attempts: readonly ConnectAttempt[];

  /** `cause` is the last underlying error, kept for debugging. */
  constructor(instanceId: number, attempts: ConnectAttempt[], options?: { cause?: unknown }) {
    super(connectMessage(instanceId, attempts), options);
    this.name = "SshConnectError";
    this.instanceId = instanceId;
    this.attempts = attempts;
  }

  /** True when at least one endpoint answered but refused our keys. */
  get authFailed(): boolean {
    return this.attempts.some((a) => a.kind === "auth");
  }
}

function connectMessage(instanceId: number, attempts: ConnectAttempt[]): string {
  if (attempts.length === 0) {
    return `Cannot connect to instance ${instanceId} over SSH: it has no SSH endpoint; ` +
      `check that the instance is running with SSH enabled`;
  }
  const tried = attempts.map((a) => `${a.endpoint} (${a.path}): ${a.reason}`).join("; ");
  const fix = attempts.some((a) => a.kind === "auth")
    ? "add your public key to the instance on vast.ai or pass --ssh-key"
    : "check that the instance is running and its SSH port is reachable";
  return `Cannot connect to instance ${instanceId} over SSH: ${tried}; ${fix}`;
}

/** `exec()` was called while the tunnel had no live connection. */
export class TunnelNotUpError extends Error {
  /** vast.ai instance id. */
  readonly instanceId: number;

  /** `state` is the tunnel's state at the time of the call. */
  constructor(instanceId: number, state: string) {
    super(`Cannot run a command on instance ${instanceId}: SSH tunnel is ${state}; wait for it`);
    this.name = "TunnelNotUpError";
    this.instanceId = instanceId;
  }
}

/** A remote command failed to start or did not finish in time. */
export class ExecError extends Error {
  /** vast.ai instance id. */
  readonly instanceId: number;
  /** True when the command hit its timeout (its channel was closed). */
  readonly timedOut: boolean;

  /** The command text is not included: it could in theory carry data the caller considers private. */
  constructor(
    instanceId: number,
    detail: string,
    options: { timedOut?: boolean; cause?: unknown } = {},
  ) {
    super(`Cannot run a command on instance ${instanceId} over SSH: ${detail}`, {
      cause: options.cause,
    });
    this.name = "ExecError";
    this.instanceId = instanceId;
    this.timedOut = options.timedOut ?? false;
  }
}
