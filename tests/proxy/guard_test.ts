import assert from "node:assert/strict";
import { guardResponse } from "../../lib/proxy/guard.ts";

Deno.test("guardResponse() returns a clean response unchanged", () => {
  const res = new Response("x", { headers: { "x-a": "caf\u00e9 \u00e2\u0080\u0094 ok" } });
  assert.equal(guardResponse(res), res);
});

Deno.test("guardResponse() drops headers with control bytes and reports each, keeping the rest", async () => {
  const headers = new Headers();
  headers.set("x-debug", "a\x7fb");
  headers.set("x-bell", "ring\x07");
  headers.set("x-ok", "fine");
  const dropped: string[] = [];
  const out = guardResponse(
    new Response("body", { status: 201, statusText: "Made", headers }),
    (n) => dropped.push(n),
  );
  assert.deepEqual(dropped.sort(), ["x-bell", "x-debug"]);
  assert.deepEqual([...out.headers], [["content-type", "text/plain;charset=UTF-8"], [
    "x-ok",
    "fine",
  ]]);
  assert.equal(out.status, 201);
  assert.equal(out.statusText, "Made");
  assert.equal(await out.text(), "body");
});

Deno.test("a guarded Deno.serve survives a handler that returns a control byte in a header", async () => {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => {
      const h = new Headers();
      h.set("x-debug", "a\x7fb");
      return guardResponse(new Response("alive", { headers: h }));
    },
  );
  try {
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`http://127.0.0.1:${server.addr.port}/`);
      assert.equal(await res.text(), "alive");
      assert.equal(res.headers.has("x-debug"), false);
    }
  } finally {
    await server.shutdown();
  }
});
