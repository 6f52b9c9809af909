import assert from "node:assert/strict";
import { NVIDIA_SMI_COMMAND, parseNvidiaSmi, queryGpus } from "../../lib/tunnel/gpu.ts";
import { ExecError } from "../../lib/tunnel/errors.ts";
import type { ExecResult } from "../../lib/tunnel/tunnel.ts";

Deno.test("parseNvidiaSmi() reads one GPU per line, trimming fields", () => {
  const text = "0, NVIDIA H100 80GB HBM3, 99, 81000, 81559, 71, 690.55\n" +
    "1, NVIDIA H100 80GB HBM3, 0, 4, 81559, 30, 70.1\n";
  assert.deepEqual(parseNvidiaSmi(text), [
    {
      index: 0,
      name: "NVIDIA H100 80GB HBM3",
      utilization: 99,
      memoryUsed: 81000,
      memoryTotal: 81559,
      temperature: 71,
      powerDraw: 690.55,
    },
    {
      index: 1,
      name: "NVIDIA H100 80GB HBM3",
      utilization: 0,
      memoryUsed: 4,
      memoryTotal: 81559,
      temperature: 30,
      powerDraw: 70.1,
    },
  ]);
});

Deno.test("parseNvidiaSmi() turns [N/A], [Not Supported] and empty fields into null", () => {
  const [gpu] = parseNvidiaSmi("0, Tesla T4, [N/A], 10, 15360, [Not Supported], \n");
  assert.equal(gpu.utilization, null);
  assert.equal(gpu.temperature, null);
  assert.equal(gpu.powerDraw, null);
  assert.equal(gpu.memoryUsed, 10);
});

Deno.test("parseNvidiaSmi() ignores blank lines and CRLF, skips malformed lines", () => {
  const text = "\r\n0, RTX 4090, 1, 2, 3, 4, 5\r\n\n" +
    "garbage line\n" + // too few fields
    "x, RTX 4090, 1, 2, 3, 4, 5\n" + // index not a number
    "1, Weird, Name, 1, 2, 3, 4, 5\n"; // comma in the name is kept
  const gpus = parseNvidiaSmi(text);
  assert.deepEqual(gpus.map((g) => [g.index, g.name]), [[0, "RTX 4090"], [1, "Weird, Name"]]);
  assert.deepEqual(parseNvidiaSmi(""), []);
});

function fakeTunnel(result: ExecResult | Error) {
  const calls: string[] = [];
  return {
    calls,
    exec(command: string): Promise<ExecResult> {
      calls.push(command);
      return result instanceof Error ? Promise.reject(result) : Promise.resolve(result);
    },
  };
}

Deno.test("queryGpus() runs the exact nvidia-smi command and parses it", async () => {
  const t = fakeTunnel({ stdout: "0, A10, 5, 1, 2, 3, 4\n", stderr: "", code: 0 });
  const r = await queryGpus(t);
  assert.equal(t.calls[0], NVIDIA_SMI_COMMAND);
  assert.equal(
    NVIDIA_SMI_COMMAND,
    "nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total," +
      "temperature.gpu,power.draw --format=csv,noheader,nounits",
  );
  assert.equal(r.ok, true);
});

Deno.test("queryGpus() returns error values and never throws", async () => {
  const notFound = await queryGpus(
    fakeTunnel({ stdout: "", stderr: "bash: nvidia-smi: command not found\n", code: 127 }),
  );
  assert.deepEqual(notFound, {
    ok: false,
    error: "nvidia-smi not found on the instance: bash: nvidia-smi: command not found",
  });
  const failed = await queryGpus(
    fakeTunnel({ stdout: "", stderr: "NVIDIA-SMI has failed\n", code: 9 }),
  );
  assert.match((failed as { error: string }).error, /exited with code 9: NVIDIA-SMI has failed/);
  const timeout = await queryGpus(
    fakeTunnel(new ExecError(1, "command timed out after 5 ms", { timedOut: true })),
  );
  assert.match((timeout as { error: string }).error, /timed out/);
  const junk = await queryGpus(fakeTunnel({ stdout: "what\n", stderr: "", code: 0 }));
  assert.match((junk as { error: string }).error, /unexpected nvidia-smi output: what/);
});
