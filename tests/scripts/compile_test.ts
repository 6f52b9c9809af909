import assert from "node:assert/strict";
import {
  compileArgs,
  hostTarget,
  isDownloadFailure,
  outputName,
  RUNTIME_PERMISSIONS,
  RUNTIME_V8_ARG,
  RUNTIME_V8_FLAGS,
  TARGETS,
} from "../../scripts/compile.ts";
import { proxyFlags } from "../../bench/_fixture.ts";

const root = new URL("../..", import.meta.url).pathname;

Deno.test("compileArgs() grants only the runtime permissions, never --allow-all", () => {
  for (const target of TARGETS) {
    const args = compileArgs(target);
    assert.ok(!args.includes("--allow-all") && !args.includes("-A"));
    assert.ok(!args.includes("--allow-run"), "vastproxy starts no programs");
    for (const p of RUNTIME_PERMISSIONS) assert.ok(args.includes(p));
    assert.ok(args.includes(RUNTIME_V8_ARG), "the executable runs with the product's V8 settings");
    assert.equal(args[args.indexOf("--target") + 1], target);
    assert.equal(args.at(-1), "main.ts");
  }
  assert.deepEqual(
    [...TARGETS].sort(),
    [
      "aarch64-apple-darwin",
      "aarch64-unknown-linux-gnu",
      "x86_64-apple-darwin",
      "x86_64-pc-windows-msvc",
      "x86_64-unknown-linux-gnu",
    ],
  );
  assert.equal(outputName("x86_64-pc-windows-msvc"), "dist/vastproxy-x86_64-pc-windows-msvc.exe");
  assert.ok((TARGETS as readonly string[]).includes(hostTarget()));
});

Deno.test("every way vastproxy is run sets its V8 flags: compile, deno tasks, the bench", () => {
  assert.deepEqual([...RUNTIME_V8_FLAGS], ["--no-memory-reducer", "--expose-gc"]);
  assert.equal(RUNTIME_V8_ARG, "--v8-flags=--no-memory-reducer,--expose-gc");
  const config = JSON.parse(Deno.readTextFileSync(`${root}deno.json`));
  const scripts: Record<string, string> = {
    start: "main.ts",
    demo: "main.ts",
    soak: "scripts/soak.ts", // the proxy in-process: its memory check measures what ships
  };
  for (const [task, file] of Object.entries(scripts)) {
    const words = String(config.tasks[task]).split(/\s+/);
    // A runtime flag only counts before the script name.
    const script = words.indexOf(file);
    assert.ok(script > 0, `task ${task} runs ${file}`);
    assert.ok(
      words.slice(0, script).includes(RUNTIME_V8_ARG),
      `deno.json task "${task}" must pass ${RUNTIME_V8_ARG} before ${file}`,
    );
  }
  assert.equal(proxyFlags()[0], RUNTIME_V8_ARG, "the bench measures the shipped settings");
});

Deno.test("V8 accepts the product's flags (deno refuses a flag V8 does not know)", async () => {
  const run = (flag: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", flag, "console.log('up')"],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const ok = await run(RUNTIME_V8_ARG);
  assert.equal(ok.code, 0, new TextDecoder().decode(ok.stderr));
  assert.equal(new TextDecoder().decode(ok.stdout).trim(), "up");
  // The check can fail: a misspelt flag is refused.
  const bad = await run("--v8-flags=--no-memory-reducr");
  assert.notEqual(bad.code, 0);
});

/** The last value V8 printed for each of the product's flags (`--print-flag-values`). */
function printedFlags(stdout: Uint8Array): { reducer?: string; exposeGc?: string } {
  const lines = new TextDecoder().decode(stdout).split("\n");
  return {
    reducer: lines.findLast((l) => /^--(no-)?memory-reducer$/.test(l)),
    exposeGc: lines.findLast((l) => /^--(no-)?expose-gc$/.test(l)),
  };
}

Deno.test("the start and demo tasks' process really runs with the flags, and gc is exposed", async () => {
  for (const task of ["start", "demo"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["task", "-q", task, "--help"],
      cwd: root,
      env: { DENO_V8_FLAGS: "--print-flag-values" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    // The task runner prints V8's defaults first; the proxy's process prints last.
    assert.deepEqual(printedFlags(out.stdout), {
      reducer: "--no-memory-reducer",
      exposeGc: "--expose-gc",
    });
  }
  const probe = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        ...args,
        "import { exposedGc } from './lib/app/idle_gc.ts'; console.log(typeof exposedGc())",
      ],
      cwd: root,
      stdout: "piped",
    }).output().then((o) => new TextDecoder().decode(o.stdout).trim());
  assert.equal(await probe([RUNTIME_V8_ARG]), "function");
  assert.equal(await probe([]), "object", "without the flag there is no gc (null)");
});

Deno.test("isDownloadFailure() recognises deno's runtime download errors", () => {
  assert.ok(isDownloadFailure("error sending request for url (https://dl.deno.land/release/…)"));
  assert.ok(!isDownloadFailure("error: Module not found: main.ts"));
});

Deno.test("compile.ts rejects a DENORT_BIN that does not exist with exit 2", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "scripts/compile.ts"],
    cwd: root,
    env: { DENORT_BIN: "/nonexistent/denort" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(
    new TextDecoder().decode(out.stderr),
    /DENORT_BIN=\/nonexistent\/denort does not exist/,
  );
});

// A real build downloads denort from Deno's host (not reachable here, and the
// test suite stays on loopback), so it runs only with a local runtime or when
// asked for explicitly.
const canCompile = Boolean(Deno.env.get("DENORT_BIN") || Deno.env.get("VASTPROXY_TEST_COMPILE"));
if (!canCompile) {
  console.warn(
    "\n*** SKIPPING the real `deno compile` test: set DENORT_BIN=/path/to/denort (or " +
      "VASTPROXY_TEST_COMPILE=1 where Deno's download host is reachable) to run it. ***\n",
  );
}

Deno.test({
  name: "compile.ts builds a binary for the host that runs and prints its version",
  ignore: !canCompile,
  async fn() {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/compile.ts", "--target", hostTarget()],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const bin = `${root}${outputName(hostTarget())}`;
    const version = await new Deno.Command(bin, { args: ["--version"], stdout: "piped" }).output();
    assert.equal(version.code, 0);
    assert.match(new TextDecoder().decode(version.stdout), /^\d+\.\d+\.\d+/);
    // The flags are baked in: they show in the running binary.
    const flags = await new Deno.Command(bin, {
      args: ["--version"],
      env: { DENO_V8_FLAGS: "--print-flag-values" },
      stdout: "piped",
    }).output();
    assert.deepEqual(printedFlags(flags.stdout), {
      reducer: "--no-memory-reducer",
      exposeGc: "--expose-gc",
    });
  },
});
