/**
 * `vastproxy list`: the account's instances as a table, or as JSON for
 * scripts (`list --json`). Both render resolved `BackendSpec`s, never raw
 * records, so what is shown is exactly what the proxy would use.
 */
import Table from "cli-table3";
import type { BackendSpec } from "../core/backend_spec.ts";
import { instanceSummary } from "../vast/instance.ts";
import { safeDeep } from "./terminal_text.ts";

/** Rendering options. */
export interface InstanceTableOptions {
  /** ANSI colours (status, header); off for pipes and NO_COLOR. */
  color: boolean;
  /** Current time in epoch ms, for the age column. */
  now: number;
}

const HEAD = [
  "id",
  "status",
  "label",
  "GPU × n",
  "$/h",
  "direct SSH",
  "proxy SSH",
  "engine",
  "port",
  "age",
];

const GREEN = "\x1b[32m";
const YELLOW = "\x1b[33m";
const DIM = "\x1b[2m";
const RESET = "\x1b[0m";

/** The instances as a boxed table, one row per instance, in the order given. */
export function renderInstanceTable(
  specs: readonly BackendSpec[],
  opts: InstanceTableOptions,
): string {
  const table = new Table({
    head: HEAD,
    // cli-table3 colours head and border by default; empty lists turn it off.
    style: opts.color ? { head: ["cyan"], border: ["grey"] } : { head: [], border: [] },
  });
  for (const spec of specs) {
    // Labels, GPU names, hosts and statuses are the vast API's words: strip
    // control and escape sequences (list --json keeps them exact).
    const s = safeDeep(instanceSummary(spec, opts.now));
    table.push([
      s.id,
      opts.color ? paintStatus(spec, s.status) : s.status,
      s.label,
      s.gpu,
      s.dph,
      s.direct,
      s.proxy,
      s.engine,
      s.port,
      s.age,
    ]);
  }
  return table.toString();
}

/** Green when it will be proxied, yellow while running but filtered out, dim otherwise. */
function paintStatus(spec: BackendSpec, text: string): string {
  const colour = spec.eligible ? GREEN : spec.status === "running" ? YELLOW : DIM;
  return `${colour}${text}${RESET}`;
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
