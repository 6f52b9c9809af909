/**
 * The benchmark's loopback world: one real OpenSSH sshd, fake engines, a
 * fake vast API per proxy, OpenSSH `ssh -N -L` forwards (path b) and the
 * real `vastproxy serve` CLI as a subprocess (path c). Every process is
 * started here and stopped by its own pid; nothing leaves 127.0.0.1.
 */
import { makeInstanceRecord, startFakeVastApi } from "../lib/sim/fake_vast_api.ts";
// The same loopback sshd setup the tunnel tests use.
import { freePort, generateKey, writeSshdConfig } from "../tests/_helpers/sshd.ts";
import { RUNTIME_V8_ARG } from "../scripts/compile.ts";

/** API key the fake vast API expects. */
export const BENCH_API_KEY = "bench-vast-key-0c41e2";
/** Model every fake engine serves. */
export const BENCH_MODEL = "bench-model";

/**
 * Checkout whose `main.ts` runs as the proxy: this one, or `BENCH_PROXY_ROOT`
 * (a copy of another revision, for before/after comparisons).
 */
const ROOT = Deno.env.get("BENCH_PROXY_ROOT")?.replace(/\/?$/, "/") ??
  new URL("..", import.meta.url).pathname;

/** Instance token of the i-th bench instance (the engines accept any; it is sent like a real one). */
export function benchToken(i: number): string {
  return `bench-token-${i}-3f9d2a7c51e84b06`;
}

/** Resolves once something accepts TCP on `port`, or throws after `timeoutMs`. */
export async function waitPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}: ${err}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/** A child process whose stdout/stderr go to a log file (no pipe to drain). */
export interface Proc {
  pid: number;
  /** Sends SIGTERM, then SIGKILL after `graceMs`; waits for exit. */
  stop(graceMs?: number): Promise<void>;
  /** Peak resident set (VmHWM) in MiB, read from /proc. */
  peakRssMiB(): number;
  /** Current resident set (VmRSS) in MiB. */
  rssMiB(): number;
}

/** Spawns `cmd args` with output appended to `logFile` (via `sh -c exec`, so the pid is cmd's). */
export function spawnLogged(
  cmd: string,
  args: string[],
  logFile: string,
  env?: Record<string, string>,
): Proc {
  const quoted = [cmd, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  const child = new Deno.Command("sh", {
    args: ["-c", `exec ${quoted} >>'${logFile}' 2>&1`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    env,
    clearEnv: env !== undefined,
  }).spawn();
  let exited = false;
  const status = child.status.then(() => (exited = true));
  return {
    pid: child.pid,
    async stop(graceMs = 3_000) {
      if (exited) return;
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already gone */ }
      }, graceMs);
      await status;
      clearTimeout(t);
    },
    peakRssMiB: () => procStatusMiB(child.pid, "VmHWM"),
    rssMiB: () => procStatusMiB(child.pid, "VmRSS"),
  };
}

/**
 * A field of /proc/<pid>/status in MiB (NaN when unreadable). Read with
 * `cat`, since Deno lets only `--allow-all` read /proc directly.
 */
export function procStatusMiB(pid: number, field: "VmHWM" | "VmRSS"): number {
  try {
    const out = new Deno.Command("cat", { args: [`/proc/${pid}/status`], stderr: "null" })
      .outputSync();
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(new TextDecoder().decode(out.stdout));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** The shared pieces every scenario uses. */
export interface World {
  dir: string;
  clientKey: string;
  sshdPort: number;
  sshd: Proc;
  close(): Promise<void>;
}

/**
 * Starts sshd with its own keys and config. `MaxStartups` is raised because
 * the fleet scenario opens 64 handshakes at once and OpenSSH's default
 * (10:30:100) would randomly refuse some, measuring sshd's DoS guard rather
 * than the proxy.
 */
export async function startWorld(): Promise<World> {
  try {
    Deno.mkdirSync("/run/sshd", { recursive: true });
  } catch { /* sshd will say what is wrong */ }
  const dir = await Deno.makeTempDir({ prefix: "vastproxy-bench-" });
  const hostKey = `${dir}/host_ed25519`;
  const clientKey = `${dir}/client_ed25519`;
  await generateKey(hostKey);
  await generateKey(clientKey);
  await Deno.copyFile(`${clientKey}.pub`, `${dir}/authorized_keys`);
  const sshdPort = freePort();
  await writeSshdConfig(`${dir}/sshd_config`, {
    port: sshdPort,
    hostKeyPath: hostKey,
    dir,
    extra: ["MaxStartups 1000", "LogLevel ERROR"],
  });
  const sshd = spawnLogged(
    "/usr/sbin/sshd",
    ["-D", "-e", "-f", `${dir}/sshd_config`],
    `${dir}/sshd.log`,
  );
  await waitPort(sshdPort);
  return {
    dir,
    clientKey,
    sshdPort,
    sshd,
    async close() {
      // SIGTERM to the listener; its per-connection children exit when their
      // clients (our ssh forwards and proxies, stopped before) disconnect.
      await sshd.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Path (b): one OpenSSH client per backend, `ssh -N -L local:127.0.0.1:engine`. */
export async function startSshForwards(world: World, enginePorts: number[]): Promise<{
  ports: number[];
  procs: Proc[];
  stop(): Promise<void>;
}> {
  const ports: number[] = [];
  const procs: Proc[] = [];
  for (const enginePort of enginePorts) {
    const port = freePort();
    procs.push(spawnLogged("ssh", [
      "-N",
      "-L",
      `${port}:127.0.0.1:${enginePort}`,
      "-p",
      String(world.sshdPort),
      "-i",
      world.clientKey,
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "LogLevel=ERROR",
      "root@127.0.0.1",
    ], `${world.dir}/ssh.log`));
    ports.push(port);
  }
  for (const p of ports) await waitPort(p);
  return { ports, procs, stop: async () => void await Promise.all(procs.map((p) => p.stop())) };
}

/** Path (c): `vastproxy serve` in its own process, in front of `enginePorts`. */
export interface ProxyProc extends Proc {
  url: string;
  /** Milliseconds from spawn until `healthy` backends were healthy. */
  readyMs: number;
  close(): Promise<void>;
}

/**
 * Starts a fake vast API listing one instance per entry of `enginePorts`
 * (all reached through the one sshd), then the real CLI against it, and
 * waits until every backend is healthy. `extraArgs` go to `serve`.
 */
export async function startProxyProc(
  world: World,
  enginePorts: number[],
  opts: {
    extraArgs?: string[];
    readyTimeoutMs?: number;
    tag: string;
    root?: string;
    /** Deno runtime flags for the proxy process (e.g. `--cpu-prof`), after BENCH_PROXY_FLAGS. */
    runtimeFlags?: string[];
  },
): Promise<ProxyProc> {
  const records = enginePorts.map((enginePort, i) =>
    makeInstanceRecord({
      id: 4_200_001 + i,
      label: "bench",
      public_ipaddr: "127.0.0.1",
      ports: { "22/tcp": [{ HostIp: "0.0.0.0", HostPort: String(world.sshdPort) }] },
      ssh_host: "127.0.0.1",
      ssh_port: world.sshdPort,
      image_runtype: "ssh_direc ssh_proxy",
      jupyter_token: benchToken(i),
      extra_env: [["VLLM_MODEL", BENCH_MODEL], ["VLLM_ARGS", `--port ${enginePort}`]],
      onstart: null,
    })
  );
  const api = startFakeVastApi({ apiKey: BENCH_API_KEY, instances: records });
  const port = freePort();
  const env = proxyEnv();
  const started = performance.now();
  const extraFlags = [...proxyFlags(), ...(opts.runtimeFlags ?? [])];
  const proc = spawnLogged(
    Deno.execPath(),
    [
      "run",
      ...extraFlags,
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys=homedir,hostname,osRelease",
      `${opts.root?.replace(/\/?$/, "/") ?? ROOT}main.ts`,
      "serve",
      "--api-key",
      BENCH_API_KEY,
      "--api-url",
      api.url,
      "--listen",
      `127.0.0.1:${port}`,
      "--ssh-key",
      world.clientKey,
      "--known-hosts",
      `${world.dir}/known_hosts_${opts.tag}`,
      "--no-tui",
      ...(opts.extraArgs ?? []),
    ],
    `${world.dir}/proxy_${opts.tag}.log`,
    env,
  );
  const url = `http://127.0.0.1:${port}`;
  const close = async () => {
    await proc.stop(5_000);
    await api.close();
  };
  try {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
    for (;;) {
      const healthy = await fetch(`${url}/vastproxy/status`)
        .then((r) => r.json())
        .then((s) => s.counts.healthy as number)
        .catch(() => -1);
      if (healthy >= enginePorts.length) break;
      if (Date.now() > deadline) {
        const log = await Deno.readTextFile(`${world.dir}/proxy_${opts.tag}.log`).catch(() => "");
        throw new Error(
          `proxy not healthy (${healthy}/${enginePorts.length}):\n${log.slice(-3000)}`,
        );
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  } catch (err) {
    await close();
    throw err;
  }
  return { ...proc, url, readyMs: performance.now() - started, close };
}

// ---- path (e): the Go original's core ------------------------------------

const BENCH_DIR = new URL(".", import.meta.url).pathname;
/** Where Debian's golang-golang-x-crypto-dev puts its source (a GOPATH root). */
const GO_PATH = Deno.env.get("BENCH_GOPATH") ?? "/usr/share/gocode";

/** Says on stderr why a reference path is left out of this run; returns null. */
function skipPath(path: string, why: string): null {
  console.error(`bench: path ${path} skipped: ${why}`);
  return null;
}

/**
 * Runs a reference path's build command into bench/.cache: the binary
 * `out`, or null after `skipPath` says why (`notFound`: what to install
 * when `cmd` is missing; `failed`: how a failed build is introduced).
 */
async function buildInCache(
  path: string,
  cmd: string,
  args: string[],
  out: string,
  why: { notFound: string; failed: string },
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<string | null> {
  await Deno.mkdir(`${BENCH_DIR}.cache`, { recursive: true });
  let res: Deno.CommandOutput;
  try {
    res = await new Deno.Command(cmd, {
      args,
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      ...(opts.env ? { env: opts.env, clearEnv: true } : {}),
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return skipPath(path, why.notFound);
    return skipPath(path, `cannot run ${cmd}: ${err}`);
  }
  if (!res.success) {
    const text = new TextDecoder().decode(res.stderr).trim().split("\n").slice(0, 3).join(" | ");
    return skipPath(path, `${why.failed}: ${text}`);
  }
  return out;
}

/**
 * Waits until `proc` listens on `port`; if it does not within 30 s, stops
 * it and throws with the end of its log.
 */
async function listening<P extends Proc>(
  proc: P,
  port: number,
  log: string,
  what: string,
): Promise<P & { url: string }> {
  try {
    await waitPort(port, 30_000);
  } catch (err) {
    await proc.stop();
    const text = await Deno.readTextFile(log).catch(() => "");
    throw new Error(`${what} did not start: ${err}\n${text.slice(-2000)}`);
  }
  return { ...proc, url: `http://127.0.0.1:${port}` };
}

/**
 * Builds `bench/go_core` into `bench/.cache/go_core` and returns the binary's
 * path, or null (after one line on stderr saying why) when Go or x/crypto is
 * missing or the build fails. Offline by construction: GOPATH mode
 * (GO111MODULE=off) against the distro's source tree, GOPROXY=off, and the
 * build cache inside bench/.cache; nothing is fetched.
 */
export async function buildGoCore(): Promise<string | null> {
  const path = "(e) go core";
  try {
    Deno.statSync(`${GO_PATH}/src/golang.org/x/crypto/ssh/client.go`);
  } catch {
    return skipPath(
      path,
      `no golang.org/x/crypto under ${GO_PATH} (apt install golang-golang-x-crypto-dev)`,
    );
  }
  const out = `${BENCH_DIR}.cache/go_core`;
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    GO111MODULE: "off",
    GOPATH: GO_PATH,
    GOPROXY: "off",
    GOFLAGS: "",
    GOTOOLCHAIN: "local",
    CGO_ENABLED: "0",
    GOCACHE: `${BENCH_DIR}.cache/go-build`,
  };
  return await buildInCache(
    path,
    "go",
    ["build", "-o", out, "."],
    out,
    { notFound: "`go` not found (apt install golang-go)", failed: "go build failed" },
    { cwd: `${BENCH_DIR}go_core`, env },
  );
}

/** Path (e): the Go core in front of `enginePorts`, one SSH connection per engine. */
export async function startGoCore(
  world: World,
  bin: string,
  enginePorts: number[],
  tag: string,
): Promise<Proc & { url: string }> {
  const port = freePort();
  const log = `${world.dir}/go_core_${tag}.log`;
  const proc = spawnLogged(bin, [
    "-listen",
    `127.0.0.1:${port}`,
    "-ssh",
    `127.0.0.1:${world.sshdPort}`,
    "-user",
    "root",
    "-key",
    world.clientKey,
    "-insecure",
    "-backends",
    enginePorts.join(","),
    "-tokens",
    enginePorts.map((_, i) => benchToken(i)).join(","),
  ], log);
  return await listening(proc, port, log, "go core");
}

/** The environment of the proxy process (and of the floors built from its parts). */
function proxyEnv(): Record<string, string> {
  const env: Record<string, string> = { HOME: Deno.env.get("HOME") ?? "/root", NO_COLOR: "1" };
  for (const k of ["PATH", "DENO_DIR", "XDG_CACHE_HOME"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return env;
}

/**
 * Runtime flags for the proxy (and the floors on its stack): the V8
 * settings the product ships with (scripts/compile.ts), so the bench
 * measures what users run, then BENCH_PROXY_FLAGS (e.g. another V8 flag;
 * repeated `--v8-flags` add up).
 */
export function proxyFlags(): string[] {
  return [RUNTIME_V8_ARG, ...(Deno.env.get("BENCH_PROXY_FLAGS") ?? "").split(" ").filter(Boolean)];
}

/** How long a floor relay may live; the bench stops it long before. */
const RELAY_MAX_SECONDS = 3_600;

/**
 * Builds the C byte relay of path (f) with the system's C compiler into
 * bench/.cache, or returns null (with a message) where there is none.
 */
export async function buildCRelay(): Promise<string | null> {
  const out = `${BENCH_DIR}.cache/floor_relay`;
  return await buildInCache(
    "(f) C relay",
    "cc",
    ["-O2", "-o", out, `${BENCH_DIR}floor/relay.c`],
    out,
    { notFound: "no C compiler `cc` (apt install gcc)", failed: "cc failed" },
  );
}

/**
 * A floor relay in front of `upstreamPort` (an `ssh -L` port): the C one
 * (path f) when `cBin` is given, else the Deno one (path g).
 */
export async function startRelay(
  world: World,
  upstreamPort: number,
  cBin: string | null,
  tag: string,
): Promise<Proc & { url: string }> {
  const port = freePort();
  const args = [String(port), String(upstreamPort), String(RELAY_MAX_SECONDS)];
  const kind = cBin ? "c" : "deno";
  const log = `${world.dir}/relay_${kind}_${tag}.log`;
  const proc = cBin ? spawnLogged(cBin, args, log) : spawnLogged(
    Deno.execPath(),
    ["run", "--allow-net", `${BENCH_DIR}floor/relay.ts`, ...args],
    log,
  );
  return await listening(proc, port, log, `${kind} relay`);
}

/**
 * The SSH floor of paths (h) and (i) (bench/floor/ssh_forward.ts): the
 * proxy's own SSH stack to `world`'s sshd, forwarding to `enginePort` —
 * bytes only (h), or with the HTTP work a proxy cannot skip (i) — with the
 * proxy's environment and BENCH_PROXY_FLAGS (not its `--profile` flags).
 */
export async function startSshFloor(
  world: World,
  mode: "bytes" | "http",
  enginePort: number,
  tag: string,
): Promise<Proc & { url: string }> {
  const port = freePort();
  const log = `${world.dir}/ssh_floor_${mode}_${tag}.log`;
  const proc = spawnLogged(
    Deno.execPath(),
    [
      "run",
      ...proxyFlags(),
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys=homedir,hostname,osRelease",
      `${BENCH_DIR}floor/ssh_forward.ts`,
      mode,
      String(port),
      String(world.sshdPort),
      String(enginePort),
      world.clientKey,
      String(RELAY_MAX_SECONDS),
      benchToken(0), // the token the proxy sends to the engine it forwards to
    ],
    log,
    proxyEnv(),
  );
  return await listening(proc, port, log, `ssh floor (${mode})`);
}
