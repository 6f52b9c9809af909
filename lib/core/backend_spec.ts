/**
 * What the rest of vastproxy needs to know about one vast.ai instance,
 * resolved from its API record by lib/vast/instance.ts. Everything downstream
 * (tunnels, backends, UI) reads this plain value, never the raw record.
 */

/** The LLM server software inside an instance. */
export type Engine = "sglang" | "vllm" | "llama.cpp" | "unknown";

/** How an SSH endpoint reaches the instance. */
export type SshPath = "direct" | "proxy";

/** One place to open SSH to. */
export interface SshEndpoint {
  /** Host name or IP (trimmed). */
  host: string;
  /** TCP port. */
  port: number;
  /** `direct` is the instance's own public port; `proxy` is vast's SSH gateway. */
  path: SshPath;
}

/** A resolved instance: enough to connect, route and display it. */
export interface BackendSpec {
  /** vast.ai instance id. */
  id: number;
  /** `actual_status` from the API (`running`, `loading`, …) or `unknown` when null. */
  status: string;
  /** True when the instance should be proxied (running and passing filters). */
  eligible: boolean;
  /** vast label, or null. */
  label: string | null;
  /** Short human name, e.g. `25078234 RTX 4090`. */
  displayName: string;
  /** GPU model name, e.g. `RTX 4090`. */
  gpuName: string;
  /** Number of GPUs. */
  numGpus: number;
  /** `RTX 4090 ×2` style label. */
  gpuLabel: string;
  /** Price in $/hour, or null when unknown. */
  dph: number | null;
  /** Instance start time in epoch ms, or null. */
  startedAt: number | null;
  /** SSH endpoints in the order to try: direct (if any) first, then proxy ones. */
  endpoints: SshEndpoint[];
  /** The LLM server's port inside the instance (loopback there). */
  remotePort: number;
  /** Detected engine. */
  engine: Engine;
  /** `jupyter_token`, sent as Bearer to the instance; a secret, never logged. */
  token: string | null;
  /** Model name hinted by the record's env (e.g. `VLLM_MODEL`), or null. */
  modelHint: string | null;
}

/**
 * The fields whose change means the backend must be rebuilt (new tunnel,
 * new credentials). Labels, prices and GPU names change nothing on the wire.
 */
export function connectionKey(spec: BackendSpec): string {
  return JSON.stringify([
    spec.endpoints.map((e) => `${e.path}:${e.host}:${e.port}`),
    spec.remotePort,
    spec.token,
  ]);
}
