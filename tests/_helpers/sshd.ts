/**
 * A real OpenSSH server on 127.0.0.1 for integration tests: its own temp dir,
 * keys, config and port; stopped by pid (with its per-connection children),
 * never by name.
 */

import type { BackendSpec, SshEndpoint } from "../../lib/core/backend_spec.ts";
import { connectEndpoint, type Connection, type SshAlgorithms } from "../../lib/tunnel/connect.ts";
import { loadAuthSources } from "../../lib/tunnel/keys.ts";
import type { Client, ClientChannel } from "ssh2";

/** Where the system sshd lives. */
export const SSHD_PATH = "/usr/sbin/sshd";

/** Options of `startSshd`. */
export interface SshdOptions {
  /** Port to listen on; default a free one. */
  port?: number;
  /** Reuse this host private key (its `.pub` beside it) instead of a new one. */
  hostKeyPath?: string;
  /** Reuse this client private key (its `.pub` is authorized) instead of a new one. */
  clientKeyPath?: string;
  /** Extra `authorized_keys` text (public key lines). */
  authorizedKeys?: string;
  /** Body of a fake `nvidia-smi` script on the session PATH; null/absent: none. */
  nvidiaSmi?: string | null;
  /** Extra `sshd_config` lines (e.g. `RekeyLimit 64K`). */
  extraConfig?: string[];
}

/** A running sshd. */
export interface Sshd {
  port: number;
  /** Temp dir with config, keys, `bin/`. */
  dir: string;
  /** Private key that may log in. */
  clientKeyPath: string;
  /** Host private key path. */
  hostKeyPath: string;
  /** Host public key line (`ssh-ed25519 AAAA…`). */
  hostKey: string;
  /** Pid of the listening sshd. */
  pid(): number;
  /** Kills sshd and its sessions, waits for exit, removes the temp dir. */
  stop(): Promise<void>;
  /** Sends `signal` to sshd and all its descendants (sessions). */
  kill(signal: Deno.Signal): Promise<void>;
  /** Sends `signal` only to the per-connection session processes. */
  signalSessions(signal: Deno.Signal): Promise<number>;
  /** Starts sshd again on the same port with the same keys (after kill). */
  restart(): Promise<void>;
}

/**
 * True when tests may use a real sshd. When it is missing, CI (`CI=true`)
 * must fail rather than silently skip, and a local run says so loudly.
 */
export function sshdAvailable(): boolean {
  let present = false;
  try {
    present = Deno.statSync(SSHD_PATH).isFile;
  } catch (err) {
    // Only "not there" means skip; a missing permission must not silently
    // turn the integration tests off.
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new Error(`cannot check ${SSHD_PATH} (grant --allow-read=${SSHD_PATH}): ${err}`);
    }
  }
  if (present) return true;
  if (Deno.env.get("CI") === "true") {
    throw new Error(`${SSHD_PATH} is required in CI (CI=true) for the SSH integration tests`);
  }
  console.warn(
    `\n!!!!!!!! ${SSHD_PATH} not found: SKIPPING real-sshd tunnel tests (install openssh-server) !!!!!!!!\n`,
  );
  return false;
}

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Generates an unencrypted ed25519 key pair at `path` / `path.pub`. */
export async function generateKey(path: string, passphrase = ""): Promise<void> {
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", path]);
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Pids of every descendant of `pid` (sshd forks a process or two per
 * connection). Uses `ps` because Deno only reads /proc with --allow-all.
 */
async function descendants(pid: number): Promise<number[]> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("ps", { args: ["-e", "-o", "pid=,ppid="], stderr: "null" })
      .output();
  } catch (err) {
    // Without ps only the listener can be stopped; its sessions end when
    // their clients disconnect. Say so rather than fail the cleanup.
    console.warn(`sshd helper: cannot list sshd sessions (grant --allow-run=…,ps,kill): ${err}`);
    return [];
  }
  const children = new Map<number, number[]>();
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const [child, parent] = line.trim().split(/\s+/).map(Number);
    if (!child || parent === undefined) continue;
    children.set(parent, [...(children.get(parent) ?? []), child]);
  }
  const found: number[] = [];
  const queue = [pid];
  while (queue.length) {
    for (const c of children.get(queue.shift()!) ?? []) {
      found.push(c);
      queue.push(c);
    }
  }
  return found;
}

/**
 * Sends `signal` to `pids`. Deno.kill needs unscoped --allow-run, so with a
 * scoped one (`--allow-run=…,kill`) this falls back to the kill binary.
 */
async function signalPids(pids: number[], signal: Deno.Signal): Promise<void> {
  if (pids.length === 0) return;
  try {
    for (const pid of pids) {
      try {
        Deno.kill(pid, signal);
      } catch (err) {
        if (err instanceof Deno.errors.NotCapable || err instanceof Deno.errors.PermissionDenied) {
          throw err;
        }
        // Otherwise the process is already gone.
      }
    }
    return;
  } catch {
    // Fall through to the kill binary.
  }
  await new Deno.Command("kill", {
    args: ["-s", signal.replace(/^SIG/, ""), ...pids.map(String)],
    stdout: "null",
    stderr: "null",
  }).output();
}

/**
 * Writes a loopback-only sshd config for tests and the benchmark: key auth
 * with `<dir>/authorized_keys`, forwarding allowed, sessions with
 * `<dir>/bin` first on PATH (where a fake nvidia-smi goes). `extra` lines are
 * appended (e.g. `MaxStartups 1000`).
 */
export async function writeSshdConfig(
  path: string,
  opts: { port: number; hostKeyPath: string; dir: string; extra?: string[] },
): Promise<void> {
  const { port, hostKeyPath, dir } = opts;
  await Deno.writeTextFile(
    path,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKeyPath}`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      `PidFile ${dir}/sshd.pid`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "PermitRootLogin yes",
      "AllowTcpForwarding yes",
      // SHLVL=1 makes bash treat the command shell as nested, so it skips
      // the "run by sshd" ~/.bashrc: the test host's interactive setup
      // (pyenv rehash locks, banners) must not leak into exec results or
      // stall them, as it would not on a vast instance.
      `SetEnv PATH=${dir}/bin:/usr/bin:/bin SHLVL=1`,
      ...(opts.extra ?? []),
      "",
    ].join("\n"),
  );
}

/** Starts sshd; resolves once it accepts TCP connections (within 5 s). */
export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  try {
    Deno.mkdirSync("/run/sshd", { recursive: true });
  } catch {
    // Not root or no /run: sshd itself will say what is wrong.
  }
  const dir = await Deno.makeTempDir({ prefix: "vastproxy-sshd-" });
  const hostKeyPath = opts.hostKeyPath ?? `${dir}/host_ed25519`;
  if (!opts.hostKeyPath) await generateKey(hostKeyPath);
  const clientKeyPath = opts.clientKeyPath ?? `${dir}/client_ed25519`;
  if (!opts.clientKeyPath) await generateKey(clientKeyPath);
  const authorized = (await Deno.readTextFile(`${clientKeyPath}.pub`)) +
    (opts.authorizedKeys ?? "");
  await Deno.writeTextFile(`${dir}/authorized_keys`, authorized);
  await Deno.mkdir(`${dir}/bin`);
  if (opts.nvidiaSmi != null) {
    await Deno.writeTextFile(`${dir}/bin/nvidia-smi`, `#!/bin/sh\n${opts.nvidiaSmi}\n`, {
      mode: 0o755,
    });
    await Deno.chmod(`${dir}/bin/nvidia-smi`, 0o755);
  }
  const port = opts.port ?? freePort();
  const config = `${dir}/sshd_config`;
  await writeSshdConfig(config, { port, hostKeyPath, dir, extra: opts.extraConfig });
  const hostKey = (await Deno.readTextFile(`${hostKeyPath}.pub`)).trim();

  let child: Deno.ChildProcess | undefined;
  let stderrText = "";
  let stderrDone: Promise<void> = Promise.resolve();

  const launch = async () => {
    stderrText = "";
    child = new Deno.Command(SSHD_PATH, {
      args: ["-D", "-e", "-f", config],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // sshd -e logs every connection to stderr; it must be drained or the
    // pipe fills and sshd blocks.
    const reader = child.stderr.pipeThrough(new TextDecoderStream());
    stderrDone = (async () => {
      for await (const chunk of reader) stderrText = (stderrText + chunk).slice(-16_000);
    })();
    const proc = child;
    let exited = false;
    const statusWatch = proc.status.then(() => (exited = true));
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline) {
      if (exited) break;
      try {
        const c = await Deno.connect({ hostname: "127.0.0.1", port });
        c.close();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    try {
      proc.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await statusWatch;
    await stderrDone;
    throw new Error(`sshd did not accept connections on 127.0.0.1:${port}: ${stderrText}`);
  };

  const killAll = async (signal: Deno.Signal) => {
    if (!child) return;
    await signalPids(await descendants(child.pid), signal);
    // ChildProcess.kill needs no extra permission, unlike Deno.kill.
    try {
      child.kill(signal);
    } catch {
      // Already exited.
    }
    if (signal === "SIGKILL" || signal === "SIGTERM") {
      await child.status;
      await stderrDone;
      child = undefined;
    }
  };

  await launch();
  return {
    port,
    dir,
    clientKeyPath,
    hostKeyPath,
    hostKey,
    pid: () => child?.pid ?? -1,
    kill: killAll,
    async signalSessions(signal) {
      if (!child) return 0;
      const pids = await descendants(child.pid);
      await signalPids(pids, signal);
      return pids.length;
    },
    restart: launch,
    async stop() {
      await killAll("SIGKILL");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A minimal eligible `BackendSpec` for tunnel tests. */
export function testSpec(
  id: number,
  endpoints: SshEndpoint[],
  remotePort: number,
): BackendSpec {
  return {
    id,
    status: "running",
    eligible: true,
    label: null,
    displayName: `${id} test`,
    gpuName: "Test GPU",
    numGpus: 1,
    gpuLabel: "Test GPU",
    dph: null,
    startedAt: null,
    endpoints,
    remotePort,
    engine: "unknown",
    token: null,
    modelHint: null,
  };
}

/** Polls `check` every 10 ms until it returns true, or throws after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Collects a tunnel's events (subscribe(push)) for assertions. */
export function eventLog<E extends { type: string }>(): {
  events: E[];
  push: (e: E) => void;
  count: (type: string) => number;
} {
  const events: E[] = [];
  return {
    events,
    push: (e) => events.push(e),
    count: (type) => events.filter((e) => e.type === type).length,
  };
}

/** SHA-256 of bytes as hex, for byte-identical comparisons. */
export async function sha256Hex(bytes: Uint8Array | ArrayBuffer): Promise<string> {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * An ssh2 connection straight to `sshd` as root with its client key (no
 * host-key pinning), for tests that drive the tunnel layer by hand.
 */
export function connectTestSshd(sshd: Sshd, algorithms?: SshAlgorithms): Promise<Connection> {
  return connectEndpoint({ host: "127.0.0.1", port: sshd.port, path: "direct" }, {
    instanceId: 1,
    username: "root",
    auth: loadAuthSources({ sshKeys: [sshd.clientKeyPath] }),
    knownHosts: null,
    readyTimeoutMs: 5_000,
    keepaliveIntervalMs: 60_000,
    keepaliveCountMax: 3,
    algorithms,
  });
}

/** A `direct-tcpip` channel from `client` to `127.0.0.1:port` inside the sshd's host. */
export function forwardTo(client: Client, port: number): Promise<ClientChannel> {
  return new Promise((resolve, reject) =>
    client.forwardOut(
      "127.0.0.1",
      0,
      "127.0.0.1",
      port,
      (err, ch) => err ? reject(err) : resolve(ch),
    )
  );
}

/**
 * Writes `data` to a channel to an echo server in pieces of the given sizes
 * (cycled in a scrambled order, with backpressure) and checks that exactly
 * those bytes come back.
 */
export async function roundTrip(
  ch: ClientChannel,
  data: Uint8Array,
  sizes = [1, 17, 40, 330, 1000, 1100, 4096, 20_000, 32_768, 65_000],
): Promise<void> {
  const got: Uint8Array[] = [];
  let n = 0;
  let onData!: (b: Uint8Array) => void, onClose!: () => void;
  const back = new Promise<void>((resolve, reject) => {
    onData = (b: Uint8Array) => {
      got.push(b.slice());
      n += b.length;
      if (n >= data.length) resolve();
    };
    onClose = () => reject(new Error(`channel closed after ${n} of ${data.length} bytes`));
    ch.on("data", onData);
    ch.on("close", onClose);
  });
  for (let off = 0, i = 0; off < data.length; i++) {
    const step = sizes[(i * 7) % sizes.length];
    if (!ch.write(data.subarray(off, Math.min(data.length, off + step)))) {
      await new Promise((r) => ch.once("drain", r));
    }
    off += step;
  }
  try {
    await back;
  } finally {
    // The channel may carry another round trip after this one.
    ch.off("data", onData);
    ch.off("close", onClose);
  }
  const all = new Uint8Array(n);
  let at = 0;
  for (const g of got) {
    all.set(g, at);
    at += g.length;
  }
  if (n !== data.length || !all.every((b, k) => b === data[k])) {
    throw new Error(`echoed bytes differ (${n} back of ${data.length})`);
  }
}
