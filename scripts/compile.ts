/**
 * `deno task compile`: one self-contained `vastproxy` executable per target in
 * dist/, with only the permissions the program needs (no --allow-all).
 *
 * `deno compile` downloads the matching runtime (denort) from Deno's download
 * host. Where that host is unreachable, set DENORT_BIN to a local denort
 * binary: then only the target it was built for can be produced (the host's,
 * unless --target says otherwise).
 *
 * Usage: deno task compile [--target TRIPLE …]
 */

/** Every platform we ship. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/**
 * What vastproxy needs at run time: network (vast API, SSH, listening),
 * files (keys, .env, known_hosts), environment (config), and the few system
 * facts node:os gives ssh2 and the home-directory defaults, and FFI for
 * libc's getrlimit/setrlimit (raising the open-file limit at start; Deno has
 * no API for it).
 */
export const RUNTIME_PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys=homedir,hostname,osRelease",
];

/**
 * V8 settings the product runs with, wherever it runs: baked into the
 * executable by `deno compile`, and on the `deno task start`/`demo` lines
 * (deno.json; a test keeps them in step) and the bench's proxy processes.
 *
 * `--no-memory-reducer`: after ~8 s without much allocation V8 runs
 * "memory reducing" collections that shrink the heap to its live size. A
 * proxy is idle between bursts all the time, and the next requests ran
 * slower and cost more CPU on the shrunk heap (numbers in
 * docs/BENCHMARKS.md, ninth pass).
 *
 * `--expose-gc`: with the reducer off, nothing gave a burst's memory back
 * while the proxy was quiet (a peak of ~700 MB stayed for minutes). The
 * proxy does that itself once it goes quiet (lib/app/idle_gc.ts), with the
 * `gc` this flag exposes.
 */
export const RUNTIME_V8_FLAGS = ["--no-memory-reducer", "--expose-gc"] as const;

/** `RUNTIME_V8_FLAGS` as the one deno argument that sets them. */
export const RUNTIME_V8_ARG = `--v8-flags=${RUNTIME_V8_FLAGS.join(",")}`;

/** The host's own target triple, used when DENORT_BIN pins one runtime. */
export function hostTarget(): string {
  const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
  switch (Deno.build.os) {
    case "darwin":
      return `${arch}-apple-darwin`;
    case "windows":
      return `${arch}-pc-windows-msvc`;
    default:
      return `${arch}-unknown-linux-gnu`;
  }
}

/** Output file name for a target. */
export function outputName(target: string): string {
  return `dist/vastproxy-${target}${target.includes("windows") ? ".exe" : ""}`;
}

/** The deno compile arguments for one target. */
export function compileArgs(target: string): string[] {
  return [
    "compile",
    ...RUNTIME_PERMISSIONS,
    RUNTIME_V8_ARG,
    "--no-check",
    "--target",
    target,
    "--output",
    outputName(target),
    "main.ts",
  ];
}

/** True when deno's error says it could not download its runtime. */
export function isDownloadFailure(stderr: string): boolean {
  return /dl\.deno\.land|error sending request|failed to download|download.*denort|dns error|Connection refused|tcp connect error/i
    .test(stderr);
}

async function main(): Promise<number> {
  const denort = Deno.env.get("DENORT_BIN");
  const asked: string[] = [];
  for (let i = 0; i < Deno.args.length; i++) {
    if (Deno.args[i] === "--target") asked.push(Deno.args[++i]);
  }
  const targets = asked.length > 0 ? asked : denort ? [hostTarget()] : [...TARGETS];
  for (const t of targets) {
    if (!(TARGETS as readonly string[]).includes(t)) {
      console.error(`compile: unknown --target ${t}; choose from ${TARGETS.join(", ")}`);
      return 2;
    }
  }
  if (denort) {
    try {
      Deno.statSync(denort);
    } catch {
      console.error(`compile: DENORT_BIN=${denort} does not exist; point it at a denort binary`);
      return 2;
    }
    console.log(`compile: using the runtime in DENORT_BIN (${denort})`);
  }
  await Deno.mkdir("dist", { recursive: true });
  for (const target of targets) {
    console.log(`compile: ${outputName(target)}`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: compileArgs(target),
      stdout: "inherit",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    if (!out.success) {
      console.error(stderr);
      if (isDownloadFailure(stderr)) {
        console.error(
          "compile: deno could not download its runtime (denort) for " + target +
            " from Deno's download host, which is unreachable from here. Run this where that " +
            "host is reachable, or set DENORT_BIN to a local denort binary for the host target.",
        );
      }
      return 1;
    }
  }
  console.log(`compile: ${targets.length} executable(s) in dist/`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
