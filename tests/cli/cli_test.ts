import assert from "node:assert/strict";
import { runCli } from "../../lib/cli/cli.ts";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { SERVE_OPTIONS } from "../../lib/cli/serve_options.ts";
import { VERSION } from "../../lib/core/version.ts";

Deno.test("runCli --help documents every serve option with its env var and default", async () => {
  const io = memoryIo();
  assert.equal(await runCli(["--help"], io), 0);
  const help = io.stdout();
  for (const o of SERVE_OPTIONS) {
    assert.ok(help.includes(`--${o.name}`), `--${o.name} missing from help`);
    if (o.env) assert.ok(help.includes(o.env), `${o.env} missing from help`);
    if (o.default) assert.ok(help.includes(o.default), `default of --${o.name} missing`);
  }
  for (const cmd of ["serve", "list", "status", "wait", "demo"]) {
    assert.match(help, new RegExp(`^  ${cmd}\\b`, "m"));
  }
});

Deno.test("runCli --version prints the version from deno.json", async () => {
  const io = memoryIo();
  assert.equal(await runCli(["--version"], io), 0);
  assert.equal(io.stdout().trim(), VERSION);
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../../deno.json", import.meta.url)));
  assert.equal(denoJson.version, VERSION);
});

Deno.test("runCli exits 2 on an unknown option and says which", async () => {
  const io = memoryIo();
  assert.equal(await runCli(["--bogus"], io), 2);
  assert.match(io.stderr(), /unknown option '--bogus'/);
});

Deno.test("runCli serve exits 2 naming the flag for each bad configuration", async () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [[], {}, /--api-key KEY or set VAST_API_KEY/],
    [["--poll-interval", "fast"], { VAST_API_KEY: "k" }, /--poll-interval: "fast"/],
    [["--listen", "127.0.0.1:70000"], { VAST_API_KEY: "k" }, /--listen: "70000" is not a port/],
    [["--ssh-key", "/no/such/key"], { VAST_API_KEY: "k" }, /--ssh-key: cannot read SSH key/],
    [["--listen", "0.0.0.0:8080"], { VAST_API_KEY: "k" }, /without --auth-token/],
    [["serve", "--policy", "weighted"], { VAST_API_KEY: "k" }, /--policy: unknown policy/],
  ];
  for (const [args, env, pattern] of cases) {
    const io = memoryIo({ env: { HOME: "/h", ...env } });
    assert.equal(await runCli(args, io), 2, args.join(" "));
    assert.match(io.stderr(), pattern, args.join(" "));
  }
});

Deno.test("runCli list exits 2 without an API key", async () => {
  const io = memoryIo({ env: { HOME: "/h" } });
  assert.equal(await runCli(["list"], io), 2);
  assert.match(io.stderr(), /VAST_API_KEY/);
});

Deno.test("runCli wait exits 2 on a bad --healthy or --timeout", async () => {
  let io = memoryIo();
  assert.equal(await runCli(["wait", "--healthy", "zero"], io), 2);
  assert.match(io.stderr(), /--healthy: "zero"/);
  io = memoryIo();
  assert.equal(await runCli(["wait", "--timeout", "later"], io), 2);
  assert.match(io.stderr(), /--timeout: "later"/);
  io = memoryIo();
  assert.equal(await runCli(["status", "--url", "not a url"], io), 2);
  assert.match(io.stderr(), /--url/);
});

Deno.test("main.ts exits 2 with a message naming the variable when run as a process", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-env", "--allow-read", "main.ts", "serve"],
    cwd: new URL("../..", import.meta.url).pathname,
    // Keep the environment (Deno's cache and certificates live there); only blank the key.
    env: { VAST_API_KEY: "", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /VAST_API_KEY/);
});
