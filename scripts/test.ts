/**
 * `deno task test`: formatting, lint, type check, then the test suite with
 * coverage, ending with the plain line `N passed, N failed[, N skipped]` that
 * CI reads. Tests run with the narrowest permissions that work: loopback
 * network only, and only the programs the tests start.
 *
 * Usage: deno task test [--fast] [deno test args / paths…]
 *   --fast   skip fmt/lint/check (for quick local iterations)
 */

import { finalCounts, formatClosingLine, parseDenoSummary } from "./closing_line.ts";

const args = [...Deno.args];
const fast = args.includes("--fast");
const extra = args.filter((a) => a !== "--fast");

/**
 * Programs tests may start: Deno itself (CLI tests), OpenSSH pieces, tmux,
 * kill, python3 (uvicorn), prlimit (a server under a low open-file limit) and
 * wrk (the bench's timing script).
 */
function allowRun(): string {
  const progs = [
    Deno.execPath(),
    "/usr/sbin/sshd",
    "ssh-keygen",
    "ssh",
    "tmux",
    "kill",
    "ps",
    "/usr/bin/python3",
    "prlimit",
    "wrk",
  ];
  const found = progs.filter((p) => {
    if (p.startsWith("/")) {
      try {
        Deno.statSync(p);
        return true;
      } catch {
        return false;
      }
    }
    const path = (Deno.env.get("PATH") ?? "").split(":");
    return path.some((dir) => {
      try {
        return Deno.statSync(`${dir}/${p}`).isFile;
      } catch {
        return false;
      }
    });
  });
  return `--allow-run=${found.join(",")}`;
}

async function step(name: string, cmd: string[]): Promise<{ ok: boolean; output: string }> {
  console.log(`\n=== ${name}: deno ${cmd.join(" ")}`);
  const child = new Deno.Command(Deno.execPath(), {
    args: cmd,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let output = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>, sink: typeof Deno.stdout) => {
    for await (const chunk of stream) {
      output += decoder.decode(chunk, { stream: true });
      await sink.write(chunk);
    }
  };
  const [status] = await Promise.all([
    child.status,
    pump(child.stdout, Deno.stdout),
    pump(child.stderr, Deno.stderr),
  ]);
  return { ok: status.success, output };
}

let staticFailures = 0;
if (!fast) {
  for (
    const [name, cmd] of [
      ["format", ["fmt", "--check"]],
      ["lint", ["lint"]],
      ["types", ["check", "main.ts", "lib", "tests", "scripts", "bench"]],
    ] as const
  ) {
    const r = await step(name, [...cmd]);
    if (!r.ok) staticFailures++;
  }
}

try {
  Deno.removeSync("coverage", { recursive: true });
} catch { /* first run */ }

const test = await step("tests", [
  "test",
  "--allow-net=127.0.0.1,localhost,[::1]",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  allowRun(),
  "--coverage=coverage",
  ...(extra.length > 0 ? extra : ["tests/"]),
]);

// The closing line counts each failed static check as one failure, and a
// test run that failed without a failed test (it crashed, or Deno reported a
// leak after its summary) as one more, so a red run never ends in "0 failed".
const counts = finalCounts(parseDenoSummary(test.output), {
  gateFailures: staticFailures,
  exitStatus: test.ok ? 0 : 1,
});
if (staticFailures > 0) {
  console.log(`\n${staticFailures} static check(s) failed (fmt/lint/check); counted as failures.`);
}
console.log(`\n${formatClosingLine(counts)}`);
Deno.exit(counts.failed === 0 ? 0 : 1);
