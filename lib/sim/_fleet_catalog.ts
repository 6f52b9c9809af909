/**
 * What the simulated fleet's instances look like: machine profiles (GPU,
 * engine, model, price), the env vast's LLM templates set, and records shaped
 * like the real fixture that point at the simulated servers. Private to
 * lib/sim/fleet.ts; kept apart so the fleet file holds only its lifecycle.
 */
// @ts-types="@types/ssh2"
import { utils } from "ssh2";
import type { FakeEngineKind } from "./fake_engine.ts";
import { type FakeInstanceRecord, makeInstanceRecord } from "./fake_vast_api.ts";

/** The LLM port inside every simulated instance, as vast's LLM templates use. */
export const SIM_REMOTE_PORT = 18000;

/** A machine type with the engine and model that fit on it. */
export interface Profile {
  gpu: string;
  gpus: number;
  /** MiB per GPU as vast reports it. */
  ram: number;
  /** Name as nvidia-smi prints it. */
  smiName: string;
  dphPerGpu: number;
  engine: FakeEngineKind;
  model: string;
}

/**
 * Machine types, cycled through by instance index. Models repeat across
 * them so the proxy has something to balance.
 */
export const PROFILES: readonly Profile[] = [
  p("RTX 4090", 1, 24564, "NVIDIA GeForce RTX 4090", 0.38, "vllm", "Qwen/Qwen3-8B"),
  p("H100 SXM", 2, 81559, "NVIDIA H100 80GB HBM3", 2.2, "sglang", "Qwen/Qwen3-32B"),
  p("A100 SXM4", 1, 81920, "NVIDIA A100-SXM4-80GB", 0.9, "llama.cpp", "gemma-3-27b-it-Q4_K_M"),
  p("H100 SXM", 4, 81559, "NVIDIA H100 80GB HBM3", 2.1, "vllm", "meta-llama/Llama-3.3-70B"),
  p("RTX 3090", 2, 24576, "NVIDIA GeForce RTX 3090", 0.2, "vllm", "Qwen/Qwen3-8B"),
  p("L40S", 1, 46068, "NVIDIA L40S", 0.65, "sglang", "Qwen/Qwen3-8B"),
  p("A100 SXM4", 2, 81920, "NVIDIA A100-SXM4-80GB", 0.95, "vllm", "Qwen/Qwen3-32B"),
  p("RTX 5090", 1, 32607, "NVIDIA GeForce RTX 5090", 0.6, "llama.cpp", "gemma-3-27b-it-Q4_K_M"),
];

function p(
  gpu: string,
  gpus: number,
  ram: number,
  smiName: string,
  dphPerGpu: number,
  engine: FakeEngineKind,
  model: string,
): Profile {
  return { gpu, gpus, ram, smiName, dphPerGpu, engine, model };
}

const LABELS = ["llm-pool-a", "llm-pool-a", "llm-pool-b", ""];
const PLACES = ["Bulgaria, BG", "Texas, US", "Quebec, CA", "Finland, FI", "Taiwan, TW"];

/** What vast's templates put in `extra_env` for each engine. */
function engineEnv(kind: FakeEngineKind, model: string): [string, string][] {
  const portal = (
    name: string,
  ) => [
    "PORTAL_CONFIG",
    `localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/docs:${name}`,
  ];
  switch (kind) {
    case "vllm":
      return [
        ["VLLM_MODEL", model],
        ["VLLM_ARGS", `--max-model-len 32000 --host 127.0.0.1 --port ${SIM_REMOTE_PORT}`],
        portal("vLLM API") as [string, string],
      ];
    case "sglang":
      return [
        ["SGLANG_MODEL", model],
        ["SGLANG_ARGS", `--context-length 32768 --host 127.0.0.1 --port ${SIM_REMOTE_PORT}`],
        portal("SGLang API") as [string, string],
      ];
    case "llama.cpp":
      return [
        ["LLAMA_MODEL", model],
        ["LLAMA_ARGS", `-ngl 999 -c 16384 --host 127.0.0.1 --port ${SIM_REMOTE_PORT}`],
        portal("llama.cpp API") as [string, string],
      ];
  }
}

const IMAGES: Record<FakeEngineKind, [string, string]> = {
  vllm: ["vLLM", "vastai/vllm:v0.25.1-cuda-12.9"],
  sglang: ["SGLang", "lmsysorg/sglang:v0.5.4-cu129"],
  "llama.cpp": ["llama.cpp", "ghcr.io/ggml-org/llama.cpp:server-cuda"],
};

/** What one simulated instance's record needs besides its profile. */
export interface SimRecordInput {
  id: number;
  /** Position in the fleet: picks label, place and display ports. */
  index: number;
  profile: Profile;
  /** The instance's jupyter_token. */
  token: string;
  /** Port of its simulated SSH server. */
  sshPort: number;
  path: "direct" | "proxy";
  status: "running" | "loading";
  /** Epoch ms (for start_date). */
  now: number;
  random: () => number;
}

/** A record shaped like the real fixture, pointing at the simulated servers. */
export function simRecord(
  { id, index, profile: prof, token, sshPort, path, status, now, random }: SimRecordInput,
): FakeInstanceRecord {
  const [templateName, image] = IMAGES[prof.engine];
  const dph = prof.dphPerGpu * prof.gpus * (0.9 + random() * 0.2);
  const ports: Record<string, unknown> = {
    "1111/tcp": [{ HostIp: "0.0.0.0", HostPort: String(40_000 + index) }],
    "8000/tcp": [{ HostIp: "0.0.0.0", HostPort: String(41_000 + index) }],
  };
  if (path === "direct") {
    ports["22/tcp"] = [
      { HostIp: "0.0.0.0", HostPort: String(sshPort) },
      { HostIp: "::", HostPort: String(sshPort) },
    ];
  }
  return makeInstanceRecord({
    id,
    machine_id: 40_000 + Math.floor(random() * 9_000),
    host_id: 300_000 + Math.floor(random() * 9_000),
    ...statusFields(status, image),
    label: LABELS[index % LABELS.length],
    template_name: templateName,
    image_uuid: image,
    image_runtype: path === "direct" ? "jupyter_direc ssh_direc ssh_proxy" : "ssh_proxy",
    extra_env: engineEnv(prof.engine, prof.model),
    jupyter_token: token,
    public_ipaddr: "127.0.0.1\n",
    // vast's SSH gateway endpoint; here the same simulated server.
    ssh_host: "127.0.0.1",
    ssh_port: sshPort,
    ports,
    gpu_name: prof.gpu,
    num_gpus: prof.gpus,
    gpu_ram: prof.ram,
    gpu_totalram: prof.ram * prof.gpus,
    dph_base: Math.round(dph * 0.95 * 1000) / 1000,
    dph_total: Math.round(dph * 10_000) / 10_000,
    geolocation: PLACES[index % PLACES.length],
    reliability2: 0.97 + random() * 0.029,
    start_date: now / 1000 - random() * 86_400 * 3,
  });
}

/** The status fields vast reports while an image loads, and once it runs. */
export function statusFields(
  status: "running" | "loading",
  image: string,
): Record<string, unknown> {
  return status === "running"
    ? {
      actual_status: "running",
      cur_state: "running",
      next_state: "running",
      intended_status: "running",
      status_msg: `success, running ${image}`,
    }
    : {
      actual_status: "loading",
      cur_state: "running",
      next_state: "running",
      intended_status: "running",
      status_msg: `Pulling image ${image}: downloading layers`,
    };
}

/**
 * A fresh ed25519 key pair in OpenSSH format. About one in 200 keys that
 * ssh2's generator makes under Deno carries a 31-byte public key (a leading
 * zero byte lost on export) which ssh2 itself then refuses to parse; at 64
 * instances that would fail one start in four, so such keys are redrawn.
 */
export function ed25519KeyPair(comment?: string): { private: string; public: string } {
  for (;;) {
    const pair = utils.generateKeyPairSync("ed25519", comment ? { comment } : undefined);
    const ok = [pair.private, pair.public].every((k) => !(utils.parseKey(k) instanceof Error));
    if (ok) return pair;
  }
}
