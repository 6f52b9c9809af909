/**
 * An end-to-end fleet on loopback: N real sshd processes (one per instance),
 * N fake OpenAI engines reached through them, a fake vast API listing the
 * instances, and a proxy started with the real wiring (`startProxy`).
 */
import type { ServeConfig } from "../../lib/app/serve_config.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { type RunningProxy, startProxy } from "../../lib/app/proxy_app.ts";
import { type FakeEngine, startFakeEngine } from "../../lib/sim/fake_engine.ts";
import {
  type FakeVastApi,
  makeInstanceRecord,
  startFakeVastApi,
} from "../../lib/sim/fake_vast_api.ts";
import { testServeConfig, testTunnelFactory } from "./config.ts";
import { freePort, generateKey, type Sshd, startSshd } from "./sshd.ts";

/** The vast API key every e2e fleet uses. */
export const E2E_API_KEY = "e2e-vast-key-7f3a9c1d";

/** A started end-to-end fleet. */
export interface E2eFleet {
  proxy: RunningProxy;
  api: FakeVastApi;
  engines: FakeEngine[];
  sshds: Sshd[];
  /** Instance ids, in the order of `engines`/`sshds`. */
  ids: number[];
  /** Instance tokens (jupyter_token), in the same order. */
  tokens: string[];
  logger: MemoryLogger;
  knownHosts: string;
  /** Waits until `n` backends are healthy (bounded). */
  waitHealthy(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Options of `startE2eFleet`. */
export interface E2eFleetOptions {
  /** One model per instance (also sets the instance count). */
  models: string[];
  /** `max_model_len` each instance's engine reports, in the order of `models` (default 32768). */
  maxModelLens?: number[];
  policy?: ServeConfig["policy"];
  stickyHeader?: string | null;
  authToken?: string | null;
  /** Health/metrics interval, ms (default 200). */
  healthIntervalMs?: number;
  /** Engine token delay for streams, ms (default 0). */
  tokenDelayMs?: number;
  tokens?: number;
  nvidiaSmi?: string | null;
  /** SSH keepalive interval, ms (default 1000). */
  keepaliveIntervalMs?: number;
  /** Missed keepalives before the connection counts as lost (default 3). */
  keepaliveCountMax?: number;
  /** `--max-body`, bytes (default 8 MiB). */
  maxBodyBytes?: number;
  /** Encrypt the client key with this passphrase (default: unencrypted). */
  keyPassphrase?: string;
  /**
   * The SSH port the vast API lists for instance `i`, given its sshd's port
   * (default: that port). Lets a test put something (a TCP man-in-the-middle)
   * between the proxy and an sshd.
   */
  sshPortFor?: (sshdPort: number, i: number) => number;
}

/** Two fake GPUs, the way nvidia-smi prints them with --format=csv,noheader,nounits. */
export const FAKE_NVIDIA_SMI = `#!/bin/sh
echo "0, NVIDIA H100 80GB HBM3, 37, 41234, 81559, 54, 312.45"
echo "1, NVIDIA H100 80GB HBM3, 12, 1024, 81559, 41, [N/A]"
`;

/** Starts everything; `close()` stops everything, in reverse order. */
export async function startE2eFleet(opts: E2eFleetOptions): Promise<E2eFleet> {
  const cleanups: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  };
  try {
    const dir = await Deno.makeTempDir({ prefix: "vastproxy-e2e-" });
    cleanups.push(() => Deno.remove(dir, { recursive: true }));
    const clientKey = `${dir}/id_ed25519`;
    await generateKey(clientKey, opts.keyPassphrase ?? "");
    const ids: number[] = [];
    const tokens: string[] = [];
    const engines: FakeEngine[] = [];
    const sshds: Sshd[] = [];
    const records = [];
    for (const [i, model] of opts.models.entries()) {
      const id = 3_100_001 + i;
      const token = crypto.randomUUID().replaceAll("-", "") +
        crypto.randomUUID().replaceAll("-", "");
      const engine = await startFakeEngine({
        model,
        engine: "vllm",
        token,
        tokenDelayMs: opts.tokenDelayMs ?? 0,
        tokens: opts.tokens,
        maxModelLen: opts.maxModelLens?.[i],
      });
      cleanups.push(() => engine.close());
      const sshd = await startSshd({
        clientKeyPath: clientKey,
        nvidiaSmi: opts.nvidiaSmi === undefined ? FAKE_NVIDIA_SMI : opts.nvidiaSmi,
      });
      cleanups.push(() => sshd.stop());
      ids.push(id);
      tokens.push(token);
      engines.push(engine);
      sshds.push(sshd);
      records.push(makeInstanceRecord({
        id,
        label: "e2e",
        public_ipaddr: "127.0.0.1\n",
        ports: {
          "22/tcp": [{
            HostIp: "0.0.0.0",
            HostPort: String(opts.sshPortFor?.(sshd.port, i) ?? sshd.port),
          }],
        },
        // vast's proxy endpoint: nothing listens there, so direct must win.
        ssh_host: "127.0.0.1",
        ssh_port: freePort(),
        image_runtype: "ssh_direc ssh_proxy",
        jupyter_token: token,
        extra_env: [
          ["VLLM_MODEL", model],
          ["VLLM_ARGS", `--host 127.0.0.1 --port ${engine.port}`],
        ],
        onstart: null,
      }));
    }
    const api = startFakeVastApi({ apiKey: E2E_API_KEY, instances: records });
    cleanups.push(() => api.close());
    const knownHosts = `${dir}/known_hosts`;
    const logger = new MemoryLogger();
    const config = testServeConfig({
      apiKey: E2E_API_KEY,
      apiUrl: api.url,
      authToken: opts.authToken ?? null,
      sshKeys: [clientKey],
      knownHosts,
      policy: opts.policy ?? "least-inflight",
      stickyHeader: opts.stickyHeader ?? null,
      pollIntervalMs: 300,
      healthIntervalMs: opts.healthIntervalMs ?? 200,
      maxBodyBytes: opts.maxBodyBytes ?? 8 * 1024 * 1024,
      drainTimeoutMs: 2_000,
    });
    const tunnelFactory = testTunnelFactory(clientKey, knownHosts, {
      passphrase: opts.keyPassphrase ?? null,
      username: Deno.env.get("USER") ?? "root",
      logger,
      keepaliveIntervalMs: opts.keepaliveIntervalMs ?? 1_000,
      keepaliveCountMax: opts.keepaliveCountMax ?? 3,
    });
    const proxy = await startProxy(config, { logger, tunnelFactory });
    cleanups.push(() => proxy.shutdown(500));
    const fleet: E2eFleet = {
      proxy,
      api,
      engines,
      sshds,
      ids,
      tokens,
      logger,
      knownHosts,
      async waitHealthy(n, timeoutMs = 15_000) {
        const deadline = Date.now() + timeoutMs;
        while (proxy.status().counts.healthy < n) {
          if (Date.now() > deadline) {
            const states = proxy.status().backends.map((b) => `${b.id}:${b.state}(${b.reason})`);
            throw new Error(`timed out waiting for ${n} healthy backends: ${states.join(", ")}`);
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      },
      close,
    };
    return fleet;
  } catch (err) {
    await close();
    throw err;
  }
}

/** Polls `check` every 20 ms until true, or throws naming `what` after `timeoutMs`. */
export async function eventually(what: string, check: () => boolean, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
