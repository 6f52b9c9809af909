import assert from "node:assert/strict";
import {
  finalCounts,
  formatClosingLine,
  parseClosingLine,
  parseDenoSummary,
} from "../../scripts/closing_line.ts";

const line = (...args: Parameters<typeof finalCounts>) => formatClosingLine(finalCounts(...args));

Deno.test("parseDenoSummary() reads the last summary, steps and ignored included", () => {
  const out = "ok | 3 passed | 0 failed (1s)\n" +
    "FAILED | 12 passed (3 steps) | 2 failed (1 step) | 1 ignored (2s)\n";
  assert.deepEqual(parseDenoSummary(out), { passed: 12, failed: 2, skipped: 1 });
  assert.equal(parseDenoSummary("error: Module not found"), undefined);
});

Deno.test("parseClosingLine() reads the last closing line only at the start of a line", () => {
  const log = "ok | 9 passed | 0 failed\n\n9 passed, 0 failed\nx 1 passed, 1 failed\n" +
    "7 passed, 2 failed, 3 skipped\n";
  assert.deepEqual(parseClosingLine(log), { passed: 7, failed: 2, skipped: 3 });
  assert.equal(parseClosingLine("ok | 9 passed | 0 failed"), undefined);
});

Deno.test("finalCounts() counts each failed gate as one more failure", () => {
  const green = { passed: 40, failed: 0, skipped: 2 };
  assert.equal(line(green), "40 passed, 0 failed, 2 skipped");
  // The coverage gate failed after a green test run: the line must not say 0 failed.
  assert.equal(line(green, { gateFailures: 1, exitStatus: 1 }), "40 passed, 1 failed, 2 skipped");
  // fmt and lint failed, and two tests failed.
  assert.equal(
    line({ passed: 5, failed: 2, skipped: 0 }, { gateFailures: 2 }),
    "5 passed, 4 failed",
  );
});

Deno.test("finalCounts() never reports 0 failed for a failed or unreported run", () => {
  // Deno said 0 failed but exited non-zero (a leak reported after the summary).
  assert.equal(
    line({ passed: 8, failed: 0, skipped: 0 }, { exitStatus: 1 }),
    "8 passed, 1 failed",
  );
  // The run crashed before any summary.
  assert.equal(line(undefined, { exitStatus: 1 }), "0 passed, 1 failed");
  // No line at all, even with a zero exit status, is not a pass.
  assert.equal(line(undefined), "0 passed, 1 failed");
  // Already counted failures are not counted twice for the same exit status.
  assert.equal(line({ passed: 1, failed: 3, skipped: 0 }, { exitStatus: 1 }), "1 passed, 3 failed");
});

Deno.test("closing_line.ts as a program adjusts the log's line for failed gates", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const log = `${dir}/test.log`;
    await Deno.writeTextFile(
      log,
      "... coverage ...\nok | 40 passed | 0 failed\n\n40 passed, 0 failed\n",
    );
    const run = async (...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          new URL("../../scripts/closing_line.ts", import.meta.url).pathname,
          ...args,
        ],
        stdout: "piped",
      }).output();
      assert.ok(out.success);
      return new TextDecoder().decode(out.stdout);
    };
    assert.equal(
      await run("--gate-failures", "0", "--exit-status", "0", log),
      "40 passed, 0 failed\n",
    );
    assert.equal(
      await run("--gate-failures", "1", "--exit-status", "1", log),
      "40 passed, 1 failed\n",
    );
    assert.equal(await run(`${dir}/missing.log`), "0 passed, 1 failed\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
