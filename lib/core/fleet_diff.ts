/**
 * What one poll of the vast.ai API changed, as the watcher (lib/vast/)
 * reports it and the fleet (lib/proxy/) applies it. Declared here, in the
 * neutral core, so neither layer imports the other.
 */
import type { BackendSpec } from "./backend_spec.ts";

/** A spec before and after a poll. */
export interface SpecChange {
  before: BackendSpec;
  after: BackendSpec;
}

/** A change the fleet must act on. */
export interface FleetChange extends SpecChange {
  /** The connection (endpoints, port, token) differs: replace the tunnel. */
  rebuild: boolean;
}

/** What one poll changed. */
export interface FleetDiff {
  added: BackendSpec[];
  changed: FleetChange[];
  /** Display-only changes; never need a rebuild. */
  updated: SpecChange[];
  removed: BackendSpec[];
}
