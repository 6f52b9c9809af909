/**
 * Remote commands over a tunnel's SSH connection, and GPU metrics from
 * `nvidia-smi`. A failed query is a value, not an exception, and never touches
 * the connection: missing metrics only make the UI show them as stale.
 */
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import { Buffer } from "node:buffer";
import type { GpuMetrics, GpuResult } from "../core/gpu_metrics.ts";
import type { ExecResult, Tunnel } from "./tunnel.ts";
import { ExecError } from "./errors.ts";

/** The exact command vastproxy runs on every instance (DESIGN.md §5). */
export const NVIDIA_SMI_COMMAND = "nvidia-smi " +
  "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw " +
  "--format=csv,noheader,nounits";

/** The part of an ssh2 `Client` that runs commands. */
export interface ExecClient {
  exec(
    command: string,
    callback: (err: Error | undefined, channel: ClientChannel) => void,
  ): unknown;
}

/** Output kept per stream; more is dropped so a chatty command cannot eat memory. */
const MAX_OUTPUT_BYTES = 1 << 20;

/**
 * Runs `command` on `client`, collecting stdout, stderr and the exit code.
 * On timeout the channel is closed (the remote command gets SIGHUP with its
 * session) and an `ExecError` with `timedOut` rejects; the connection stays.
 */
export function execCommand(
  client: ExecClient,
  command: string,
  opts: { timeoutMs: number; instanceId: number },
): Promise<ExecResult> {
  return new Promise<ExecResult>((resolve, reject) => {
    let channel: ClientChannel | undefined;
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => {
      finish(() => {
        closeQuietly(channel);
        reject(
          new ExecError(opts.instanceId, `command timed out after ${opts.timeoutMs} ms`, {
            timedOut: true,
          }),
        );
      });
    }, opts.timeoutMs);

    try {
      client.exec(command, (err, ch) => {
        if (err) {
          return finish(() => reject(new ExecError(opts.instanceId, err.message, { cause: err })));
        }
        if (done) return closeQuietly(ch);
        channel = ch;
        const out = collector();
        const errOut = collector();
        let code: number | null = null;
        ch.on("data", out.push);
        ch.stderr.on("data", errOut.push);
        ch.on("error", () => {});
        ch.stderr.on("error", () => {});
        ch.on("exit", (exitCode: number | null) => {
          code = typeof exitCode === "number" ? exitCode : null;
        });
        ch.on("close", () => {
          finish(() => resolve({ stdout: out.text(), stderr: errOut.text(), code }));
        });
      });
    } catch (err) {
      // exec() throws synchronously once the connection is gone.
      finish(() =>
        reject(new ExecError(opts.instanceId, "SSH connection is not open", { cause: err }))
      );
    }
  });
}

function collector() {
  const chunks: Uint8Array[] = [];
  let size = 0;
  return {
    push: (chunk: Uint8Array) => {
      if (size >= MAX_OUTPUT_BYTES) return;
      chunks.push(chunk);
      size += chunk.byteLength;
    },
    // Decoding once at the end avoids splitting multi-byte characters.
    text: () => Buffer.concat(chunks).toString("utf8"),
  };
}

function closeQuietly(channel: ClientChannel | undefined): void {
  try {
    channel?.close();
  } catch {
    // The channel or connection is already gone.
  }
}

/**
 * Runs nvidia-smi through `tunnel` and parses it. Never throws: a non-zero
 * exit, a missing binary, a timeout or a tunnel that is down come back as
 * `{ok: false, error}`, and the tunnel is left as it was.
 */
export async function queryGpus(
  tunnel: Pick<Tunnel, "exec">,
  opts: { timeoutMs?: number } = {},
): Promise<GpuResult> {
  let result: ExecResult;
  try {
    result = await tunnel.exec(NVIDIA_SMI_COMMAND, { timeoutMs: opts.timeoutMs ?? 5_000 });
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  if (result.code !== 0) {
    const detail = firstLine(result.stderr) || firstLine(result.stdout);
    const what = result.code === 127
      ? "nvidia-smi not found on the instance"
      : result.code === null
      ? "nvidia-smi was killed"
      : `nvidia-smi exited with code ${result.code}`;
    return { ok: false, error: detail ? `${what}: ${detail}` : what };
  }
  const gpus = parseNvidiaSmi(result.stdout);
  if (gpus.length === 0 && result.stdout.trim() !== "") {
    return { ok: false, error: `unexpected nvidia-smi output: ${firstLine(result.stdout)}` };
  }
  return { ok: true, gpus };
}

function firstLine(text: string): string {
  return (text.split("\n").find((l) => l.trim() !== "") ?? "").trim().slice(0, 200);
}

/**
 * Parses `nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,
 * memory.total,temperature.gpu,power.draw --format=csv,noheader,nounits`.
 *
 * Pure. Fields are trimmed; `[N/A]`, `[Not Supported]`, empty or otherwise
 * non-numeric values become null. The name may hold spaces (and, defensively,
 * commas: it is everything between the first field and the last five). Blank
 * lines are ignored; a malformed line (fewer than 7 fields, or an index that
 * is not a whole number) is skipped, so one odd GPU never hides the others.
 */
export function parseNvidiaSmi(text: string): GpuMetrics[] {
  const gpus: GpuMetrics[] = [];
  for (const raw of text.split(/\r?\n/)) {
    if (raw.trim() === "") continue;
    const fields = raw.split(",").map((f) => f.trim());
    if (fields.length < 7) continue;
    const index = fields[0];
    if (!/^\d+$/.test(index) || !Number.isSafeInteger(Number(index))) continue;
    const [util, memUsed, memTotal, temp, power] = fields.slice(-5).map(numberOrNull);
    gpus.push({
      index: Number(index),
      name: fields.slice(1, -5).join(", "),
      utilization: util,
      memoryUsed: memUsed,
      memoryTotal: memTotal,
      temperature: temp,
      powerDraw: power,
    });
  }
  return gpus;
}

function numberOrNull(field: string): number | null {
  // Number("") is 0, and "[N/A]" / "[Not Supported]" are the driver's way of
  // saying "unknown": only a plain decimal counts as a value.
  if (!/^-?\d+(\.\d+)?$/.test(field)) return null;
  // A digit string too long for a double would become Infinity (JSON null, "+Inf" in metrics).
  const n = Number(field);
  return Number.isFinite(n) ? n : null;
}
