/**
 * Memory probes for tests: a module body run in a child Deno with `gc()`
 * exposed, so a test can tell what a piece of code keeps alive.
 */
import assert from "node:assert/strict";

/**
 * Runs `code` (a module body) in a child Deno with `gc()` exposed and
 * returns what it printed as JSON. `LIB` and `TESTS` in `code` are replaced
 * by the absolute URLs of lib/ and tests/.
 */
export async function withGc(
  code: string,
  v8Flags = "--expose-gc",
): Promise<Record<string, number>> {
  const root = new URL("../../", import.meta.url);
  const dir = await Deno.makeTempDir();
  const file = `${dir}/gc_probe.ts`;
  try {
    await Deno.writeTextFile(
      file,
      code.replaceAll("LIB/", new URL("lib/", root).href)
        .replaceAll("TESTS/", new URL("tests/", root).href),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-check",
        `--v8-flags=${v8Flags}`,
        "--config",
        new URL("deno.json", root).pathname,
        file,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, `probe failed: ${stderr}`);
    return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Module text defining `collect()`: a few timer turns and full collections. */
export const COLLECT = `
const g = (globalThis as unknown as { gc: () => void }).gc;
async function collect() {
  for (let i = 0; i < 3; i++) {
    await new Promise((r) => setTimeout(r, 5));
    g();
  }
}
`;

/**
 * Module text for `withGc` probes of the slab (core/slab.ts): `nextSlab()`
 * moves on to a fresh slab, `alive(refs)` counts the slabs among `refs`
 * still alive, not counting the current one.
 */
export const SLAB_PROBE = `
import { allocBytes, currentSlab, SLAB_MAX } from "LIB/core/slab.ts";
function nextSlab() {
  const first = currentSlab();
  while (currentSlab() === first) allocBytes(SLAB_MAX);
}
function alive(refs) {
  return refs.filter((r) => r.deref() !== undefined && r.deref() !== currentSlab()).length;
}
`;
