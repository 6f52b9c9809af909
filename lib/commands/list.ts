/**
 * `vastproxy list`: the account's instances as vastproxy sees them (status,
 * SSH endpoints, detected engine and port), then exit. Useful to check what
 * `serve` would proxy before running it.
 */
import type { CliIo } from "../cli/cli_io.ts";
import { parsePort, type RawFlags, resolveApiConfig, UsageError } from "../cli/config.ts";
import { VastApiError } from "../vast/errors.ts";
import { VastClient } from "../vast/client.ts";
import { passesFilters, resolveInstance } from "../vast/instance.ts";
import { instancesJson, renderInstanceTable } from "../ui/instances_table.ts";
import { LineLogger, shouldUseColor } from "../ui/log.ts";
import { safeText, terminalJson } from "../ui/terminal_text.ts";
import { textWriter } from "./_io_writer.ts";

/** Runs `list`; 0 on success, 1 when the API fails, 2 when the key is rejected. */
export async function listCommand(
  flags: RawFlags,
  opts: { json: boolean },
  io: CliIo,
  deps: { fetch?: typeof fetch; now?: () => number } = {},
): Promise<number> {
  const { apiKey, apiUrl } = resolveApiConfig(flags, {
    env: io.env,
    readTextFile: io.readTextFile,
  });
  const label = typeof flags.label === "string" ? flags.label : null;
  const ids = (Array.isArray(flags.instance) ? flags.instance : []).map((v) => {
    if (!/^\d+$/.test(v)) {
      throw new UsageError(`--instance: "${v}" is not an instance id (a positive integer)`);
    }
    return Number(v);
  });
  const remotePort = typeof flags["remote-port"] === "string"
    ? parsePort(flags["remote-port"], "--remote-port")
    : null;
  // Warnings (skipped records, retries) go to stderr so --json output stays parseable.
  const logger = new LineLogger({
    writer: textWriter((t) => io.err(t)),
    level: "warn",
    secrets: [apiKey],
    color: shouldUseColor({ isTty: false, env: io.env }),
  });
  const client = new VastClient({ apiKey, apiUrl, fetch: deps.fetch, logger, maxRetries: 3 });
  let records;
  try {
    records = await client.listInstances();
  } catch (err) {
    if (err instanceof VastApiError) {
      await logger.flush?.();
      // The message may quote the API's answer.
      io.err(`vastproxy list: ${safeText(err.message)}\n`);
      return err.kind === "auth" ? 2 : 1;
    }
    throw err;
  }
  const filters = { label, instances: ids };
  const specs = records
    .filter((r) => passesFilters(r, filters))
    .map((r) => resolveInstance(r, { ...filters, remotePort }))
    .sort((a, b) => a.id - b.id);
  await logger.flush?.();
  if (opts.json) {
    // Exact values for scripts; only C1/bidi controls become \u escapes.
    io.out(`${terminalJson(instancesJson(specs), 2)}\n`);
  } else {
    io.out(
      `${
        renderInstanceTable(specs, {
          color: shouldUseColor({ isTty: io.isTty, env: io.env }),
          now: deps.now?.() ?? Date.now(),
        })
      }\n`,
    );
  }
  return 0;
}
