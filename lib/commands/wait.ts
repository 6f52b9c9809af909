/**
 * `vastproxy wait`: block a CI job until the proxy has N healthy backends.
 * A proxy that is not up yet is not an error: CI starts it in the background
 * and calls `wait` at once, so we keep polling until the timeout.
 */
import { type Clock, realClock } from "../core/clock.ts";
import type { CliIo } from "../cli/cli_io.ts";
import { UsageError } from "../cli/config.ts";
import { parseDuration } from "../cli/units.ts";
import { safeText } from "../ui/terminal_text.ts";
import { fetchStatus, proxyBaseUrl, ProxyUnreachableError } from "./_proxy_client.ts";

/** Options of `wait` as typed on the command line. */
export interface WaitOptions {
  url?: string;
  healthy?: string;
  timeout?: string;
  authToken?: string;
}

/** Injectable time and network for tests. */
export interface WaitDeps {
  clock?: Clock;
  fetch?: typeof fetch;
  /** Delay between polls (default 1 s). */
  pollMs?: number;
}

/** Runs `wait`; 0 when ready, 1 on timeout, 2 on bad usage. */
export async function waitCommand(
  opts: WaitOptions,
  io: CliIo,
  deps: WaitDeps = {},
): Promise<number> {
  const clock = deps.clock ?? realClock;
  const base = proxyBaseUrl(opts.url);
  const want = opts.healthy === undefined ? 1 : Number(opts.healthy);
  if (!Number.isInteger(want) || want < 1) {
    throw new UsageError(`--healthy: "${opts.healthy}" must be a whole number ≥ 1`, "healthy");
  }
  const timeoutMs = opts.timeout === undefined ? 600_000 : parseDuration(opts.timeout);
  if (timeoutMs === undefined || timeoutMs <= 0) {
    throw new UsageError(
      `--timeout: "${opts.timeout}" is not a duration; use e.g. 30s, 20m`,
      "timeout",
    );
  }
  const token = opts.authToken ?? io.env.VASTPROXY_AUTH_TOKEN ?? null;
  const deadline = clock.now() + timeoutMs;
  let last = "";
  for (;;) {
    let line: string;
    try {
      const status = await fetchStatus(base, { authToken: token, fetch: deps.fetch });
      const healthy = status.counts.healthy;
      if (healthy >= want) {
        io.out(`ready: ${healthy}/${status.counts.total} backends healthy at ${base}\n`);
        return 0;
      }
      const states = status.backends.map((b) => `${b.id}:${b.state}`).join(" ");
      line = `waiting: ${healthy}/${want} healthy (${status.counts.total} known${
        states ? `: ${states}` : ""
      })`;
    } catch (err) {
      if (!(err instanceof ProxyUnreachableError)) throw err;
      if (err.status === 401) {
        io.err(`vastproxy wait: ${safeText(err.message)}\n`);
        return 2;
      }
      line = `waiting: ${err.message}`;
    }
    // States and errors come from the proxy's answer: no raw escapes.
    line = safeText(line);
    // Print progress only when it changes, so a 20-minute wait doesn't flood CI logs.
    if (line !== last) io.out(`${line}\n`);
    last = line;
    const left = deadline - clock.now();
    if (left <= 0) {
      io.err(`vastproxy wait: timed out after ${opts.timeout ?? "10m"}; ${line}\n`);
      return 1;
    }
    await clock.sleep(Math.min(deps.pollMs ?? 1_000, left));
  }
}
