/**
 * The command line (DESIGN.md §2) on npm:commander. It only parses: each
 * command's action resolves its configuration and hands it to a module in
 * lib/commands/, which returns an exit code. Nothing here calls Deno.exit, so
 * tests run the whole CLI in-process.
 */
import { Command, CommanderError, Option } from "commander";
import { type RawFlags, UsageError } from "./config.ts";
import { SERVE_OPTIONS } from "./serve_options.ts";
import type { CliIo } from "./cli_io.ts";
import { VERSION } from "../core/version.ts";

/** Exit codes (DESIGN.md §2). */
export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

/** camelCase key commander uses for a kebab-case option. */
function keyOf(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function helpFor(spec: (typeof SERVE_OPTIONS)[number]): string {
  const extra = [
    spec.env ? `env: ${spec.env}` : "",
    spec.default ? `default: ${spec.default}` : "",
  ].filter(Boolean).join(", ");
  return extra ? `${spec.help} [${extra}]` : spec.help;
}

function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** Declares the serve options (shared by `serve` and `demo`). */
function addServeOptions(cmd: Command, skip: readonly string[] = []): Command {
  for (const spec of SERVE_OPTIONS) {
    if (skip.includes(spec.name)) continue;
    const flags = spec.arg ? `--${spec.name} <${spec.arg}>` : `--${spec.name}`;
    const opt = new Option(flags, helpFor(spec));
    if (spec.repeatable) opt.argParser(collect);
    // Boolean `--no-x` flags would otherwise default to true and hide whether
    // the user gave them; we want only what was typed.
    if (spec.name === "no-tui") opt.default(undefined);
    cmd.addOption(opt);
  }
  return cmd;
}

/**
 * Only the options the user gave on the command line, under their kebab-case
 * names, so config.ts can apply flag > env > .env > default itself.
 */
export function givenFlags(cmd: Command, names: readonly string[]): RawFlags {
  const opts = cmd.opts();
  const out: RawFlags = {};
  for (const name of names) {
    const key = name === "no-tui" ? "tui" : keyOf(name);
    if (cmd.getOptionValueSource(key) !== "cli") continue;
    const value = opts[key];
    out[name] = name === "no-tui" ? value === false : value;
  }
  return out;
}

/**
 * The serve options listed in the top-level help too: `vastproxy --help` is
 * where people look first, and serve is the default command.
 */
function serveOptionsHelp(): string {
  const rows = SERVE_OPTIONS.map((o) => [
    `--${o.name}${o.arg ? ` ${o.arg}` : ""}${o.repeatable ? " …" : ""}`,
    helpFor(o),
  ]);
  const width = Math.max(...rows.map(([f]) => f.length)) + 2;
  return [
    "",
    "Options of serve (also accepted without the word serve):",
    ...rows.map(([f, h]) => `  ${f.padEnd(width)}${h}`),
    "",
    "Precedence: flag > environment > .env file > default.",
    "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.",
    "",
  ].join("\n");
}

const SERVE_NAMES = SERVE_OPTIONS.map((o) => o.name);

/**
 * Parses `args` and runs the chosen command; resolves to the exit code.
 * Usage errors print one clear line to stderr and give 2.
 */
export async function runCli(args: string[], io: CliIo): Promise<number> {
  let run: (() => Promise<number>) | undefined;
  const program = new Command("vastproxy")
    .description(
      "One local OpenAI-compatible endpoint in front of your vast.ai GPU instances, over SSH.",
    )
    .version(VERSION, "-V, --version", "print the version and exit")
    .helpOption("-h, --help", "show help")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s),
      writeErr: (s) => io.err(s),
      outputError: (s, write) => write(s),
    });

  addServeOptions(
    program.command("serve", { isDefault: true })
      .description("run the proxy (the default command)"),
  ).action(function (this: Command) {
    const flags = givenFlags(this, SERVE_NAMES);
    run = async () => (await import("../commands/serve.ts")).serveCommand(flags, io);
  });

  program.command("list")
    .description("print the account's instances as a table and exit")
    .addOption(new Option("--api-key <KEY>", "vast.ai API key [env: VAST_API_KEY]"))
    .addOption(
      new Option(
        "--api-url <URL>",
        "vast.ai API base URL [env: VAST_API_URL, default: https://console.vast.ai]",
      ),
    )
    .addOption(new Option("--label <LABEL>", "only instances with this label"))
    .addOption(new Option("--instance <ID>", "only these ids (repeatable)").argParser(collect))
    .addOption(new Option("--remote-port <PORT>", "assume this LLM port inside instances"))
    .addOption(new Option("--env-file <PATH>", "dotenv file [default: ./.env if present]"))
    .option("--json", "print JSON instead of a table")
    .action(function (this: Command) {
      const flags = givenFlags(this, [
        "api-key",
        "api-url",
        "label",
        "instance",
        "remote-port",
        "env-file",
      ]);
      const json = this.opts().json === true;
      run = async () => (await import("../commands/list.ts")).listCommand(flags, { json }, io);
    });

  program.command("status")
    .description("print a running proxy's backends as a table (reads /vastproxy/status)")
    .option("--url <URL>", "the proxy's base URL [default: http://127.0.0.1:8080]")
    .option("--auth-token <TOKEN>", "the proxy's token [env: VASTPROXY_AUTH_TOKEN]")
    .option("--json", "print the status JSON")
    .action(function (this: Command) {
      const o = this.opts();
      run = async () =>
        (await import("../commands/status.ts")).statusCommand(
          { url: o.url, authToken: o.authToken, json: o.json === true },
          io,
        );
    });

  program.command("wait")
    .description("exit 0 once N backends are healthy, 1 on timeout (for CI)")
    .option("--url <URL>", "the proxy's base URL [default: http://127.0.0.1:8080]")
    .option("--healthy <N>", "how many healthy backends to wait for [default: 1]")
    .option("--timeout <DUR>", "give up after this long [default: 10m]")
    .option("--auth-token <TOKEN>", "the proxy's token [env: VASTPROXY_AUTH_TOKEN]")
    .action(function (this: Command) {
      const o = this.opts();
      run = async () =>
        (await import("../commands/wait.ts")).waitCommand(
          { url: o.url, healthy: o.healthy, timeout: o.timeout, authToken: o.authToken },
          io,
        );
    });

  addServeOptions(
    program.command("demo")
      .description("run serve against a built-in simulated fleet (no account needed)")
      .option("--instances <N>", "simulated instances [default: 4]"),
    ["api-key", "api-url", "label", "instance", "remote-port", "mark-label", "insecure-host-keys"],
  ).action(function (this: Command) {
    const flags = givenFlags(this, SERVE_NAMES);
    const instances = this.opts().instances as string | undefined;
    run = async () => (await import("../commands/demo.ts")).demoCommand(flags, { instances }, io);
  });

  program.addHelpText("after", serveOptionsHelp());

  try {
    await program.parseAsync(args, { from: "user" });
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version come through here with exit code 0.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    throw err;
  }
  if (!run) return EXIT.ok;
  try {
    return await run();
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`vastproxy: ${err.message}\n`);
      return EXIT.usage;
    }
    throw err;
  }
}
