/**
 * A backend's lifecycle state as a value. `Backend` keeps the raw inputs
 * (tunnel state, health verdict, drain flag, lifecycle phase), derives the
 * state from them with `deriveState()`, and replaces its state whole through
 * `transition()`, which says whether anything really changed. Keeping the
 * derivation pure means every combination of inputs has exactly one answer,
 * and tests can check it without a tunnel.
 */
import type { TunnelEvent, TunnelState } from "../tunnel/tunnel.ts";
import type { SshPath } from "../core/backend_spec.ts";
import type { ProbeResult } from "./health.ts";
import type { BackendState } from "./snapshot.ts";

/** What a backend reports: real state changes and SSH path switches only. */
export type BackendEvent =
  | { type: "state"; id: number; from: BackendState; to: BackendState; reason: string | null }
  | { type: "path"; id: number; from: SshPath; to: SshPath };

/** Consecutive failed checks that take a backend down (§6). */
export const FAILURES_TO_DOWN = 2;

/** The state of one backend, with when it began and why (never a secret). */
export type BackendStatus =
  | { name: "discovered"; since: number; reason: string | null }
  | { name: "connecting"; since: number; reason: string | null }
  | { name: "healthy"; since: number; reason: null }
  | { name: "unhealthy"; since: number; reason: string }
  | { name: "draining"; since: number; reason: string }
  | { name: "hostkey-mismatch"; since: number; reason: string }
  | { name: "removed"; since: number; reason: string | null };

/** A state without its start time: what `deriveState()` decides. */
// Distributes over the union so each variant keeps its own reason type.
export type StateTarget = BackendStatus extends infer S
  ? (S extends unknown ? Omit<S, "since"> : never)
  : never;

/** Where a backend is in its own life, independent of health. */
export type Phase =
  | "idle" // created, not started (display-only or not yet started)
  | "running" // tunnel opened, health checks running
  | "closing" // the fleet is removing it: in-flight requests finish
  | "closed"; // tunnel closed; terminal

/** Everything the state is derived from. */
export interface StateInputs {
  phase: Phase;
  /** The tunnel's state as last reported by its events, or null without a tunnel. */
  tunnel: TunnelState | null;
  /** Why the tunnel is not up (from its events), or null. */
  tunnelReason: string | null;
  /** Active-health verdict: null until the first decision after start. */
  health: boolean | null;
  /** Last probe failure, or null. */
  healthReason: string | null;
  /** Consecutive failed checks. */
  failures: number;
  /** Manual drain (`x` in the UI). */
  drained: boolean;
}

/**
 * The one place that decides a backend's state. Order matters: lifecycle
 * beats everything (a removed backend never comes back), a refused host key
 * beats a manual drain (the user must act on it), and the manual drain hides
 * health because the backend takes no traffic either way.
 */
export function deriveState(i: StateInputs): StateTarget {
  switch (i.phase) {
    case "closed":
      return { name: "removed", reason: "closed" };
    case "closing":
      return { name: "draining", reason: "removing from the fleet" };
    case "idle":
      return { name: "discovered", reason: null };
    case "running":
      break;
  }
  if (i.tunnel === "hostkey-mismatch") {
    return { name: "hostkey-mismatch", reason: i.tunnelReason ?? "host key changed" };
  }
  if (i.drained) return { name: "draining", reason: "drained by user" };
  if (i.tunnel === "up") {
    if (i.health === true) return { name: "healthy", reason: null };
    if (i.health === false) {
      return { name: "unhealthy", reason: i.healthReason ?? "health check failed" };
    }
    return { name: "connecting", reason: "waiting for the first health check" };
  }
  // The tunnel is not up. Before the backend was ever judged this is just the
  // first connect; after that, a lost connection means down at once (§6).
  if (i.health === null && i.tunnel !== "down") {
    return { name: "connecting", reason: i.tunnelReason };
  }
  return {
    name: "unhealthy",
    reason: i.tunnelReason ?? i.healthReason ?? "SSH connection not up",
  };
}

/** Inputs of a new backend. */
export const INITIAL_INPUTS: StateInputs = Object.freeze({
  phase: "idle",
  tunnel: null,
  tunnelReason: null,
  health: null,
  healthReason: null,
  failures: 0,
  drained: false,
});

/**
 * Folds one tunnel event into the inputs. A lost connection is down at once,
 * whatever the last check said (§6); a refused host key forgets the verdict
 * so a later fixed connection starts over as `connecting`.
 */
export function applyTunnelEvent(i: StateInputs, e: TunnelEvent): StateInputs {
  switch (e.type) {
    case "up":
      return { ...i, tunnel: "up", tunnelReason: null };
    case "down":
      return {
        ...i,
        tunnel: "down",
        tunnelReason: `SSH connection lost: ${e.reason}`,
        health: false,
        failures: 0,
      };
    case "hostkey-mismatch":
      return { ...i, tunnel: "hostkey-mismatch", tunnelReason: e.reason, health: null };
    case "closed":
      return { ...i, tunnel: "closed", tunnelReason: "SSH tunnel closed" };
  }
}

/**
 * Folds one active check into the inputs: up after one success, down after
 * `FAILURES_TO_DOWN` consecutive failures. One failure alone changes no
 * verdict — a single slow answer should not take traffic away.
 */
export function applyProbe(i: StateInputs, r: ProbeResult): StateInputs {
  if (r.ok) return { ...i, health: true, healthReason: null, failures: 0 };
  const failures = i.failures + 1;
  return {
    ...i,
    failures,
    healthReason: r.error,
    health: failures >= FAILURES_TO_DOWN ? false : i.health,
  };
}

/** Result of `transition()`: the state to keep and whether its name changed. */
export interface TransitionResult {
  status: BackendStatus;
  /** True only when the state name changed (a real transition worth an event). */
  changed: boolean;
}

/**
 * Replaces `current` with `target`. A new name starts a new `since`; the same
 * name with a new reason keeps `since` (the backend has been unhealthy since
 * the first failure, whatever the latest error says) and is not a change.
 * `removed` is terminal: nothing leaves it.
 */
export function transition(
  current: BackendStatus,
  target: StateTarget,
  now: number,
): TransitionResult {
  if (current.name === "removed") return { status: current, changed: false };
  if (current.name === target.name) {
    if (current.reason === target.reason) return { status: current, changed: false };
    return { status: { ...target, since: current.since } as BackendStatus, changed: false };
  }
  return { status: { ...target, since: now } as BackendStatus, changed: true };
}

/** The initial state of a new backend. */
export function initialStatus(now: number): BackendStatus {
  return { name: "discovered", since: now, reason: null };
}
