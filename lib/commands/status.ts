/**
 * `vastproxy status`: one look at a running proxy's backends, as the same
 * table the live UI shows (or its JSON with --json).
 */
import type { CliIo } from "../cli/cli_io.ts";
import { renderPlainTable } from "../ui/table.ts";
import { shouldUseColor } from "../ui/log.ts";
import { safeText, terminalJson } from "../ui/terminal_text.ts";
import { fetchStatus, proxyBaseUrl, ProxyUnreachableError } from "./_proxy_client.ts";

/** Options of `status` as typed on the command line. */
export interface StatusOptions {
  url?: string;
  authToken?: string;
  json?: boolean;
}

/** Runs `status`; 0 on success, 1 when the proxy cannot be read. */
export async function statusCommand(
  opts: StatusOptions,
  io: CliIo,
  deps: { fetch?: typeof fetch; now?: () => number; columns?: number } = {},
): Promise<number> {
  const base = proxyBaseUrl(opts.url);
  const token = opts.authToken ?? io.env.VASTPROXY_AUTH_TOKEN ?? null;
  try {
    const status = await fetchStatus(base, { authToken: token, fetch: deps.fetch });
    if (opts.json) {
      // Exact values for scripts; only C1/bidi controls become \u escapes.
      io.out(`${terminalJson(status, 2)}\n`);
      return 0;
    }
    const lines = renderPlainTable(status, {
      color: shouldUseColor({ isTty: io.isTty, env: io.env }),
      now: deps.now?.() ?? Date.now(),
      width: deps.columns ?? 200,
    });
    io.out(`${lines.join("\n")}\n`);
    return 0;
  } catch (err) {
    if (err instanceof ProxyUnreachableError) {
      io.err(`vastproxy status: ${safeText(err.message)}\n`);
      return 1;
    }
    throw err;
  }
}
