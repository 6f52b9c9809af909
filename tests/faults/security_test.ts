/**
 * Security properties: the proxy token guards every route (checked through a
 * fixed-length digest comparison), a public listener needs a token, and no
 * secret — vast API key, instance tokens, proxy token, SSH key passphrase —
 * ever shows up in anything the proxy says: logs, error bodies, status,
 * metrics, the terminal UI.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { timingSafeEqual } from "node:crypto";
import { resolveServeConfig, UsageError } from "../../lib/cli/config.ts";
import { bearerToken, createTokenCheck } from "../../lib/proxy/auth.ts";
import { formatJson, formatText } from "../../lib/ui/log.ts";
import { renderPlainTable, renderStatus } from "../../lib/ui/table.ts";
import { sshdAvailable } from "../_helpers/sshd.ts";
import { E2E_API_KEY, eventually, startE2eFleet } from "../_helpers/e2e_fleet.ts";
import { startLocalProxy, until } from "./_local_proxy.ts";

const PROXY_TOKEN = "proxy-token-Zq8w2LmN4vX7";

Deno.test("security: every route, /vastproxy/* included, needs the proxy token", async () => {
  const p = await startLocalProxy({ instances: 1, authToken: PROXY_TOKEN });
  try {
    await until("healthy", () => p.proxy.status().counts.healthy === 1);
    const routes = [
      "/v1/models",
      "/v1/chat/completions",
      "/v1/completions",
      "/health",
      "/echo",
      "/",
      "/vastproxy",
      "/vastproxy/",
      "/vastproxy/status",
      "/vastproxy/healthz",
      "/vastproxy/metrics",
      "/vastproxy/nope",
      "/vastproxy/../v1/models",
      "/anything/else?x=1",
    ];
    const badAuth: (string | undefined)[] = [
      undefined,
      "",
      "Bearer",
      "Bearer ",
      `Bearer ${PROXY_TOKEN.slice(0, -1)}`,
      `Bearer ${PROXY_TOKEN}x`,
      `Bearer ${PROXY_TOKEN.toUpperCase()}`,
      `Basic ${btoa(`user:${PROXY_TOKEN}`)}`,
      PROXY_TOKEN,
      `Token ${PROXY_TOKEN}`,
    ];
    const engineBefore = p.engines[0].stats.requests;
    for (const route of routes) {
      for (const method of ["GET", "POST", "HEAD", "DELETE", "OPTIONS"]) {
        for (const auth of badAuth) {
          const res = await fetch(`${p.proxy.url}${route}`, {
            method,
            headers: auth === undefined ? {} : { authorization: auth },
            body: method === "POST" ? '{"model":"m"}' : undefined,
          });
          const text = await res.text();
          assert.equal(res.status, 401, `${method} ${route} with ${auth}`);
          assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="vastproxy"');
          if (method !== "HEAD") assert.equal(JSON.parse(text).error.code, "invalid_api_key");
          assert.ok(!text.includes(PROXY_TOKEN));
        }
      }
    }
    // Not one unauthenticated request reached the engine (health checks run
    // every 60 s here, so none falls inside this test either).
    assert.deepEqual(p.engines[0].stats.paths.slice(engineBefore), []);
    for (const route of routes) {
      const ok = await fetch(`${p.proxy.url}${route}`, {
        headers: { authorization: `Bearer ${PROXY_TOKEN}` },
      });
      await ok.body?.cancel();
      assert.notEqual(ok.status, 401, `GET ${route} with the right token`);
    }
    // The authorized GETs did, except those the proxy answers itself
    // (/v1/models, /vastproxy/*; fetch resolves /vastproxy/../v1/models).
    assert.deepEqual(p.engines[0].stats.paths.slice(engineBefore), [
      "GET /v1/chat/completions",
      "GET /v1/completions",
      "GET /health",
      "GET /echo",
      "GET /",
      "GET /anything/else?x=1",
    ]);
    // ...each carrying the instance token, never the proxy's.
    const seen = p.engines[0].stats.authHeaders;
    assert.ok(seen.length > 0);
    for (const h of seen) assert.equal(h, `Bearer ${p.tokens[0]}`);
  } finally {
    await p.close();
  }
});

Deno.test("security: the token check equals exact Bearer matching and compares fixed-length digests", async () => {
  // Every check, right or wrong, missing or another scheme, makes exactly one
  // constant-time comparison of two 32-byte SHA-256 digests, and the expected
  // side never is the token itself: neither content nor length can leak
  // through an early exit or a length mismatch.
  const compared: [Uint8Array, Uint8Array][] = [];
  const spy = (a: Uint8Array, b: Uint8Array) => {
    compared.push([a, b]);
    return timingSafeEqual(a, b);
  };
  await fc.assert(
    fc.asyncProperty(
      fc.string({ minLength: 1, maxLength: 40 }).filter((s) => s.trim() === s && s !== ""),
      fc.oneof(
        fc.string({ maxLength: 50 }),
        fc.constantFrom("Bearer ", "bearer ", "BEARER\t", "Basic ").chain((scheme) =>
          fc.string({ maxLength: 45 }).map((s) => scheme + s)
        ),
      ),
      async (token, header) => {
        const check = createTokenCheck(token, { equal: spy });
        compared.length = 0;
        assert.equal(await check(`Bearer ${token}`), true);
        assert.equal(await check(header), bearerToken(header) === token);
        assert.equal(await check(null), false);
        assert.equal(compared.length, 3, "one comparison per check");
        const secret = new TextEncoder().encode(token);
        for (const [given, expected] of compared) {
          assert.equal(given.length, 32);
          assert.equal(expected.length, 32);
          assert.notDeepEqual(new Uint8Array(expected), secret);
        }
      },
    ),
    { numRuns: 200 },
  );
  // Without a spy the check uses node:crypto's timingSafeEqual, which throws
  // on unequal lengths: a check that compared raw tokens would throw here.
  const check = createTokenCheck("a-much-longer-token-than-the-guess");
  assert.equal(await check("Bearer short"), false);
  assert.equal(await check("Bearer a-much-longer-token-than-the-guess"), true);
});

Deno.test("security: a non-loopback listen without a token is refused by the config", () => {
  const env = { VAST_API_KEY: "k" };
  const read = () => {
    throw new Deno.errors.NotFound("no .env");
  };
  for (
    const listen of [
      "0.0.0.0:8080",
      ":8080",
      "[::]:8080",
      "192.168.1.5:8080",
      "[::ffff:127.0.0.1]:8080",
      "localhost.example.com:8080",
      "10.0.0.1:0",
    ]
  ) {
    for (const extra of [{}, { "auth-token": "" }]) {
      assert.throws(
        () => resolveServeConfig({ listen, ...extra }, { env, readTextFile: read, home: "/h" }),
        (err: unknown) => {
          assert.ok(err instanceof UsageError, String(err));
          // An empty token is refused on its own, before the listen check.
          assert.match(err.message, /without --auth-token|--auth-token: the token is empty/);
          return true;
        },
        listen,
      );
    }
    // The env var with an empty value is no token either.
    assert.throws(() =>
      resolveServeConfig({ listen }, {
        env: { ...env, VASTPROXY_AUTH_TOKEN: "" },
        readTextFile: read,
        home: "/h",
      }), UsageError);
  }
  for (const listen of ["127.0.0.1:8080", "127.1.2.3:0", "localhost:8080", "[::1]:8080"]) {
    assert.equal(
      resolveServeConfig({ listen }, { env, readTextFile: read, home: "/h" }).authToken,
      null,
    );
  }
});

Deno.test({
  name:
    "security e2e: no secret in logs, error bodies, status, metrics or the UI after a run with faults",
  ignore: !sshdAvailable(),
  async fn() {
    const passphrase = "ssh-passphrase-Kt5r9QpW";
    const fleet = await startE2eFleet({
      models: ["m", "m"],
      authToken: PROXY_TOKEN,
      keyPassphrase: passphrase,
      maxBodyBytes: 4096,
      healthIntervalMs: 150,
    });
    const outputs: string[] = [];
    try {
      await fleet.waitHealthy(2);
      const url = fleet.proxy.url;
      const auth = { authorization: `Bearer ${PROXY_TOKEN}` };
      const call = async (path: string, init: RequestInit = {}) => {
        const res = await fetch(`${url}${path}`, init);
        outputs.push(`${res.status} ${[...res.headers].join(";")} ${await res.text()}`);
        return res.status;
      };
      const post = (body: string, headers: Record<string, string> = auth): RequestInit => ({
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body,
      });
      // Normal traffic, streaming, and secrets in places they must not travel on from.
      assert.equal(await call("/v1/chat/completions", post('{"model":"m","messages":[]}')), 200);
      assert.equal(
        await call("/v1/chat/completions", post('{"model":"m","messages":[],"stream":true}')),
        200,
      );
      // A client's query may carry anything; the request log keeps the path only.
      assert.equal(
        await call(`/health?api_key=${E2E_API_KEY}&t=${PROXY_TOKEN}`, { headers: auth }),
        200,
      );
      // Every error the proxy answers itself.
      assert.equal(await call("/v1/models", { headers: { authorization: "Bearer nope" } }), 401);
      assert.equal(await call("/v1/models"), 401);
      // One model in the fleet: passed through, and the engine's own 404 comes back.
      assert.equal(await call("/v1/chat/completions", post('{"model":"other"}')), 404);
      assert.equal(await call("/v1/chat/completions", post("x".repeat(5000))), 413);
      assert.equal(await call("/vastproxy/nope", { headers: auth }), 404);
      assert.equal(await call("/vastproxy/status", { method: "POST", headers: auth }), 405);
      // Faults: an engine down (transport failures, 502/503), sshd killed, API trouble.
      await fleet.engines[0].close();
      await fleet.engines[1].close();
      for (let i = 0; i < 4; i++) await call("/v1/chat/completions", post('{"model":"m"}'));
      await eventually("all down", () => fleet.proxy.status().counts.healthy === 0);
      assert.equal(await call("/v1/chat/completions", post('{"model":"m"}')), 503);
      await fleet.sshds[1].kill("SIGKILL");
      fleet.api.state.failNext(3, 500);
      fleet.api.state.failNext(2, "garbage");
      const realKey = fleet.api.state.apiKey;
      fleet.api.state.apiKey = "rotated-key-zzzzzzzz"; // later auth errors: reported, not fatal
      await eventually(
        "auth error seen",
        () => fleet.logger.text().includes("API key rejected"),
        8_000,
      );
      fleet.api.state.apiKey = realKey;
      for (const e of fleet.engines) await e.restart();
      await fleet.sshds[1].restart();
      await fleet.waitHealthy(2);

      await eventually(
        "GPU metrics",
        () => {
          const backends = fleet.proxy.status().backends;
          return backends.length === 2 && backends.every((b) => b.gpus.length === 2);
        },
      );
      for (const path of ["/vastproxy/status", "/vastproxy/metrics", "/vastproxy/healthz"]) {
        assert.equal(await call(path, { headers: auth }), 200);
      }
      const snap = fleet.proxy.status();
      const logLines = fleet.logger.records.map((r) => formatText(r, { color: false }));
      outputs.push(
        JSON.stringify(fleet.logger.records),
        fleet.logger.text(),
        ...logLines,
        ...fleet.logger.records.map((r) => formatJson(r)),
        JSON.stringify(snap),
        ...renderStatus(snap, { width: 240, color: false, now: Date.now(), logLines }),
        ...renderStatus(snap, { width: 240, color: true, now: Date.now(), help: true }),
        ...renderPlainTable(snap, { color: false, now: Date.now() }),
      );
    } finally {
      await fleet.close();
    }
    const all = outputs.join("\n");
    assert.ok(all.length > 5_000, "the run produced output to check");
    const secrets: [string, string][] = [
      ["vast API key", E2E_API_KEY],
      ["proxy token", PROXY_TOKEN],
      ["SSH key passphrase", passphrase],
      ...fleet.tokens.map((t, i): [string, string] => [`instance token ${i}`, t]),
    ];
    for (const [what, secret] of secrets) {
      const at = all.indexOf(secret);
      assert.equal(at, -1, `${what} leaked: …${all.slice(Math.max(0, at - 120), at + 20)}…`);
    }
  },
});
