/**
 * Browsers against the real listener (`startProxy` → `Deno.serve`, real TCP):
 * DNS rebinding and foreign pages get nothing from the token-less default,
 * and a chat UI on an allowed origin works with `--auth-token`. The fake
 * engines answer like vLLM's default CORS setup (`Access-Control-Allow-Origin:
 * *` to everyone), which the proxy must never pass on.
 */
import assert from "node:assert/strict";
import { rawExchange, startLocalProxy, until } from "./_local_proxy.ts";

const UI = "http://localhost:3000";
const EVIL = "https://evil.example";
const TOKEN = "ui-token-3f9a1c";
const CHAT = JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] });

Deno.test("browser: a rebinding page (foreign Host) is refused by the token-less default", async () => {
  const p = await startLocalProxy({ instances: 1 });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const port = Number(new URL(p.proxy.url).port);
    const before = p.engines[0].stats.requests;
    for (const path of ["/v1/models", "/v1/chat/completions", "/vastproxy/status"]) {
      const text = await rawExchange(
        port,
        `GET ${path} HTTP/1.1\r\nHost: attacker.example:${port}\r\nConnection: close\r\n\r\n`,
      );
      assert.match(text, /^HTTP\/1\.1 403/, path);
      assert.match(text, /"code":"host_not_allowed"/);
      assert.match(text, /--allowed-host/);
    }
    assert.equal(p.engines[0].stats.requests, before, "nothing reached the engine");
    // Loopback names are served as before.
    const ok = await rawExchange(
      port,
      `GET /v1/models HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`,
    );
    assert.match(ok, /^HTTP\/1\.1 200/);
  } finally {
    await p.close();
  }
});

Deno.test("browser: a page on a foreign origin can neither read answers nor make an engine generate", async () => {
  const p = await startLocalProxy({ instances: 1 });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const before = p.engines[0].stats.requests;
    const attempts: [string, RequestInit][] = [
      ["/v1/models", { headers: { origin: EVIL } }],
      // A "simple" request: a browser sends it without a preflight.
      ["/v1/chat/completions", {
        method: "POST",
        headers: { origin: EVIL, "content-type": "text/plain" },
        body: CHAT,
      }],
      ["/v1/chat/completions", {
        method: "OPTIONS",
        headers: { origin: EVIL, "access-control-request-method": "POST" },
      }],
      ["/v1/chat/completions", {
        method: "POST",
        headers: { origin: "null", "content-type": "text/plain" },
        body: CHAT,
      }],
    ];
    for (const [path, init] of attempts) {
      const res = await fetch(`${p.proxy.url}${path}`, init);
      assert.equal(res.status, 403, `${init.method ?? "GET"} ${path}`);
      assert.equal(res.headers.get("access-control-allow-origin"), null, "nothing to read");
      await res.body?.cancel();
    }
    assert.equal(p.engines[0].stats.requests, before, "no engine saw them");
    // Same-origin requests reach the engine, but its "*" (vLLM's default) is
    // not passed on: it would let every page read the answer.
    const same = await fetch(`${p.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { origin: p.proxy.url, "content-type": "application/json" },
      body: CHAT,
    });
    assert.equal(same.status, 200);
    assert.equal(p.engines[0].stats.lastHeaders?.get("origin"), p.proxy.url);
    assert.equal(same.headers.get("access-control-allow-origin"), null);
    await same.body?.cancel();
    // Clients without Origin (curl, SDKs) are unaffected.
    const cli = await fetch(`${p.proxy.url}/v1/chat/completions`, { method: "POST", body: CHAT });
    assert.equal(cli.status, 200);
    await cli.body?.cancel();
  } finally {
    await p.close();
  }
});

Deno.test("browser: a chat UI on an allowed origin works with --auth-token", async () => {
  const p = await startLocalProxy({
    instances: 1,
    authToken: TOKEN,
    config: { corsOrigins: [UI] },
  });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const port = Number(new URL(p.proxy.url).port);
    const auth = { authorization: `Bearer ${TOKEN}` };

    // The preflight is answered by the proxy, before authentication.
    const pre = await fetch(`${p.proxy.url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: {
        origin: UI,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type,x-stainless-retry-count",
      },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), UI);
    assert.match(pre.headers.get("access-control-allow-headers")!, /authorization/);
    assert.match(pre.headers.get("access-control-allow-headers")!, /x-stainless-retry-count/);
    assert.ok(!p.engines[0].stats.paths.some((x) => x.startsWith("OPTIONS")));

    // /v1/models is answered by the proxy itself and carries the same headers.
    const models = await fetch(`${p.proxy.url}/v1/models`, { headers: { origin: UI, ...auth } });
    assert.equal(models.status, 200);
    assert.equal(models.headers.get("access-control-allow-origin"), UI);
    assert.equal((await models.json()).data[0].id, "m");

    // A missing token is a 401 the page can read (so the UI can say why).
    const denied = await fetch(`${p.proxy.url}/v1/models`, { headers: { origin: UI } });
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get("access-control-allow-origin"), UI);
    assert.equal((await denied.json()).error.code, "invalid_api_key");

    // A streamed completion: the engine's "*" is replaced by the UI's origin.
    const chat = await fetch(`${p.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { origin: UI, "content-type": "application/json", ...auth },
      body: JSON.stringify({ model: "m", stream: true, messages: [] }),
    });
    assert.equal(chat.status, 200);
    assert.equal(chat.headers.get("access-control-allow-origin"), UI);
    assert.match(chat.headers.get("access-control-expose-headers")!, /x-vastproxy-instance/);
    assert.equal(chat.headers.get("x-vastproxy-instance"), String(p.ids[0]));
    assert.match(await chat.text(), /data: \[DONE\]/);
    assert.equal(p.engines[0].stats.lastHeaders?.get("origin"), UI, "the engine did add its *");

    // Another origin is still refused; with a token any Host name is served.
    const other = await fetch(`${p.proxy.url}/v1/models`, { headers: { origin: EVIL, ...auth } });
    assert.equal(other.status, 403);
    await other.body?.cancel();
    const named = await rawExchange(
      port,
      `GET /v1/models HTTP/1.1\r\nHost: gpu.example.com\r\nAuthorization: Bearer ${TOKEN}\r\n` +
        "Connection: close\r\n\r\n",
    );
    assert.match(named, /^HTTP\/1\.1 200/);
  } finally {
    await p.close();
  }
});
