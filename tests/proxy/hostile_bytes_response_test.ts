/**
 * A hostile engine against the relay's bytes answers (raw.ts BytesResponse,
 * which skips the Response constructor) through the proxy's own HTTP/1.1
 * server and guard, as proxy_app.ts composes them: odd statuses, reason
 * phrases and field values must reach the client as the old path sent
 * them (or as a 502), never crash the server, and never keep a slot.
 */
import assert from "node:assert/strict";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { startRawEngine } from "../_helpers/raw_engine.ts";
import { RawClient } from "../_helpers/raw_http.ts";

/** Engine answers by target; each keeps its body at two bytes ("ok"). */
const ANSWERS: Record<string, string> = {
  "/ctl-reason": "HTTP/1.1 200 A\x01B\r\ncontent-length: 2\r\n\r\nok",
  "/del-reason": "HTTP/1.1 201 A\x7fB\r\ncontent-length: 2\r\n\r\nok",
  "/obs-reason": "HTTP/1.1 299 Wh\xffat\r\ncontent-length: 2\r\n\r\nok",
  "/tab-reason": "HTTP/1.1 400 \tx\t\r\ncontent-length: 2\r\n\r\nok",
  "/empty-reason": "HTTP/1.1 404 \r\ncontent-length: 2\r\n\r\nok",
  "/no-reason": "HTTP/1.1 503\r\ncontent-length: 2\r\n\r\nok",
  "/599": "HTTP/1.1 599 Odd\r\ncontent-length: 2\r\n\r\nok",
  "/600": "HTTP/1.1 600 Odd\r\ncontent-length: 2\r\n\r\nok",
  "/999": "HTTP/1.1 999 Odd\r\ncontent-length: 2\r\n\r\nok",
  "/205": "HTTP/1.1 205 Reset\r\ncontent-length: 2\r\n\r\nok",
  "/obs-value": "HTTP/1.1 200 OK\r\nx-a: caf\xc3\xa9 \xff\r\ncontent-length: 2\r\n\r\nok",
  "/ctl-value": "HTTP/1.1 200 OK\r\nx-a: a\x01b\r\nx-b: 1\r\ncontent-length: 2\r\n\r\nok",
  "/del-value": "HTTP/1.1 200 OK\r\nx-a: a\x7fb\r\ncontent-length: 2\r\n\r\nok",
  "/vt-value": "HTTP/1.1 200 OK\r\nx-a: a\x0bb\r\ncontent-length: 2\r\n\r\nok",
  "/ws-value": "HTTP/1.1 200 OK\r\nx-a: \t a \t\r\nx-a: \r\ncontent-length: 2\r\n\r\nok",
  "/cookie":
    "HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=\x01\r\ncontent-length: 2\r\n\r\nok",
  "/odd-name": "HTTP/1.1 200 OK\r\nx{a}: 1\r\ncontent-length: 2\r\n\r\nok",
  "/cl-dup": "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok",
  "/date":
    "HTTP/1.1 200 OK\r\ndate: \x80\r\nconnection: x-a\r\nx-a: 1\r\ncontent-length: 2\r\n\r\nok",
};

/** True once `s` (from offset `from`) holds one whole response with a Content-Length or none. */
function whole(s: string, from = 0): boolean {
  const end = s.indexOf("\r\n\r\n", from);
  if (end === -1) return false;
  const m = /\r\ncontent-length: (\d+)\r\n/i.exec(s.slice(from, end + 2));
  return s.length - (end + 4) >= (m ? Number(m[1]) : 0);
}

Deno.test("hostile statuses, reasons and fields on bytes answers never crash the proxy's server", async () => {
  const engine = startRawEngine((r) =>
    ANSWERS[r.target] ?? "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
  );
  const target = new FakeTarget(1, { baseUrl: engine.url });
  const h = relayOver([target]);
  const errors: unknown[] = [];
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    onError: (err) => {
      errors.push(err);
      return new Response("handler error", { status: 500 });
    },
  }, async (req) => guardResponse(await h(req)));
  try {
    for (const path of [...Object.keys(ANSWERS), "/plain"]) {
      for (const method of ["GET", "POST"]) {
        const c = await RawClient.open(server.addr.port);
        try {
          const body = method === "POST" ? "content-length: 2\r\n\r\nhi" : "\r\n";
          await c.send(`${method} ${path} HTTP/1.1\r\nhost: p\r\n${body}`);
          const got = await c.until((s) => whole(s));
          const status = Number(got.slice(9, 12));
          const where = `${method} ${path}: ${JSON.stringify(got)}`;
          assert.ok(status >= 200 && status <= 599, where);
          // Nothing a client would parse as another line or field.
          const head = got.slice(0, got.indexOf("\r\n\r\n"));
          // deno-lint-ignore no-control-regex -- control bytes are what is checked
          assert.ok(!/[\x00-\x08\x0a-\x1f\x7f]/.test(head.replace(/\r\n/g, "")), where);
          assert.equal(
            head.split("\r\n").filter((l) => /^content-length:/i.test(l)).length <= 1,
            true,
            where,
          );
          if (path === "/plain") assert.ok(got.endsWith("ok"), where);
          // The server keeps serving this connection (or closed it cleanly).
          if (!c.closed) {
            const before = c.received.length;
            await c.send("GET /plain HTTP/1.1\r\nhost: p\r\n\r\n");
            const again = await c.until((s) => whole(s, before));
            assert.match(again.slice(before), /^HTTP\/1\.1 200 /, where);
          }
        } finally {
          c.close();
        }
      }
    }
    assert.equal(target.inFlight - target.baseLoad, 0, "an in-flight slot was kept");
    assert.equal(target.doubleReleases, 0);
  } finally {
    await server.shutdown();
    target.close();
    await engine.close();
  }
  // onError is the server's last resort: a relay answer reaching it is a bug.
  assert.deepEqual(errors.map(String), []);
});
