/**
 * What commands may touch of the outside world, injected so tests run
 * commands in-process and read what they printed.
 */

/** Streams, environment and terminal facts for one CLI run. */
export interface CliIo {
  /** Writes to stdout. */
  out(text: string): void;
  /** Writes to stderr. */
  err(text: string): void;
  /**
   * stderr as an asynchronous byte sink, for the serve log: a synchronous
   * write to a slow pipe would stall every request. Defaults to `err`.
   */
  errWriter?: { write(p: Uint8Array): Promise<number> | number };
  /** Environment variables. */
  env: Record<string, string | undefined>;
  /** Whether stdout is a terminal. */
  isTty: boolean;
  /** Reads a file synchronously (config, keys). */
  readTextFile(path: string): string;
  /** Resolves when the process is asked to stop (SIGINT/SIGTERM); `count` is 1, 2, … */
  onSignal?(listener: (count: number) => void): () => void;
}

const encoder = new TextEncoder();

/** The real process: Deno's stdout/stderr, environment and signals. */
export function processIo(): CliIo {
  return {
    out: (text) => void Deno.stdout.writeSync(encoder.encode(text)),
    err: (text) => void Deno.stderr.writeSync(encoder.encode(text)),
    errWriter: Deno.stderr,
    env: Deno.env.toObject(),
    isTty: Deno.stdout.isTerminal(),
    readTextFile: (path) => Deno.readTextFileSync(path),
    onSignal(listener) {
      let count = 0;
      const handler = () => listener(++count);
      const signals: Deno.Signal[] = Deno.build.os === "windows"
        ? ["SIGINT"]
        : ["SIGINT", "SIGTERM"];
      for (const s of signals) Deno.addSignalListener(s, handler);
      return () => {
        for (const s of signals) Deno.removeSignalListener(s, handler);
      };
    },
  };
}

/** An in-memory CliIo for tests: captures output. */
export function memoryIo(
  opts: { env?: Record<string, string>; files?: Record<string, string>; isTty?: boolean } = {},
): CliIo & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    env: opts.env ?? {},
    isTty: opts.isTty ?? false,
    readTextFile(path) {
      const files = opts.files ?? {};
      if (path in files) return files[path];
      throw new Deno.errors.NotFound(`no such file: ${path}`);
    },
    stdout: () => out,
    stderr: () => err,
  };
}
