import assert from "node:assert/strict";
import { guardBrowsers } from "../../lib/proxy/browser_guard.ts";
import { CorsPolicy, normalizeOrigin } from "../../lib/proxy/cors.ts";
import { errorResponse } from "../../lib/proxy/errors.ts";
import type { Handler, RequestLogLine } from "../../lib/proxy/relay.ts";

const UI = "http://localhost:3000";
const EVIL = "https://evil.example";

/** A stand-in for the relay that answers like a vLLM engine would (ACAO: *), or 401 without a token. */
function fakeRelay(): { h: Handler; calls: Request[] } {
  const calls: Request[] = [];
  const h: Handler = (req) => {
    calls.push(req);
    if (req.headers.get("authorization") !== "Bearer tok") {
      return Promise.resolve(errorResponse("invalid_api_key"));
    }
    return Promise.resolve(
      new Response("answer", {
        headers: {
          "access-control-allow-origin": "*",
          "access-control-allow-credentials": "true",
          "x-vastproxy-instance": "7",
          "vary": "accept-encoding",
        },
      }),
    );
  };
  return { h, calls };
}

function req(
  path: string,
  init: { method?: string; host?: string; headers?: Record<string, string>; body?: string } = {},
): Request {
  const headers = new Headers(init.headers);
  headers.set("host", init.host ?? "127.0.0.1:8080");
  return new Request(`http://127.0.0.1:8080${path}`, {
    method: init.method ?? "GET",
    headers,
    body: init.body,
  });
}

Deno.test("normalizeOrigin() keeps origins, *, and explains URLs and other schemes", () => {
  assert.deepEqual(normalizeOrigin("http://LocalHost:3000/"), { origin: "http://localhost:3000" });
  assert.deepEqual(normalizeOrigin("https://chat.example"), { origin: "https://chat.example" });
  assert.deepEqual(normalizeOrigin(" * "), { origin: "*" });
  for (const bad of ["localhost:3000", "http://a.example/chat", "file:///x", "null", ""]) {
    assert.ok("problem" in normalizeOrigin(bad), bad);
  }
});

Deno.test("CorsPolicy.verdict() tells same-origin, allowed and denied apart", () => {
  const none = new CorsPolicy([]);
  assert.equal(none.verdict("http://127.0.0.1:8080", "127.0.0.1:8080"), "same-origin");
  assert.equal(none.verdict(UI, "127.0.0.1:8080"), "denied");
  assert.equal(none.verdict("null", "127.0.0.1:8080"), "denied");
  const listed = new CorsPolicy([UI]);
  assert.equal(listed.verdict(UI, "127.0.0.1:8080"), "allowed");
  assert.equal(listed.verdict("http://localhost:3001", "127.0.0.1:8080"), "denied");
  assert.equal(new CorsPolicy(["*"]).verdict(EVIL, null), "allowed");
});

Deno.test("CorsPolicy.apply() strips engine Access-Control-* headers, also from immutable responses", () => {
  const policy = new CorsPolicy([UI]);
  const engine = new Response("x", {
    headers: { "access-control-allow-origin": "*", "access-control-max-age": "5" },
  });
  const plain = policy.apply(engine, null);
  assert.equal(plain.headers.get("access-control-allow-origin"), null);
  assert.equal(plain.headers.get("access-control-max-age"), null);
  assert.equal(plain.headers.get("vary"), "origin");
  const redirect = policy.apply(Response.redirect("http://127.0.0.1:8080/x", 302), UI);
  assert.equal(redirect.status, 302);
  assert.equal(redirect.headers.get("access-control-allow-origin"), UI);
  assert.equal(redirect.headers.get("location"), "http://127.0.0.1:8080/x");
});

Deno.test("guardBrowsers() without a token refuses foreign Host names with 403, before the relay", async () => {
  const { h, calls } = fakeRelay();
  const lines: RequestLogLine[] = [];
  const g = guardBrowsers(h, {
    authToken: null,
    listenHostname: "127.0.0.1",
    allowedHosts: ["gpu.lan"],
    corsOrigins: [],
    onRequestLog: (l) => lines.push(l),
  });
  const res = await g(req("/v1/models?key=secret", { host: "attacker.example:8080" }));
  assert.equal(res.status, 403);
  const body = await res.json();
  assert.equal(body.error.code, "host_not_allowed");
  assert.match(body.error.message, /--allowed-host/);
  assert.match(body.error.message, /attacker\.example:8080/);
  assert.equal(calls.length, 0);
  assert.equal(lines[0].status, 403);
  assert.equal(lines[0].path, "/v1/models", "no query in the log");
  for (const host of ["localhost:8080", "gpu.lan:8080", "10.1.2.3:8080"]) {
    const ok = await g(req("/v1/x", { host, headers: { authorization: "Bearer tok" } }));
    assert.equal(ok.status, 200, host);
    await ok.body?.cancel();
  }
});

Deno.test("guardBrowsers() with a token serves any Host (the token protects)", async () => {
  const { h } = fakeRelay();
  const g = guardBrowsers(h, {
    authToken: "tok",
    listenHostname: "0.0.0.0",
    allowedHosts: [],
    corsOrigins: [],
  });
  const res = await g(
    req("/v1/x", { host: "gpu.example.com", headers: { authorization: "Bearer tok" } }),
  );
  assert.equal(res.status, 200);
  await res.body?.cancel();
});

Deno.test("guardBrowsers() by default refuses every cross-origin request, preflight or not, and never relays the engine's ACAO", async () => {
  const { h, calls } = fakeRelay();
  const g = guardBrowsers(h, {
    authToken: null,
    listenHostname: "127.0.0.1",
    allowedHosts: [],
    corsOrigins: [],
  });
  const preflight = await g(req("/v1/chat/completions", {
    method: "OPTIONS",
    headers: { origin: EVIL, "access-control-request-method": "POST" },
  }));
  assert.equal(preflight.status, 403);
  assert.equal(preflight.headers.get("access-control-allow-origin"), null);
  // A "simple" POST needs no preflight: refused before it can make an engine generate.
  const simple = await g(req("/v1/chat/completions", {
    method: "POST",
    headers: { origin: EVIL, "content-type": "text/plain" },
    body: '{"model":"m","messages":[]}',
  }));
  assert.equal(simple.status, 403);
  assert.equal((await simple.json()).error.code, "origin_not_allowed");
  assert.equal(simple.headers.get("access-control-allow-origin"), null);
  assert.equal(calls.length, 0, "nothing reached the relay");
  // No Origin (curl, SDKs): relayed, and the engine's "anyone" is not passed on.
  const cli = await g(req("/v1/x", { headers: { authorization: "Bearer tok" } }));
  assert.equal(cli.status, 200);
  assert.equal(cli.headers.get("access-control-allow-origin"), null);
  assert.equal(cli.headers.get("access-control-allow-credentials"), null);
  assert.equal(await cli.text(), "answer");
  // Same-origin (Origin equals http://Host) is served; it needs no CORS headers.
  const same = await g(req("/v1/x", {
    method: "POST",
    headers: { origin: "http://127.0.0.1:8080", authorization: "Bearer tok" },
    body: "{}",
  }));
  assert.equal(same.status, 200);
  assert.equal(same.headers.get("access-control-allow-origin"), null);
  await same.body?.cancel();
});

Deno.test("guardBrowsers() answers an allowed origin's preflight itself, before authentication", async () => {
  const { h, calls } = fakeRelay();
  const g = guardBrowsers(h, {
    authToken: "tok",
    listenHostname: "127.0.0.1",
    allowedHosts: [],
    corsOrigins: [UI],
  });
  const res = await g(req("/v1/chat/completions", {
    method: "OPTIONS",
    headers: {
      origin: UI,
      "access-control-request-method": "POST",
      "access-control-request-headers": "Authorization, Content-Type, X-Stainless-OS",
      "access-control-request-private-network": "true",
    },
  }));
  assert.equal(res.status, 204);
  assert.equal(res.headers.get("access-control-allow-origin"), UI);
  assert.match(res.headers.get("access-control-allow-methods")!, /POST/);
  assert.match(res.headers.get("access-control-allow-headers")!, /x-stainless-os/);
  assert.match(res.headers.get("access-control-allow-headers")!, /authorization/);
  assert.equal(res.headers.get("access-control-allow-private-network"), "true");
  assert.equal(res.headers.get("access-control-allow-credentials"), null);
  assert.match(res.headers.get("vary")!, /origin/);
  assert.equal(calls.length, 0, "no 401, no engine");
  // Garbage in Access-Control-Request-Headers is not echoed.
  const odd = await g(req("/v1/x", {
    method: "OPTIONS",
    headers: {
      origin: UI,
      "access-control-request-method": "POST",
      "access-control-request-headers": "x\u00e9y",
    },
  }));
  assert.equal(
    odd.headers.get("access-control-allow-headers"),
    "authorization, content-type, x-vastproxy-instance",
  );
});

Deno.test("guardBrowsers() puts the same CORS headers on relayed and proxy-made answers for an allowed origin", async () => {
  const { h } = fakeRelay();
  const g = guardBrowsers(h, {
    authToken: "tok",
    listenHostname: "127.0.0.1",
    allowedHosts: [],
    corsOrigins: [UI],
  });
  const relayed = await g(req("/v1/x", { headers: { origin: UI, authorization: "Bearer tok" } }));
  const unauthorized = await g(req("/v1/models", { headers: { origin: UI } }));
  assert.equal(unauthorized.status, 401);
  for (const res of [relayed, unauthorized]) {
    assert.equal(res.headers.get("access-control-allow-origin"), UI);
    assert.match(res.headers.get("access-control-expose-headers")!, /x-vastproxy-instance/);
    assert.equal(res.headers.get("access-control-allow-credentials"), null);
    assert.match(res.headers.get("vary")!, /origin/);
    await res.body?.cancel();
  }
  assert.equal(relayed.headers.get("vary"), "accept-encoding, origin");
  const other = await g(req("/v1/x", { headers: { origin: EVIL, authorization: "Bearer tok" } }));
  assert.equal(other.status, 403);
  await other.body?.cancel();
});

Deno.test("guardBrowsers() with --cors-origin * answers ACAO * and never allows credentials", async () => {
  const { h } = fakeRelay();
  const g = guardBrowsers(h, {
    authToken: "tok",
    listenHostname: "127.0.0.1",
    allowedHosts: [],
    corsOrigins: ["*"],
  });
  const res = await g(req("/v1/x", { headers: { origin: EVIL, authorization: "Bearer tok" } }));
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  assert.equal(res.headers.get("access-control-allow-credentials"), null);
  assert.equal(res.headers.get("vary"), "accept-encoding");
  await res.body?.cancel();
  const pre = await g(req("/v1/x", {
    method: "OPTIONS",
    headers: { origin: EVIL, "access-control-request-method": "POST" },
  }));
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "*");
});

Deno.test("guardBrowsers() gives an allowed origin a readable host_not_allowed", async () => {
  const { h } = fakeRelay();
  const g = guardBrowsers(h, {
    authToken: null,
    listenHostname: "127.0.0.1",
    allowedHosts: [],
    corsOrigins: [UI],
  });
  const res = await g(req("/v1/models", { host: "gpu.lan:8080", headers: { origin: UI } }));
  assert.equal(res.status, 403);
  assert.equal(res.headers.get("access-control-allow-origin"), UI);
  await res.body?.cancel();
});
