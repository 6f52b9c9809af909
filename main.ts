/**
 * vastproxy: one local OpenAI-compatible endpoint in front of a vast.ai fleet.
 * Entry point: parse, wire, run; the exit code comes back from the command.
 */
import { runCli } from "./lib/cli/cli.ts";
import { processIo } from "./lib/cli/cli_io.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args, processIo()));
}
