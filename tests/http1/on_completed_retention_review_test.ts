/**
 * Hostile review of 5f024c4, memory: once a response was written (or not),
 * a listener given to `info.onCompleted` must not stay reachable through
 * `info` (a handler, a log or a stuck upgrade may keep `info` for long).
 * Runs on the parent commit too (through `completed`), for comparison.
 */
import assert from "node:assert/strict";
import { COLLECT, withGc } from "../_helpers/gc_probe.ts";

Deno.test("review (memory): a told listener (and what it holds) is not kept by a live info", async () => {
  const r = await withGc(`
import { serveHttp1 } from "LIB/http1/server.ts";
${COLLECT}
const infos: unknown[] = []; // every info kept alive on purpose
const refs: WeakRef<object>[] = [];
let told = 0;
const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (_req, info) => {
  infos.push(info);
  const big = new Uint8Array(4 << 20);
  refs.push(new WeakRef(big));
  const fn = (ok: boolean) => { if (big.length && ok !== undefined) told++; };
  const i = info as unknown as { onCompleted?: (f: (ok: boolean) => void) => void; completed: Promise<void> };
  if (typeof i.onCompleted === "function") i.onCompleted(fn);
  else i.completed.then(() => fn(true), () => fn(false));
  return Promise.resolve(new Response("END"));
});
for (let k = 0; k < 3; k++) {
  const c = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
  await c.write(new TextEncoder().encode("GET / HTTP/1.1\\r\\nHost: h\\r\\nConnection: close\\r\\n\\r\\n"));
  const buf = new Uint8Array(4096);
  while ((await c.read(buf)) !== null) { /* drain until close */ }
  c.close();
}
await collect();
const alive = refs.filter((r) => r.deref() !== undefined).length;
await server.closeAll();
console.log(JSON.stringify({ told, alive, infos: infos.length }));
`);
  assert.equal(r.infos, 3);
  assert.equal(r.told, 3);
  assert.equal(r.alive, 0, "a told listener's closure is still reachable from its info");
});
