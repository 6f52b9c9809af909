/**
 * Opens one SSH tunnel by hand and sends one request through it over an SSH
 * channel — the same path every proxied request takes — a quick way to see
 * lib/tunnel/ and lib/http1/ work against any sshd (a local one, or a vast
 * instance). For a local TCP port forward, use `ssh -L` (docs/TUNNEL.md).
 *
 *     deno run --allow-net --allow-read --allow-write --allow-env \
 *       scripts/open_tunnel.ts HOST PORT REMOTE_PORT KEY [URL_PATH]
 *
 * HOST:PORT is the SSH server, REMOTE_PORT the HTTP server's port as seen
 * from that machine, KEY a private key file. Host keys are pinned in a fresh
 * temp file (this is a demo), under instance id 0. User: $TUNNEL_USER or root.
 */
import { MemoryLogger } from "../lib/core/logger.ts";
import { readAll } from "../lib/http1/types.ts";
import { queryGpus } from "../lib/tunnel/gpu.ts";
import { SshTunnelFactory } from "../lib/tunnel/factory.ts";
import type { TunnelEvent } from "../lib/tunnel/tunnel.ts";

const USAGE = "usage: open_tunnel.ts HOST PORT REMOTE_PORT KEY [URL_PATH]";

async function main(args: string[]): Promise<number> {
  const [host, port, remotePort, key, urlPath = "/"] = args;
  if (!host || !Number(port) || !Number(remotePort) || !key) {
    console.error(USAGE);
    return 2;
  }
  const dir = await Deno.makeTempDir({ prefix: "open-tunnel-" });
  const logger = new MemoryLogger();
  const factory = new SshTunnelFactory({
    sshKeys: [key],
    knownHostsPath: `${dir}/known_hosts`,
    insecureHostKeys: false,
    username: Deno.env.get("TUNNEL_USER") ?? "root",
    logger,
  });
  const tunnel = factory.open({
    id: 0,
    status: "running",
    eligible: true,
    label: null,
    displayName: "manual",
    gpuName: "",
    numGpus: 0,
    gpuLabel: "",
    dph: null,
    startedAt: null,
    endpoints: [{ host, port: Number(port), path: "direct" }],
    remotePort: Number(remotePort),
    engine: "unknown",
    token: null,
    modelHint: null,
  });
  try {
    // Wait for the first verdict: up, or a failure with its reason.
    const first = await new Promise<TunnelEvent>((resolve) => {
      const off = tunnel.subscribe((e) => {
        off();
        resolve(e);
      });
    });
    console.log("event:", JSON.stringify(first));
    if (first.type !== "up") return 1;
    const t0 = performance.now();
    const res = await tunnel.request({ method: "GET", target: urlPath, headers: [], body: null });
    const body = new TextDecoder().decode(await readAll(res, 1024 * 1024));
    const ms = (performance.now() - t0).toFixed(1);
    console.log(`GET ${urlPath} → ${res.status} in ${ms} ms, ${body.length} chars:`);
    console.log(body.slice(0, 500));
    console.log("nvidia-smi:", JSON.stringify(await queryGpus(tunnel, { timeoutMs: 5_000 })));
    return 0;
  } finally {
    await tunnel.close();
    await Deno.remove(dir, { recursive: true });
    for (const r of logger.records) console.error(`[${r.level}] ${r.msg}`, r.fields);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
