/**
 * A Deno script run as a child process under a low open-file limit
 * (`prlimit --nofile=N:N`), for tests of what happens when descriptors run
 * out. The child prints JSON lines on stdout (its first line says where it
 * listens); this collects them. Closing its stdin asks it to stop.
 */

/** True when util-linux's `prlimit` can run here. */
export async function havePrlimit(): Promise<boolean> {
  try {
    const r = await new Deno.Command("prlimit", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return r.success;
  } catch {
    return false;
  }
}

/** A running child and the lines it printed so far. */
export interface LimitedChild {
  /** Every complete stdout line, in order. */
  lines: string[];
  /** Waits (bounded) for the first line and parses it as JSON. */
  first<T>(timeoutMs?: number): Promise<T>;
  /** Closes stdin, waits for the exit (killing it after `graceMs`), and drains stdout. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts `script` with `deno run <permissions>` under `prlimit --nofile=<nofile>:<nofile>`. */
export function startLimitedChild(
  script: URL,
  opts: { nofile: number; permissions: string[] },
): LimitedChild {
  const child = new Deno.Command("prlimit", {
    args: [
      `--nofile=${opts.nofile}:${opts.nofile}`,
      Deno.execPath(),
      "run",
      ...opts.permissions,
      script.pathname,
    ],
    // No background update check: it would only warn that it got no descriptor.
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    let rest = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      rest += chunk;
      const parts = rest.split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    }
  })();
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  return {
    lines,
    async first<T>(timeoutMs = 30_000): Promise<T> {
      const deadline = Date.now() + timeoutMs;
      while (lines.length === 0 && Date.now() < deadline) await sleep(20);
      if (lines.length === 0) throw new Error(`child printed nothing in ${timeoutMs} ms`);
      return JSON.parse(lines[0]) as T;
    },
    async stop(graceMs = 10_000): Promise<void> {
      await child.stdin.close().catch(() => {});
      const done = await Promise.race([child.status, sleep(graceMs).then(() => null)]);
      if (done === null) child.kill("SIGKILL");
      await child.status;
      await reading;
    },
  };
}
