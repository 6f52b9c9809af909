/**
 * How `serve` and `demo` present themselves: the live table on a terminal,
 * or one log line per event otherwise. Both sit behind one `Logger`, which
 * switches to plain lines once the table closes so shutdown messages are
 * still seen.
 */
import type { CliIo } from "../cli/cli_io.ts";
import type { LogFields, Logger, LogLevel } from "../core/logger.ts";
import { logRequest, type RequestLogLine } from "../core/request_log.ts";
import type { RunningProxy } from "../app/proxy_app.ts";
import { LineLogger, shouldUseColor } from "../ui/log.ts";
import { denoTerminal, enterRawMode, exitRawMode, LiveUI, UiLogBuffer } from "../ui/live.ts";
import { textWriter } from "./_io_writer.ts";

/**
 * How long a log line may wait to share a write with later ones. Invisible
 * to a person or a log shipper; under load it turns a write per request line
 * into about twenty writes a second.
 */
const LOG_BATCH_MS = 50;

/** A logger whose destination can change while modules hold on to it. */
export class SwitchLogger implements Logger {
  #target: Logger;
  constructor(target: Logger) {
    this.#target = target;
  }
  /** Sends later records to `target`. */
  switchTo(target: Logger): void {
    this.#target = target;
  }
  /** Forwards one record. */
  log(level: LogLevel, msg: string, fields?: LogFields): void {
    this.#target.log(level, msg, fields);
  }
  /** Forwards one request line, to the target's own formatter when it has one. */
  request(line: RequestLogLine): void {
    logRequest(this.#target, line);
  }
}

/** The presentation of one serve run. */
export interface ServeUi {
  logger: SwitchLogger;
  /** Starts the live table (if any) once the proxy runs; `quit` is called on `q`. */
  attach(proxy: RunningProxy, quit: () => void): void;
  /** Closes the table and returns the terminal to normal. */
  detach(): void;
  /** Waits for queued log lines. */
  flush(): Promise<void>;
}

/** Builds the UI for a run: TUI when `tui` and stdout is a terminal, else log lines. */
export function createServeUi(
  opts: { tui: boolean; logFormat: "text" | "json"; secrets: string[] },
  io: CliIo,
): ServeUi {
  const lines = new LineLogger({
    writer: io.errWriter ?? textWriter((t) => io.err(t)),
    format: opts.logFormat,
    secrets: opts.secrets,
    color: opts.logFormat === "text" && shouldUseColor({ isTty: io.isTty, env: io.env }),
    batchMs: LOG_BATCH_MS,
  });
  if (!opts.tui) {
    return {
      logger: new SwitchLogger(lines),
      attach() {},
      detach() {},
      flush: () => lines.flush(),
    };
  }
  const buffer = new UiLogBuffer({ secrets: opts.secrets });
  const logger = new SwitchLogger(buffer);
  let ui: LiveUI | undefined;
  let raw = false;
  const stop = new AbortController();
  return {
    logger,
    attach(proxy, quit) {
      raw = enterRawMode();
      ui = new LiveUI({
        stdout: denoTerminal(),
        stdin: raw ? Deno.stdin.readable : null,
        snapshot: () => proxy.status(),
        actions: { ...proxy.actions, quit },
        color: shouldUseColor({ isTty: io.isTty, env: io.env }),
        logBuffer: buffer,
      });
      void ui.start(stop.signal).catch((err) => {
        logger.switchTo(lines);
        lines.log("error", "terminal UI failed; continuing with log lines", {
          error: err instanceof Error ? err.message : String(err),
        });
      });
    },
    detach() {
      stop.abort();
      ui?.stop();
      if (raw) exitRawMode();
      raw = false;
      logger.switchTo(lines);
    },
    flush: () => lines.flush(),
  };
}
