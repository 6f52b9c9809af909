/**
 * Flags + environment + `.env` → a validated `ServeConfig`, or a `UsageError`
 * that names the flag or variable to fix. The option table itself lives in
 * `serve_options.ts`, shared with the `--help` text.
 *
 * Precedence: flag > environment > `.env` file > default (DESIGN.md §2).
 */
import type { LogFormat, PolicyName, ServeConfig } from "../app/serve_config.ts";
import { parseDotenv } from "./dotenv.ts";
import { SERVE_OPTIONS } from "./serve_options.ts";
import { allowedHostProblem } from "../proxy/host_check.ts";
import { normalizeOrigin } from "../proxy/cors.ts";
import { parseDuration, parseSize } from "./units.ts";

/** Bad usage or configuration; the CLI prints it and exits 2. */
export class UsageError extends Error {
  /** The flag or env var at fault, when there is one. */
  readonly flag?: string;
  /** `message` must say what to change; `flag` names the option. */
  constructor(message: string, flag?: string) {
    super(message);
    this.name = "UsageError";
    this.flag = flag;
  }
}

/** Raw option values as the CLI parsed them: only flags the user actually gave. */
export type RawFlags = Record<string, string | string[] | boolean | undefined>;

/** Where configuration may come from besides flags. */
export interface ConfigSources {
  /** Process environment. */
  env: Record<string, string | undefined>;
  /** Reads a file as text (injected for tests); throws when unreadable. */
  readTextFile?: (path: string) => string;
  /** Home directory for `~` and defaults. */
  home?: string;
  /** Whether stdout is a terminal (TUI default). */
  isTty?: boolean;
}

/**
 * Looks values up in flag > env > .env > default order and remembers where
 * each came from, so errors can name the source the user has to edit.
 */
class Lookup {
  #flags: RawFlags;
  #env: Record<string, string | undefined>;
  #dotenv: Record<string, string>;

  constructor(
    flags: RawFlags,
    env: Record<string, string | undefined>,
    dotenv: Record<string, string>,
  ) {
    this.#flags = flags;
    this.#env = env;
    this.#dotenv = dotenv;
  }

  /** The value and a human name of its source (`--listen`, `VASTPROXY_LISTEN in .env`). */
  get(name: string): { value: string; source: string } | undefined {
    const spec = SERVE_OPTIONS.find((o) => o.name === name);
    const flag = this.#flags[name];
    if (typeof flag === "string") return { value: flag, source: `--${name}` };
    if (spec?.env) {
      const fromEnv = this.#env[spec.env];
      if (fromEnv !== undefined && fromEnv !== "") return { value: fromEnv, source: spec.env };
      const fromFile = this.#dotenv[spec.env];
      if (fromFile !== undefined && fromFile !== "") {
        return { value: fromFile, source: `${spec.env} (from .env file)` };
      }
    }
    return undefined;
  }

  /** Repeatable flags: the flag's list, else a comma-separated env value. */
  list(name: string): { values: string[]; source: string } {
    const flag = this.#flags[name];
    if (Array.isArray(flag) && flag.length > 0) return { values: flag, source: `--${name}` };
    const one = this.get(name);
    if (!one) return { values: [], source: `--${name}` };
    return {
      values: one.value.split(",").map((s) => s.trim()).filter(Boolean),
      source: one.source,
    };
  }

  /** Boolean flags have no env var. */
  flag(name: string): boolean {
    return this.#flags[name] === true;
  }
}

/** True for addresses only this machine can reach. */
export function isLoopback(hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Parses `HOST:PORT` (IPv6 as `[::1]:8080`, or `:8080` for all interfaces). */
export function parseListen(text: string, source: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(text.trim());
  if (!m) {
    throw new UsageError(`${source}: expected HOST:PORT (e.g. 127.0.0.1:8080), got "${text}"`);
  }
  const hostname = m[1] ?? (m[2] || "0.0.0.0");
  return { hostname, port: parsePort(m[3], source, { allowZero: true }) };
}

/** Parses a TCP port, naming `source` when it is not one. */
export function parsePort(
  text: string,
  source: string,
  opts: { allowZero?: boolean } = {},
): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  const min = opts.allowZero ? 0 : 1;
  if (!Number.isInteger(n) || n < min || n > 65535) {
    throw new UsageError(`${source}: "${text}" is not a port number (${min}-65535)`);
  }
  return n;
}

function durationOf(lookup: Lookup, name: string): number {
  const given = lookup.get(name);
  const spec = SERVE_OPTIONS.find((o) => o.name === name)!;
  const text = given?.value ?? spec.default!;
  const ms = parseDuration(text);
  if (ms === undefined || ms <= 0) {
    throw new UsageError(
      `${given?.source ?? `--${name}`}: "${text}" is not a duration; use e.g. 500ms, 10s, 2m`,
      name,
    );
  }
  return ms;
}

function expandHome(path: string, home: string | undefined, source: string): string {
  if (path === "~" || path.startsWith("~/")) {
    if (!home) {
      throw new UsageError(
        `${source}: cannot expand "~" in ${path} because HOME is not set; give an absolute path`,
      );
    }
    return home + path.slice(1);
  }
  return path;
}

/**
 * Reads the `.env` file: `--env-file` (must exist) or `./.env` when present.
 * Returns its variables; they only fill gaps the real environment leaves.
 */
export function loadDotenv(
  flags: RawFlags,
  read: (path: string) => string,
): Record<string, string> {
  const explicit = typeof flags["env-file"] === "string" ? flags["env-file"] as string : undefined;
  const path = explicit ?? ".env";
  let text: string;
  try {
    text = read(path);
  } catch (err) {
    if (explicit === undefined && err instanceof Deno.errors.NotFound) return {};
    throw new UsageError(
      `--env-file: cannot read ${path}: ${err instanceof Error ? err.message : err}`,
      "env-file",
    );
  }
  const { values, badLines } = parseDotenv(text);
  if (badLines.length > 0) {
    throw new UsageError(
      `${path}: cannot parse line ${badLines.join(", ")}; expected KEY=value`,
      "env-file",
    );
  }
  return values;
}

/** Resolves the API key and URL only (enough for `list`). */
export function resolveApiConfig(
  flags: RawFlags,
  sources: ConfigSources,
): { apiKey: string; apiUrl: string } {
  const read = sources.readTextFile ?? Deno.readTextFileSync;
  const lookup = new Lookup(flags, sources.env, loadDotenv(flags, read));
  return resolveApi(lookup);
}

function resolveApi(lookup: Lookup): { apiKey: string; apiUrl: string } {
  const key = lookup.get("api-key");
  if (!key) {
    throw new UsageError(
      "missing vast.ai API key: pass --api-key KEY or set VAST_API_KEY " +
        "(create one at https://cloud.vast.ai/manage-keys/)",
      "api-key",
    );
  }
  const url = lookup.get("api-url");
  const apiUrl = (url?.value ?? "https://console.vast.ai").replace(/\/+$/, "");
  try {
    const u = new URL(apiUrl);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("not http(s)");
  } catch {
    throw new UsageError(
      `${url?.source ?? "--api-url"}: "${apiUrl}" is not an http(s) URL`,
      "api-url",
    );
  }
  return { apiKey: key.value.trim(), apiUrl };
}

/** Builds the full `serve` configuration or throws `UsageError`. */
export function resolveServeConfig(flags: RawFlags, sources: ConfigSources): ServeConfig {
  const read = sources.readTextFile ?? Deno.readTextFileSync;
  const home = sources.home ?? sources.env.HOME;
  const lookup = new Lookup(flags, sources.env, loadDotenv(flags, read));
  const { apiKey, apiUrl } = resolveApi(lookup);

  const listenIn = lookup.get("listen");
  const listen = parseListen(listenIn?.value ?? "127.0.0.1:8080", listenIn?.source ?? "--listen");
  const authToken = lookup.get("auth-token")?.value ?? null;
  if (authToken !== null && authToken.trim() === "") {
    throw new UsageError("--auth-token: the token is empty; give a non-empty secret", "auth-token");
  }
  if (!isLoopback(listen.hostname) && !authToken && !lookup.flag("insecure-no-auth")) {
    throw new UsageError(
      `${listenIn?.source ?? "--listen"}: refusing to listen on ${listen.hostname} without ` +
        "--auth-token: anyone who can reach it could use your GPUs; set --auth-token TOKEN " +
        "(or VASTPROXY_AUTH_TOKEN), or pass --insecure-no-auth if that is intended",
      "listen",
    );
  }

  const keys = lookup.list("ssh-key");
  const sshKeys = keys.values.map((p) => expandHome(p, home, keys.source));
  for (const path of sshKeys) {
    try {
      read(path);
    } catch (err) {
      const why = err instanceof Deno.errors.NotFound
        ? "no such file"
        : err instanceof Deno.errors.PermissionDenied
        ? "permission denied"
        : "unreadable";
      throw new UsageError(`${keys.source}: cannot read SSH key ${path} (${why})`, "ssh-key");
    }
  }

  const knownHostsIn = lookup.get("known-hosts");
  const knownHosts = expandHome(
    knownHostsIn?.value ?? "~/.local/state/vastproxy/known_hosts",
    home,
    knownHostsIn?.source ?? "--known-hosts",
  );

  const instances = lookup.list("instance").values.map((v) => {
    if (!/^\d+$/.test(v) || Number(v) <= 0 || !Number.isSafeInteger(Number(v))) {
      throw new UsageError(
        `--instance: "${v}" is not an instance id (a positive integer)`,
        "instance",
      );
    }
    return Number(v);
  });

  const remotePortIn = lookup.get("remote-port");
  const remotePort = remotePortIn ? parsePort(remotePortIn.value, remotePortIn.source) : null;

  const policyIn = lookup.get("policy");
  const policy = (policyIn?.value ?? "cache-aware") as PolicyName;
  if (policy !== "round-robin" && policy !== "least-inflight" && policy !== "cache-aware") {
    throw new UsageError(
      `${
        policyIn!.source
      }: unknown policy "${policy}"; use round-robin, least-inflight or cache-aware`,
      "policy",
    );
  }

  const sticky = lookup.get("sticky-header")?.value ?? null;
  if (sticky !== null && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(sticky)) {
    throw new UsageError(
      `--sticky-header: "${sticky}" is not a valid header name`,
      "sticky-header",
    );
  }

  const maxBodyIn = lookup.get("max-body");
  const maxBodyBytes = parseSize(maxBodyIn?.value ?? "32MiB");
  if (maxBodyBytes === undefined || maxBodyBytes <= 0) {
    throw new UsageError(
      `--max-body: "${maxBodyIn?.value}" is not a size; use e.g. 32MiB, 512KB, 1048576`,
      "max-body",
    );
  }

  const maxBufferedIn = lookup.get("max-buffered");
  const maxBufferedBytes = parseSize(maxBufferedIn?.value ?? "256MiB");
  if (maxBufferedBytes === undefined || maxBufferedBytes <= 0) {
    throw new UsageError(
      `--max-buffered: "${maxBufferedIn?.value}" is not a size; use e.g. 256MiB, 1GiB`,
      "max-buffered",
    );
  }
  if (maxBufferedBytes < maxBodyBytes) {
    throw new UsageError(
      `--max-buffered (${maxBufferedIn?.value ?? "256MiB"}) is smaller than --max-body ` +
        `(${maxBodyIn?.value ?? "32MiB"}), so the largest allowed body could never be ` +
        "accepted; raise --max-buffered or lower --max-body",
      "max-buffered",
    );
  }

  const hostsIn = lookup.list("allowed-host");
  for (const entry of hostsIn.values) {
    const problem = allowedHostProblem(entry);
    if (problem) throw new UsageError(`${hostsIn.source}: ${problem}`, "allowed-host");
  }
  const originsIn = lookup.list("cors-origin");
  const corsOrigins = originsIn.values.map((entry) => {
    const n = normalizeOrigin(entry);
    if ("problem" in n) throw new UsageError(`${originsIn.source}: ${n.problem}`, "cors-origin");
    return n.origin;
  });

  const maxConnIn = lookup.get("max-connections");
  const maxConnText = (maxConnIn?.value ?? "4096").trim();
  const maxConnections = Number(maxConnText);
  if (!/^\d+$/.test(maxConnText) || maxConnections <= 0 || !Number.isSafeInteger(maxConnections)) {
    throw new UsageError(
      `${maxConnIn?.source ?? "--max-connections"}: "${maxConnIn?.value}" is not a connection ` +
        "count (a positive integer, e.g. 1000)",
      "max-connections",
    );
  }

  const formatIn = lookup.get("log-format");
  const logFormat = (formatIn?.value ?? "text") as LogFormat;
  if (logFormat !== "text" && logFormat !== "json") {
    throw new UsageError(`--log-format: "${logFormat}" is not text or json`, "log-format");
  }

  const label = lookup.get("label")?.value ?? null;
  const markLabel = lookup.get("mark-label")?.value ?? null;
  if (markLabel !== null && markLabel.length > 1024) {
    throw new UsageError("--mark-label: vast.ai labels are at most 1024 characters", "mark-label");
  }
  if (markLabel !== null && label !== null) {
    // vast has one label per instance: marking would overwrite the label the
    // --label filter selects on, and the instance would drop out of the fleet.
    throw new UsageError(
      "--mark-label cannot be combined with --label (vast keeps one label per instance, so " +
        "marking would overwrite the label the filter selects on); select instances with " +
        "--instance ID instead",
      "mark-label",
    );
  }

  return {
    apiKey,
    apiUrl,
    listen,
    authToken,
    sshKeys,
    knownHosts,
    insecureHostKeys: lookup.flag("insecure-host-keys"),
    sshNativeCrypto: lookup.flag("ssh-native-crypto"),
    label,
    instances,
    remotePort,
    policy,
    stickyHeader: sticky,
    markLabel,
    pollIntervalMs: durationOf(lookup, "poll-interval"),
    healthIntervalMs: durationOf(lookup, "health-interval"),
    maxBodyBytes,
    maxBufferedBytes,
    bodyTimeoutMs: durationOf(lookup, "body-timeout"),
    allowedHosts: hostsIn.values.map((h) => h.trim().toLowerCase()),
    corsOrigins,
    drainTimeoutMs: durationOf(lookup, "drain-timeout"),
    headerTimeoutMs: durationOf(lookup, "header-timeout"),
    idleTimeoutMs: durationOf(lookup, "idle-timeout"),
    maxConnections,
    tui: !lookup.flag("no-tui") && (sources.isTty ?? false),
    logFormat,
  };
}
