/**
 * `vastproxy serve` (the default command): resolve the configuration, start
 * the proxy, show the live table or log lines, and drain on SIGINT/SIGTERM.
 */
import type { CliIo } from "../cli/cli_io.ts";
import { type RawFlags, resolveServeConfig, UsageError } from "../cli/config.ts";
import type { ServeConfig } from "../app/serve_config.ts";
import type { Logger } from "../core/logger.ts";
import { ApiKeyRejectedError, type ProxyDeps, startProxy } from "../app/proxy_app.ts";
import { safeText } from "../ui/terminal_text.ts";
import { createServeUi } from "./_serve_ui.ts";

/** Every secret of a config, for log redaction as a last line of defence. */
export function configSecrets(config: ServeConfig, env: Record<string, string | undefined>) {
  return [config.apiKey, config.authToken ?? "", env.VASTPROXY_SSH_PASSPHRASE ?? ""];
}

/** Options for running a configured proxy until a signal (shared with `demo`). */
export interface RunOptions {
  /** Extra wiring (tests, demo). */
  deps?: Partial<ProxyDeps>;
  /** Extra secrets to redact. */
  secrets?: string[];
  /**
   * Called once the proxy listens (demo prints its curl line here); `logger`
   * reaches the log pane while the live table owns the screen.
   */
  onReady?: (url: string, logger: Logger) => void;
}

/**
 * Runs a proxy for `config` until SIGINT/SIGTERM: the first signal drains,
 * a second exits at once. Returns the exit code.
 */
export async function runProxy(
  config: ServeConfig,
  io: CliIo,
  opts: RunOptions = {},
): Promise<number> {
  const ui = createServeUi({
    tui: config.tui,
    logFormat: config.logFormat,
    secrets: [...configSecrets(config, io.env), ...(opts.secrets ?? [])],
  }, io);
  const logger = ui.logger;
  let stopCount = 0;
  let resolveStop!: () => void;
  const stopRequested = new Promise<void>((r) => (resolveStop = r));
  let resolveForced!: () => void;
  const forced = new Promise<"forced">((r) => (resolveForced = () => r("forced")));
  const requestStop = () => {
    stopCount++;
    if (stopCount === 1) resolveStop();
    else resolveForced();
  };
  // Bound before the listener starts: Deno 2.9 panics when a signal
  // listener is first bound while every descriptor is taken (a connection
  // flood), and a Ctrl-C during start-up still drains as soon as it is up.
  const unsubscribe = io.onSignal?.(requestStop);
  let proxy;
  try {
    proxy = await startProxy(config, {
      logger,
      sshPassphrase: io.env.VASTPROXY_SSH_PASSPHRASE ?? null,
      sshAgentSocket: io.env.SSH_AUTH_SOCK ?? null,
      ...opts.deps,
    });
  } catch (err) {
    unsubscribe?.();
    await ui.flush();
    if (err instanceof ApiKeyRejectedError) {
      io.err(`vastproxy: ${safeText(err.message)}\n`);
      return 2;
    }
    // Start-up errors can quote the vast API's answer: no raw escapes.
    io.err(`vastproxy: ${safeText(err instanceof Error ? err.message : String(err))}\n`);
    return 1;
  }

  ui.attach(proxy, requestStop);
  opts.onReady?.(proxy.url, logger);
  let outcome: "drained" | "forced" = "drained";
  try {
    await Promise.race([stopRequested, proxy.finished]);
    ui.detach();
    outcome = await Promise.race([proxy.shutdown().then(() => "drained" as const), forced]);
  } finally {
    ui.detach();
    unsubscribe?.();
    await ui.flush();
  }
  if (outcome === "forced") {
    io.err("vastproxy: second signal: exiting without waiting for in-flight requests\n");
    return 130;
  }
  return 0;
}

/** Runs `serve`; see DESIGN.md §2 for the exit codes. */
export function serveCommand(flags: RawFlags, io: CliIo): Promise<number> {
  let config: ServeConfig;
  try {
    config = resolveServeConfig(flags, {
      env: io.env,
      readTextFile: io.readTextFile,
      home: io.env.HOME ?? io.env.USERPROFILE,
      isTty: io.isTty,
    });
  } catch (err) {
    if (err instanceof UsageError) return Promise.reject(err);
    throw err;
  }
  return runProxy(config, io);
}
