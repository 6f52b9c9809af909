/**
 * The options of `serve` (DESIGN.md §2) as data: flag, metavar, environment
 * variable, default and help text. `lib/config.ts` resolves values from this
 * table and `lib/cli.ts` builds `--help` from it, so the two cannot drift.
 */

/** One option of `serve` as the help text and the resolver see it. */
export interface OptionSpec {
  /** Long flag without dashes, e.g. `api-key`. */
  name: string;
  /** Metavar shown in help (`KEY`, `DUR`), absent for boolean flags. */
  arg?: string;
  /** Environment variable that sets it, if any. */
  env?: string;
  /** Default as shown in help (and parsed when nothing else sets it). */
  default?: string;
  /** One-line description. */
  help: string;
  /** May be given more than once. */
  repeatable?: boolean;
}

/** Every option of `serve` (DESIGN.md §2), in help order. */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  { name: "api-key", arg: "KEY", env: "VAST_API_KEY", help: "vast.ai API key (required)" },
  {
    name: "api-url",
    arg: "URL",
    env: "VAST_API_URL",
    default: "https://console.vast.ai",
    help: "vast.ai API base URL",
  },
  {
    name: "listen",
    arg: "HOST:PORT",
    env: "VASTPROXY_LISTEN",
    default: "127.0.0.1:8080",
    help: "where the proxy listens",
  },
  {
    name: "auth-token",
    arg: "TOKEN",
    env: "VASTPROXY_AUTH_TOKEN",
    help: "require clients to send Authorization: Bearer TOKEN",
  },
  {
    name: "insecure-no-auth",
    help: "allow a non-loopback --listen without --auth-token",
  },
  {
    name: "allowed-host",
    arg: "NAME",
    env: "VASTPROXY_ALLOWED_HOST",
    repeatable: true,
    default: "loopback, IP addresses, the --listen host",
    help: "without --auth-token, also serve requests for this Host (repeatable; env: " +
      "comma-separated)",
  },
  {
    name: "cors-origin",
    arg: "ORIGIN",
    env: "VASTPROXY_CORS_ORIGIN",
    repeatable: true,
    default: "none (same-origin only)",
    help: "let web pages from ORIGIN (e.g. http://localhost:3000; * for any) call the proxy " +
      "(repeatable)",
  },
  {
    name: "ssh-key",
    arg: "PATH",
    env: "VASTPROXY_SSH_KEY",
    repeatable: true,
    default: "agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa",
    help: "private key to try (repeatable; env: comma-separated)",
  },
  {
    name: "known-hosts",
    arg: "PATH",
    env: "VASTPROXY_KNOWN_HOSTS",
    default: "~/.local/state/vastproxy/known_hosts",
    help: "host keys pinned on first use, per instance",
  },
  { name: "insecure-host-keys", help: "skip host-key pinning (not recommended)" },
  {
    name: "ssh-native-crypto",
    help: "seal every SSH packet with node:crypto, not the faster JavaScript AES-GCM",
  },
  {
    name: "label",
    arg: "LABEL",
    env: "VASTPROXY_LABEL",
    help: "only instances whose vast label equals LABEL",
  },
  {
    name: "instance",
    arg: "ID",
    repeatable: true,
    default: "all",
    help: "only these instance ids (repeatable)",
  },
  {
    name: "remote-port",
    arg: "PORT",
    env: "VASTPROXY_REMOTE_PORT",
    default: "detected",
    help: "the LLM server's port inside every instance",
  },
  {
    name: "policy",
    arg: "NAME",
    env: "VASTPROXY_POLICY",
    default: "cache-aware",
    help: "round-robin, least-inflight or cache-aware (prefix affinity and capacity-relative load)",
  },
  {
    name: "sticky-header",
    arg: "NAME",
    help: "route requests by this header's value (rendezvous hashing)",
  },
  {
    name: "mark-label",
    arg: "LABEL",
    help: "set this vast label on healthy instances, clear it when unhealthy or on exit",
  },
  { name: "poll-interval", arg: "DUR", default: "10s", help: "vast.ai API polling interval" },
  {
    name: "health-interval",
    arg: "DUR",
    default: "5s",
    help: "health checks and GPU metrics interval",
  },
  { name: "max-body", arg: "BYTES", default: "32MiB", help: "largest request body accepted" },
  {
    name: "max-buffered",
    arg: "BYTES",
    default: "256MiB",
    help: "memory for request bodies held at once (503 server_busy above)",
  },
  {
    name: "body-timeout",
    arg: "DUR",
    default: "30s",
    help: "how long a client may take to send a request body (408 after)",
  },
  {
    name: "drain-timeout",
    arg: "DUR",
    default: "30s",
    help: "on SIGINT/SIGTERM, how long in-flight requests may finish",
  },
  {
    name: "header-timeout",
    arg: "DUR",
    default: "10s",
    help: "time a client may take to send a request head (then 408 and close)",
  },
  {
    name: "idle-timeout",
    arg: "DUR",
    default: "60s",
    help: "how long an idle keep-alive client connection stays open",
  },
  {
    name: "max-connections",
    arg: "N",
    default: "4096",
    help: "open client connections; more get 503 (lowered to fit the open-file limit)",
  },
  { name: "no-tui", help: "plain log lines even on a terminal (default: TUI only on a TTY)" },
  { name: "log-format", arg: "FMT", default: "text", help: "headless log format: text or json" },
  { name: "env-file", arg: "PATH", default: "./.env if present", help: "dotenv file to read" },
];
