/**
 * `vastproxy demo`: `serve` against a simulated fleet started in this
 * process (lib/sim/fleet.ts), so anyone can see the live table, send
 * requests and watch the proxy ride out crashes without a vast.ai account.
 * Serve options the user gives (--listen, --policy, --no-tui, …) apply; the
 * ones that select a real account or real instances are the demo's own.
 */
import type { CliIo } from "../cli/cli_io.ts";
import { loadDotenv, type RawFlags, resolveServeConfig, UsageError } from "../cli/config.ts";
import type { ServeConfig } from "../app/serve_config.ts";
import type { Logger } from "../core/logger.ts";
import type { SimEvent } from "../sim/chaos.ts";
import { type SimFleet, type SimFleetOptions, startSimFleet } from "../sim/fleet.ts";
import { runProxy } from "./serve.ts";

/** `--instances` bounds: one instance up to what a laptop serves comfortably. */
export const DEMO_MAX_INSTANCES = 256;
const DEFAULT_INSTANCES = 4;
// Stands in for the simulated account's key file and known_hosts while the
// user's own flags are validated, before any simulated server starts.
const PLACEHOLDER = "<simulated fleet>";

// Faster than serve's defaults so a new or vanished instance shows within
// seconds; the user's --poll-interval / --health-interval still win.
const DEMO_DEFAULTS: RawFlags = { "poll-interval": "2s", "health-interval": "2s" };

/** Demo-only options as typed on the command line. */
export interface DemoOptions {
  /** `--instances N` [4]. */
  instances?: string;
}

/** What tests may replace. */
export interface DemoDeps {
  /** Starts the simulated fleet [startSimFleet]. */
  startFleet?: (opts: SimFleetOptions) => Promise<SimFleet>;
  /** Whether `127.0.0.1:8080` is free [tries to bind it]. */
  portFree?: (hostname: string, port: number) => boolean;
}

/** Parses `--instances`; a bad value is a usage error naming the flag. */
export function parseInstances(text: string | undefined): number {
  if (text === undefined) return DEFAULT_INSTANCES;
  const n = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > DEMO_MAX_INSTANCES) {
    throw new UsageError(
      `--instances: "${text}" is not a number of instances from 1 to ${DEMO_MAX_INSTANCES}`,
      "instances",
    );
  }
  return n;
}

/** Runs the demo until SIGINT/SIGTERM or `q`; returns the exit code. */
export async function demoCommand(
  flags: RawFlags,
  opts: DemoOptions,
  io: CliIo,
  deps: DemoDeps = {},
): Promise<number> {
  const instances = parseInstances(opts.instances);
  // Validate everything the user typed before starting any server; the
  // simulated account's details are filled in afterwards.
  const userConfig = resolveServeConfig({
    ...DEMO_DEFAULTS,
    ...flags,
    "api-key": PLACEHOLDER,
    "api-url": "http://127.0.0.1",
    "ssh-key": [PLACEHOLDER],
    "known-hosts": PLACEHOLDER,
  }, {
    env: io.env,
    readTextFile: (path) => (path === PLACEHOLDER ? "" : io.readTextFile(path)),
    home: io.env.HOME ?? io.env.USERPROFILE,
    isTty: io.isTty,
  });
  let listen = userConfig.listen;
  let busyNote: string | null = null;
  const listenChosen = typeof flags.listen === "string" || Boolean(io.env.VASTPROXY_LISTEN) ||
    Boolean(loadDotenv(flags, io.readTextFile).VASTPROXY_LISTEN);
  if (!listenChosen && !(deps.portFree ?? portFree)(listen.hostname, listen.port)) {
    // A demo should just work; someone else on 8080 is no reason to fail.
    busyNote = `${listen.hostname}:${listen.port} is in use, so the demo ` +
      "listens on a free port instead (choose one with --listen HOST:PORT)";
    listen = { ...listen, port: 0 };
  }

  let logger: Logger | null = null;
  const fleet = await (deps.startFleet ?? startSimFleet)({
    instances,
    chaos: true,
    onEvent: (e) => logEvent(logger, e),
  });
  try {
    const config: ServeConfig = {
      ...userConfig,
      listen,
      apiKey: fleet.apiKey,
      apiUrl: fleet.apiUrl,
      sshKeys: [fleet.clientKeyPath],
      knownHosts: fleet.knownHostsPath,
      // Options demo does not offer; cleared so an environment or .env meant
      // for a real account cannot filter or re-point the simulated one.
      label: null,
      instances: [],
      remotePort: null,
      markLabel: null,
      insecureHostKeys: false,
      sshNativeCrypto: false,
    };
    return await runProxy(config, io, {
      secrets: [fleet.apiKey],
      // Only the simulated key: an agent's keys would just be refused first.
      deps: { sshAgentSocket: null, sshDefaultKeyFiles: [] },
      onReady(url, log) {
        logger = log;
        const lines = banner(url, instances, pickModel(fleet), { compact: config.tui });
        if (config.tui) {
          // The table owns the screen: the hints go to its log pane.
          if (busyNote) log.log("warn", busyNote);
          for (const line of lines) log.log("info", line);
        } else {
          if (busyNote) io.err(`vastproxy demo: ${busyNote}\n`);
          io.out(lines.join("\n") + "\n");
        }
      },
    });
  } finally {
    await fleet.close();
  }
}

/**
 * The text shown once the proxy listens: where it is and a request to try.
 * `compact` is for the live table's log pane, where a line longer than the
 * terminal is cut: curl's `--json` (curl 7.82+) keeps the command inside 160
 * columns there, while plain output uses the form every curl understands.
 */
export function banner(
  url: string,
  instances: number,
  model: string,
  opts: { compact?: boolean } = {},
): string[] {
  const body = JSON.stringify({
    model,
    stream: true,
    messages: [{ role: "user", content: "Hi" }],
  });
  const endpoint = `${url}/v1/chat/completions`;
  const curl = opts.compact
    ? `curl -N --json '${body}' ${endpoint}`
    : `curl -N ${endpoint} -H 'content-type: application/json' -d '${body}'`;
  return [
    `vastproxy demo: ${instances} simulated instance${instances === 1 ? "" : "s"} ` +
    `(no vast.ai account used); OpenAI base URL ${url}/v1`,
    opts.compact ? curl : `try: ${curl}`,
  ];
}

/** The model most running instances serve, so the curl line balances. */
function pickModel(fleet: SimFleet): string {
  const counts = new Map<string, number>();
  for (const i of fleet.instances) {
    if (i.record.actual_status === "running") counts.set(i.model, (counts.get(i.model) ?? 0) + 1);
  }
  // A stable sort: on a tie the first instance's model wins.
  const best = [...counts].sort((a, b) => b[1] - a[1])[0];
  return best?.[0] ?? fleet.models()[0];
}

function seconds(ms: number): string {
  return `${Math.round(ms / 1000)}s`;
}

/** One log line per simulated event, so the viewer knows what the proxy reacts to. */
function logEvent(logger: Logger | null, e: SimEvent): void {
  if (!logger) return; // before the proxy runs nothing is shown yet
  switch (e.type) {
    case "engine-crashed":
      return logger.log("warn", "demo: simulated engine crash", {
        id: e.id,
        restartIn: seconds(e.restartInMs),
      });
    case "engine-restarted":
      return logger.log("info", "demo: simulated engine restarted", { id: e.id });
    case "ssh-dropped":
      return logger.log("warn", "demo: simulated network blip, SSH connections dropped", {
        id: e.id,
      });
    case "instance-added":
      return logger.log("info", "demo: simulated instance rented, loading", {
        id: e.id,
        runningIn: seconds(e.runningInMs),
      });
    case "instance-running":
      return logger.log("info", "demo: simulated instance finished loading", { id: e.id });
    case "instance-vanished":
      return logger.log("warn", "demo: simulated instance gone from the vast.ai listing", {
        id: e.id,
        backIn: seconds(e.backInMs),
      });
    case "instance-back":
      return logger.log("info", "demo: simulated instance listed again", { id: e.id });
  }
}

/** True when `hostname:port` can be bound right now. */
function portFree(hostname: string, port: number): boolean {
  try {
    Deno.listen({ hostname, port }).close();
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) return false;
    throw err;
  }
}
