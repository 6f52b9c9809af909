/**
 * SshTunnel lifecycle against a real sshd: losing the server, a stalled
 * session caught by keepalive, healing on restart, and the proxy → direct
 * upgrade that drains the old path.
 */
import assert from "node:assert/strict";
import type { SshTunnelFactoryOptions } from "../../lib/tunnel/factory.ts";
import { testTunnelFactory } from "../_helpers/config.ts";
import type { TunnelEvent } from "../../lib/tunnel/tunnel.ts";
import type { SshEndpoint } from "../../lib/core/backend_spec.ts";
import {
  eventLog,
  freePort,
  generateKey,
  sshdAvailable,
  startSshd,
  testSpec,
  waitFor,
} from "../_helpers/sshd.ts";
import { Http1Error } from "../../lib/http1/types.ts";
import { send } from "../_helpers/http1.ts";

const ignore = !sshdAvailable();

/** Small keepalive and backoff so losses show within a second. */
function fastFactory(keyPath: string, dir: string, extra: Partial<SshTunnelFactoryOptions> = {}) {
  return testTunnelFactory(keyPath, `${dir}/known_hosts`, {
    readyTimeoutMs: 2_000,
    keepaliveIntervalMs: 200,
    keepaliveCountMax: 3,
    backoffMaxMs: 400,
    ...extra,
  });
}

const at = (port: number, path: SshEndpoint["path"]): SshEndpoint => ({
  host: "127.0.0.1",
  port,
  path,
});

function serveText(body: string) {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(body));
}

Deno.test({
  name: "SshTunnel marks itself down when sshd dies and heals when it returns",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const http = serveText("back");
    const t = fastFactory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(20, [at(sshd.port, "direct")], http.addr.port),
    );
    const log = eventLog<TunnelEvent>();
    t.subscribe(log.push);
    try {
      await waitFor("up", () => t.status().state === "up");
      const killedAt = Date.now();
      await sshd.kill("SIGKILL"); // listener and its session processes
      // Keepalive window: 200 ms × 3 plus slack; a reset usually shows at once.
      await waitFor("down", () => log.count("down") >= 1, 1_500);
      assert.ok(Date.now() - killedAt < 1_500);
      await assert.rejects(send(t, "/"), (e) => e instanceof Http1Error && !e.sent);
      assert.equal(log.events[1].type, "down", JSON.stringify(log.events));
      await sshd.restart();
      await waitFor("up again", () => t.status().state === "up", 5_000);
      assert.equal(await (await send(t, "/")).text(), "back");
    } finally {
      await t.close();
      await http.shutdown();
      await sshd.stop();
    }
  },
});

Deno.test({
  name: "SshTunnel keepalive catches a stalled session (SIGSTOP) and reconnects",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const t = fastFactory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(21, [at(sshd.port, "direct")], 1),
    );
    const log = eventLog<TunnelEvent>();
    t.subscribe(log.push);
    try {
      await waitFor("up", () => t.status().state === "up");
      // Freeze the session processes only: TCP stays open, nothing answers.
      assert.ok(await sshd.signalSessions("SIGSTOP") > 0);
      const stoppedAt = Date.now();
      await waitFor("down", () => log.count("down") >= 1, 2_000);
      const took = Date.now() - stoppedAt;
      assert.ok(took >= 400 && took < 2_000, `down after ${took} ms`);
      assert.match(t.status().reason ?? "", /keepalive|lost|closed/i);
      // The listener still answers, so a fresh session comes up.
      await waitFor("up again", () => log.count("up") === 2, 5_000);
    } finally {
      await t.close();
      await sshd.signalSessions("SIGCONT");
      await sshd.stop();
    }
  },
});

Deno.test({
  name:
    "SshTunnel upgrades proxy → direct after verify over the new channels, draining the old connection",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    await generateKey(`${dir}/id`);
    await generateKey(`${dir}/host`);
    // One instance reachable two ways: same host key on both "paths".
    const proxySshd = await startSshd({ clientKeyPath: `${dir}/id`, hostKeyPath: `${dir}/host` });
    const directPort = freePort();
    let directSshd: Awaited<ReturnType<typeof startSshd>> | undefined;
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
      if (new URL(req.url).pathname === "/slow") await new Promise((r) => setTimeout(r, 800));
      return new Response("done");
    });
    let verdict = false;
    let verified = 0;
    const t = fastFactory(`${dir}/id`, dir, { directRetryMs: 150 }).open(
      testSpec(22, [at(directPort, "direct"), at(proxySshd.port, "proxy")], http.addr.port),
      {
        verify: async (sendOnCandidate) => {
          verified++;
          // The check runs over the candidate connection's channels, like a health probe.
          const res = await send({ request: sendOnCandidate }, "/v1/models");
          assert.equal(await res.text(), "done");
          return verdict;
        },
      },
    );
    const log = eventLog<TunnelEvent>();
    t.subscribe(log.push);
    try {
      await waitFor("up", () => t.status().state === "up");
      assert.equal(t.status().path, "proxy");
      directSshd = await startSshd({
        port: directPort,
        clientKeyPath: `${dir}/id`,
        hostKeyPath: `${dir}/host`,
      });
      // A failed check keeps the proxy path.
      await waitFor("a verify call", () => verified >= 1, 3_000);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(t.status().path, "proxy");

      // In flight on the old path while the swap happens: must complete.
      const slow = send(t, "/slow").then((r) => r.text());
      verdict = true;
      await waitFor("direct", () => t.status().path === "direct", 3_000);
      const up = log.events.at(-1)!;
      assert.equal(up.type, "up");
      assert.equal((up as { path: string }).path, "direct");
      assert.equal((up as { endpoint: string }).endpoint, `127.0.0.1:${directPort}`);
      assert.equal(log.count("down"), 0);
      assert.equal(await slow, "done");
      assert.equal(await (await send(t, "/")).text(), "done");
    } finally {
      await t.close();
      await http.shutdown();
      await proxySshd.stop();
      await directSshd?.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "SshTunnel.close({graceful}) lets an in-flight request finish",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async () => {
      await new Promise((r) => setTimeout(r, 300));
      return new Response("finished");
    });
    const t = fastFactory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(23, [at(sshd.port, "direct")], http.addr.port),
    );
    const log = eventLog<TunnelEvent>();
    t.subscribe(log.push);
    try {
      await waitFor("up", () => t.status().state === "up");
      const inflight = send(t, "/").then((r) => r.text());
      await new Promise((r) => setTimeout(r, 50));
      const started = Date.now();
      await t.close({ graceful: true, timeoutMs: 5_000 });
      assert.equal(await inflight, "finished");
      // The finished channel goes back to the pool; a graceful close must
      // not wait for its idle expiry.
      assert.ok(Date.now() - started < 2_000, `close took ${Date.now() - started} ms`);
      assert.equal(t.status().state, "closed");
      assert.deepEqual(log.events.map((e) => e.type), ["up", "closed"]);
    } finally {
      await t.close();
      await http.shutdown();
      await sshd.stop();
    }
  },
});
