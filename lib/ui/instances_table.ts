/**
 * `vastproxy list`: the account's instances as a table, or as JSON for
 * scripts (`list --json`). Both render resolved `BackendSpec`s, never raw
 * records, so what is shown is exactly what the proxy would use.
 */
import type { BackendSpec } from "../core/backend_spec.ts";
import { instanceSummary } from "../vast/instance.ts";
import { type ColumnDef, renderRows } from "./table.ts";
import type { Style } from "./ansi.ts";

/** Rendering options. */
export interface InstanceTableOptions {
  /** ANSI colours (status, header); off for pipes and NO_COLOR. */
  color: boolean;
  /** Current time in epoch ms, for the age column. */
  now: number;
  /** Maximum line width (default 200, as for `vastproxy status`). */
  width?: number;
}

/** Green when it will be proxied, yellow while running but filtered out, dim otherwise. */
function statusStyle(spec: BackendSpec): Style {
  return spec.eligible ? "green" : spec.status === "running" ? "yellow" : "dim";
}

// Same renderer as the status table (lib/ui/table.ts). Priorities decide what
// a narrow width keeps: identity and status first, SSH endpoints next.
const COLUMNS: ColumnDef<BackendSpec>[] = [
  { title: "ID", align: "right", priority: 0, cell: (s) => ({ text: String(s.id) }) },
  {
    title: "STATUS",
    align: "left",
    priority: 1,
    cell: (s, now) => ({ text: instanceSummary(s, now).status, style: statusStyle(s) }),
  },
  {
    title: "LABEL",
    align: "left",
    priority: 5,
    flexMin: 8,
    cell: (s, now) => ({ text: instanceSummary(s, now).label }),
  },
  { title: "GPU", align: "left", priority: 4, flexMin: 8, cell: (s) => ({ text: s.gpuLabel }) },
  {
    title: "$/H",
    align: "right",
    priority: 7,
    cell: (s, now) => ({ text: instanceSummary(s, now).dph }),
  },
  {
    title: "DIRECT SSH",
    align: "left",
    priority: 2,
    cell: (s, now) => ({ text: instanceSummary(s, now).direct }),
  },
  {
    title: "PROXY SSH",
    align: "left",
    priority: 3,
    cell: (s, now) => ({ text: instanceSummary(s, now).proxy }),
  },
  { title: "ENGINE", align: "left", priority: 6, cell: (s) => ({ text: s.engine }) },
  { title: "PORT", align: "right", priority: 6, cell: (s) => ({ text: String(s.remotePort) }) },
  {
    title: "AGE",
    align: "right",
    priority: 8,
    cell: (s, now) => ({ text: instanceSummary(s, now).age }),
  },
];

/** Printed by `vastproxy list` when no instance passes the filters. */
export const NO_INSTANCES = "no instances (none on the account, or none match --label/--instance)";

/** The instances as a table, one row per instance, in the order given. */
export function renderInstanceTable(
  specs: readonly BackendSpec[],
  opts: InstanceTableOptions,
): string {
  // A header over nothing reads like a rendering bug; say it in words.
  if (specs.length === 0) return NO_INSTANCES;
  return renderRows(specs, COLUMNS, opts).join("\n");
}

/**
 * One instance in `list --json`. Field names are a contract for scripts and
 * follow /vastproxy/status (camelCase, `port`); the instance token is
 * deliberately absent.
 */
export interface InstanceJson {
  id: number;
  status: string;
  /** True when `serve` would proxy it (running and passing the filters). */
  eligible: boolean;
  label: string | null;
  gpuName: string;
  numGpus: number;
  gpuLabel: string;
  dph: number | null;
  /** Epoch ms, or null. */
  startedAt: number | null;
  /** `host:port` of the direct SSH endpoint, or null. */
  sshDirect: string | null;
  /** `host:port` of each vast SSH gateway endpoint, in the order tried. */
  sshProxy: string[];
  engine: string;
  /** The LLM server's port inside the instance. */
  port: number;
  modelHint: string | null;
}

/** The instances as JSON-ready values (the caller stringifies them). */
export function instancesJson(specs: readonly BackendSpec[]): InstanceJson[] {
  // Fields are picked one by one, never spread, so a secret added to
  // BackendSpec later cannot leak into `list --json` by accident.
  return specs.map((spec) => {
    const direct = spec.endpoints.find((e) => e.path === "direct");
    return {
      id: spec.id,
      status: spec.status,
      eligible: spec.eligible,
      label: spec.label,
      gpuName: spec.gpuName,
      numGpus: spec.numGpus,
      gpuLabel: spec.gpuLabel,
      dph: spec.dph,
      startedAt: spec.startedAt,
      sshDirect: direct ? `${direct.host}:${direct.port}` : null,
      sshProxy: spec.endpoints.filter((e) => e.path === "proxy").map((e) => `${e.host}:${e.port}`),
      engine: spec.engine,
      port: spec.remotePort,
      modelHint: spec.modelHint,
    };
  });
}
