/**
 * Instance record → `BackendSpec`: eligibility, SSH endpoints, the LLM
 * server's port, engine, token. Pure functions of the record (DESIGN §4), so
 * the watcher can diff their results and tests can table-drive them.
 */
import type { BackendSpec, Engine, SshEndpoint } from "../core/backend_spec.ts";
import type { VastInstanceRecord } from "./schema.ts";

/** Port of vast's LLM templates when nothing else says otherwise. */
export const DEFAULT_REMOTE_PORT = 18000;
/** Ollama's own port; vast's Ollama template keeps it. */
export const OLLAMA_PORT = 11434;

/** What the user asked for on the command line. */
export interface ResolveOptions {
  /** `--remote-port`: overrides detection for every instance. */
  remotePort?: number | null;
  /** `--label`: only instances whose vast label equals it are eligible. */
  label?: string | null;
  /** `--instance`: when non-empty, only these ids are eligible. */
  instances?: readonly number[];
}

/** Resolves one validated record into the spec the rest of vastproxy uses. */
export function resolveInstance(
  record: VastInstanceRecord,
  opts: ResolveOptions = {},
): BackendSpec {
  const env = instanceEnv(record);
  const gpuName = record.gpu_name?.trim() || "unknown GPU";
  const numGpus = record.num_gpus ?? 0;
  const status = record.actual_status ?? "unknown";
  return {
    id: record.id,
    status,
    eligible: status === "running" && passesFilters(record, opts),
    // vast reports a cleared label as "" (and setLabel(null) sends ""): both mean none.
    label: record.label || null,
    displayName: `${record.id} ${gpuName}`,
    gpuName,
    numGpus,
    gpuLabel: numGpus > 0 ? `${gpuName} ×${numGpus}` : gpuName,
    dph: typeof record.dph_total === "number" && Number.isFinite(record.dph_total)
      ? record.dph_total
      : null,
    startedAt: startedAtMs(record.start_date),
    endpoints: sshEndpoints(record),
    remotePort: opts.remotePort ?? detectRemotePort(record, env),
    engine: detectEngine(env),
    token: record.jupyter_token || null,
    modelHint: modelHint(env),
  };
}

/** True when the record passes `--label` and `--instance` (status aside). */
export function passesFilters(record: VastInstanceRecord, opts: ResolveOptions): boolean {
  if (opts.label != null && record.label !== opts.label) return false;
  if (opts.instances && opts.instances.length > 0 && !opts.instances.includes(record.id)) {
    return false;
  }
  return true;
}

/**
 * `extra_env` as a map. vast sends `[key, value]` pairs (port requests look
 * like `["-p 8000:8000", "1"]` and are harmless here); a dict is accepted too.
 * Entries that are not string-keyed are ignored rather than failing the record.
 */
export function instanceEnv(record: VastInstanceRecord): Map<string, string> {
  const env = new Map<string, string>();
  const raw = record.extra_env;
  const entries: [unknown, unknown][] = Array.isArray(raw)
    ? raw.map((pair) => [pair[0], pair[1]])
    : Object.entries(raw ?? {});
  for (const [key, value] of entries) {
    if (typeof key !== "string" || value === undefined || value === null) continue;
    env.set(key, String(value));
  }
  return env;
}

/** Parses a port number in 1..65535 from a string or number, else null. */
function toPort(value: unknown): number | null {
  const n = typeof value === "number" ? value : Number(String(value ?? "").trim());
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : null;
}

/**
 * SSH endpoints in the order to try: direct (the instance's own mapped port
 * 22) first because it skips vast's gateway, then the gateway `ssh_port`, then
 * `ssh_port + 1` on jupyter images, where vast's CLI uses +1.
 */
export function sshEndpoints(record: VastInstanceRecord): SshEndpoint[] {
  const out: SshEndpoint[] = [];
  const ip = record.public_ipaddr?.trim();
  const directPort = toPort(record.ports?.["22/tcp"]?.[0]?.HostPort);
  if (ip && directPort !== null) out.push({ host: ip, port: directPort, path: "direct" });
  const gateway = record.ssh_host?.trim();
  const sshPort = toPort(record.ssh_port);
  if (gateway && sshPort !== null) {
    out.push({ host: gateway, port: sshPort, path: "proxy" });
    if ((record.image_runtype ?? "").includes("jupyter") && sshPort < 65535) {
      out.push({ host: gateway, port: sshPort + 1, path: "proxy" });
    }
  }
  return out;
}

/** Where an explicit `--port` may be given, in priority order. */
const PORT_SOURCES = ["SGLANG_ARGS", "VLLM_ARGS", "LLAMA_ARGS"] as const;

/** Finds `--port N` or `--port=N` as a whole option in a command line. */
export function portFromArgs(args: string | null | undefined): number | null {
  const m = /(?:^|\s)--port(?:=|\s+)(\d+)(?=\s|$|;|&)/.exec(args ?? "");
  return m ? toPort(m[1]) : null;
}

/** One `PORTAL_CONFIG` entry: `host:external:internal:path:name`. */
export interface PortalEntry {
  host: string;
  external: number | null;
  internal: number | null;
  path: string;
  name: string;
}

/** Parses `PORTAL_CONFIG` (`|`-separated entries); malformed entries are dropped. */
export function parsePortalConfig(text: string | null | undefined): PortalEntry[] {
  const out: PortalEntry[] = [];
  for (const part of (text ?? "").split("|")) {
    const fields = part.trim().split(":");
    if (fields.length < 5) continue;
    const [host, external, internal, path, ...name] = fields;
    // The name is free text and may itself contain ':'.
    out.push({
      host,
      external: toPort(external),
      internal: toPort(internal),
      path,
      name: name.join(":"),
    });
  }
  return out;
}

/**
 * The `PORTAL_CONFIG` entry that is the LLM API. Rule, most specific first:
 * a name naming an engine (vLLM, SGLang, llama — which covers Ollama) scores 3,
 * a name containing the word "API" scores 2, external port 8000 (where vast's
 * Caddy serves the model API) scores 1; the highest score wins, earlier entries
 * win ties, and an entry scoring 0 is never chosen (portal, Jupyter, Ray…).
 */
export function portalApiEntry(entries: readonly PortalEntry[]): PortalEntry | null {
  let best: PortalEntry | null = null;
  let bestScore = 0;
  for (const e of entries) {
    if (e.internal === null) continue;
    const score = /vllm|sglang|llama/i.test(e.name)
      ? 3
      : /\bapi\b/i.test(e.name)
      ? 2
      : e.external === 8000
      ? 1
      : 0;
    if (score > bestScore) {
      best = e;
      bestScore = score;
    }
  }
  return best;
}

/**
 * The LLM server's port inside the instance (without `--remote-port`):
 * an explicit `--port` in the engine args or onstart, else the internal port of
 * PORTAL_CONFIG's API entry, else 11434 for Ollama-style records without one,
 * else 18000 (vast's templates).
 */
export function detectRemotePort(record: VastInstanceRecord, env = instanceEnv(record)): number {
  for (const key of PORT_SOURCES) {
    const port = portFromArgs(env.get(key));
    if (port !== null) return port;
  }
  const fromOnstart = portFromArgs(record.onstart);
  if (fromOnstart !== null) return fromOnstart;
  const entry = portalApiEntry(parsePortalConfig(env.get("PORTAL_CONFIG")));
  if (entry?.internal != null) return entry.internal;
  if ([...env.keys()].some((k) => k.startsWith("OLLAMA"))) return OLLAMA_PORT;
  return DEFAULT_REMOTE_PORT;
}

/** The engine, from the env names vast's templates set (SGLang checked first). */
export function detectEngine(env: ReadonlyMap<string, string>): Engine {
  const keys = [...env.keys()];
  if (keys.some((k) => k.startsWith("SGLANG_"))) return "sglang";
  if (keys.some((k) => k.startsWith("VLLM_"))) return "vllm";
  if (keys.some((k) => k.startsWith("LLAMA_"))) return "llama.cpp";
  return "unknown";
}

/** Model name from the template env, or null. */
export function modelHint(env: ReadonlyMap<string, string>): string | null {
  for (const key of ["VLLM_MODEL", "SGLANG_MODEL", "LLAMA_MODEL", "MODEL_NAME"]) {
    const v = env.get(key)?.trim();
    if (v) return v;
  }
  return null;
}

/** Display strings for one instance (the `list` table and `--json`). */
export interface InstanceSummary {
  id: string;
  status: string;
  label: string;
  gpu: string;
  dph: string;
  direct: string;
  proxy: string;
  engine: string;
  port: string;
  age: string;
}

/** Formats a duration in ms as `45s`, `12m`, `3h05m`, `2d04h`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

/** Display strings for `spec` at time `now`; `-` marks an unknown value. */
export function instanceSummary(spec: BackendSpec, now: number): InstanceSummary {
  const direct = spec.endpoints.find((e) => e.path === "direct");
  const proxies = spec.endpoints.filter((e) => e.path === "proxy");
  // Gateway endpoints share a host; show it once with its ports: `ssh6.vast.ai:19840,19841`.
  const proxy = proxies.length === 0 ? "-" : [...new Set(proxies.map((e) => e.host))]
    .map((h) => `${h}:${proxies.filter((e) => e.host === h).map((e) => e.port).join(",")}`)
    .join(" ");
  return {
    id: String(spec.id),
    status: spec.eligible || spec.status !== "running" ? spec.status : `${spec.status} (filtered)`,
    label: spec.label ?? "-",
    gpu: spec.gpuLabel,
    dph: spec.dph === null ? "-" : spec.dph.toFixed(3),
    direct: direct ? `${direct.host}:${direct.port}` : "-",
    proxy,
    engine: spec.engine,
    port: String(spec.remotePort),
    age: spec.startedAt === null ? "-" : formatAge(now - spec.startedAt),
  };
}

/**
 * vast's `start_date` (seconds) in ms, or null: a finite number of seconds
 * can still overflow to Infinity in ms, which JSON (the fleet diff) turns
 * into null behind our back.
 */
function startedAtMs(startDate: number | null | undefined): number | null {
  if (typeof startDate !== "number") return null;
  const ms = Math.round(startDate * 1000);
  return Number.isFinite(ms) ? ms : null;
}
