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

/**
 * Module text for `withGc`: a server answering "ok" (`serverOptions` added
 * to its options), then `n` connections, each opened just after moving on
 * to a fresh slab (watched) and handed to `perConnection`, code that sees
 * the connection as `c` and a read buffer as `buf`. Prints how many
 * watched slabs are still alive after a full collection (`alive`) and how
 * many connections the server holds open (`open`).
 */
export function heldConnectionsProbe(n: number, perConnection: string, serverOptions = ""): string {
  return `
import { serveHttp1 } from "LIB/http1/server.ts";
${SLAB_PROBE}
${COLLECT}
const server = serveHttp1({ hostname: "127.0.0.1", port: 0${serverOptions} }, () => new Response("ok"));
const refs = [];
const conns = [];
const buf = new Uint8Array(4096);
for (let i = 0; i < ${n}; i++) {
  nextSlab();
  refs.push(new WeakRef(currentSlab()));
  const c = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  conns.push(c);
  ${perConnection}
}
nextSlab();
await collect();
console.log(JSON.stringify({ alive: alive(refs), open: server.connections }));
for (const c of conns) c.close();
await server.shutdown();
`;
}
