/**
 * SshTunnel against a real OpenSSH sshd on 127.0.0.1: endpoint order and
 * fallback, forwarding of streams and large bodies, host-key pinning, GPU
 * metrics and auth failures. The "remote port" is a loopback HTTP server here,
 * which sshd reaches exactly as an instance reaches its LLM server.
 */
import assert from "node:assert/strict";
import { FakeClock } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { HostKeyMismatchError } from "../../lib/tunnel/errors.ts";
import { queryGpus } from "../../lib/tunnel/gpu.ts";
import { fingerprint } from "../../lib/tunnel/known_hosts.ts";
import type { SshTunnelFactoryOptions } from "../../lib/tunnel/factory.ts";
import { testTunnelFactory } from "../_helpers/config.ts";
import type { Tunnel, TunnelEvent } from "../../lib/tunnel/tunnel.ts";
import type { SshEndpoint } from "../../lib/core/backend_spec.ts";
import {
  eventLog,
  freePort,
  generateKey,
  sha256Hex,
  sshdAvailable,
  startSshd,
  testSpec,
  waitFor,
} from "../_helpers/sshd.ts";
import { Http1Error } from "../../lib/http1/types.ts";
import { send } from "../_helpers/http1.ts";

const ignore = !sshdAvailable();

function factory(keyPath: string, dir: string, extra: Partial<SshTunnelFactoryOptions> = {}) {
  // The production backoff (1 s doubling to 60 s): the backoff tests assert it.
  return testTunnelFactory(keyPath, `${dir}/state/known_hosts`, {
    backoffBaseMs: 1_000,
    backoffMaxMs: 60_000,
    ...extra,
  });
}

const direct = (port: number): SshEndpoint => ({ host: "127.0.0.1", port, path: "direct" });
const proxy = (port: number): SshEndpoint => ({ host: "127.0.0.1", port, path: "proxy" });

function settled(t: Tunnel): () => boolean {
  return () => t.status().state !== "connecting";
}

function serveText(body: string) {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(body));
}

Deno.test({
  name: "SshTunnel connects direct first and forwards HTTP",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const http = serveText("hello");
    const t = factory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(1, [direct(sshd.port), proxy(freePort())], http.addr.port),
    );
    try {
      await waitFor("settled", settled(t));
      const s = t.status();
      assert.equal(s.state, "up");
      assert.equal(s.path, "direct");
      assert.equal(s.endpoint, `127.0.0.1:${sshd.port}`);
      assert.equal(await (await send(t, "/v1/models")).text(), "hello");
    } finally {
      await t.close();
      await http.shutdown();
      await sshd.stop();
    }
  },
});

Deno.test({
  name: "SshTunnel falls back to the proxy endpoint when direct is closed",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const http = serveText("via proxy");
    const t = factory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(2, [direct(freePort()), proxy(sshd.port)], http.addr.port),
    );
    try {
      await waitFor("settled", settled(t));
      assert.equal(t.status().state, "up");
      assert.equal(t.status().path, "proxy");
      assert.equal(t.status().endpoint, `127.0.0.1:${sshd.port}`);
      assert.equal(await (await send(t, "/")).text(), "via proxy");
    } finally {
      await t.close();
      await http.shutdown();
      await sshd.stop();
    }
  },
});

Deno.test({
  name: "SshTunnel reaches a jupyter instance on ssh_port+1 when ssh_port is closed",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const http = serveText("jupyter");
    // vast lists ssh_port, and for jupyter runtypes also ssh_port+1.
    const sshPort = sshd.port - 1;
    const t = factory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(3, [proxy(sshPort), proxy(sshPort + 1)], http.addr.port),
    );
    try {
      await waitFor("settled", settled(t));
      assert.equal(t.status().state, "up", t.status().reason ?? "");
      assert.equal(t.status().endpoint, `127.0.0.1:${sshPort + 1}`);
      assert.equal(await (await send(t, "/")).text(), "jupyter");
    } finally {
      await t.close();
      await http.shutdown();
      await sshd.stop();
    }
  },
});

Deno.test({
  name: "SshTunnel with every endpoint down reports why and retries with backoff",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    await generateKey(`${dir}/id`);
    const clock = new FakeClock();
    const [a, b] = [freePort(), freePort()];
    const t = factory(`${dir}/id`, dir, { clock, random: () => 0 }).open(
      testSpec(4, [direct(a), proxy(b)], 1),
    );
    const log = eventLog<TunnelEvent>();
    t.subscribe(log.push);
    try {
      await waitFor("first failure", () => log.count("down") === 1);
      const s = t.status();
      assert.equal(s.state, "down");
      await assert.rejects(send(t, "/"), (e) => e instanceof Http1Error && !e.sent);
      assert.match(s.reason!, /instance 4/);
      assert.match(s.reason!, new RegExp(`127\\.0\\.0\\.1:${a} \\(direct\\): connection refused`));
      assert.match(s.reason!, new RegExp(`127\\.0\\.0\\.1:${b} \\(proxy\\): connection refused`));
      // random() = 0 keeps the full delay: 1 s, then 2 s.
      await waitFor("backoff sleep", () => clock.pending === 1);
      await clock.tick(999);
      assert.equal(log.count("down"), 1);
      await clock.tick(1);
      await waitFor("second failure", () => log.count("down") === 2);
      await waitFor("backoff sleep", () => clock.pending === 1);
      await clock.tick(1_999);
      assert.equal(log.count("down"), 2);
      await clock.tick(1);
      await waitFor("third failure", () => log.count("down") === 3);
      // reconnect() skips the backoff.
      t.reconnect();
      await waitFor("fourth failure", () => log.count("down") === 4);
    } finally {
      await t.close();
      await Deno.remove(dir, { recursive: true });
    }
    assert.equal(t.status().state, "closed");
    assert.deepEqual(log.events.at(-1), { type: "closed" });
  },
});

Deno.test({
  name: "SshTunnel forwards an SSE stream and a 50 MB body byte-identical",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const events = Array.from({ length: 100 }, (_, i) => `data: {"i":${i},"text":"tok ${i}"}\n\n`);
    const big = new Uint8Array(50 * 1024 * 1024);
    let x = 12345;
    for (let i = 0; i < big.length; i++) big[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      if (new URL(req.url).pathname === "/big") return new Response(big);
      const enc = new TextEncoder();
      let i = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(c) {
          if (i === events.length) return c.close();
          await new Promise((r) => setTimeout(r, 0));
          c.enqueue(enc.encode(events[i++]));
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    });
    const t = factory(sshd.clientKeyPath, sshd.dir).open(
      testSpec(5, [direct(sshd.port)], http.addr.port),
    );
    try {
      await waitFor("settled", settled(t));
      const sse = new Uint8Array(await (await send(t, "/sse")).arrayBuffer());
      assert.equal(
        await sha256Hex(sse),
        await sha256Hex(new TextEncoder().encode(events.join(""))),
      );
      const got = await (await send(t, "/big")).arrayBuffer();
      assert.equal(got.byteLength, big.length);
      assert.equal(await sha256Hex(got), await sha256Hex(big));
    } finally {
      await t.close();
      await http.shutdown();
      await sshd.stop();
    }
  },
});

Deno.test({
  name: "SshTunnel pins the host key per instance and refuses a changed one",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    await generateKey(`${dir}/id`);
    const knownHosts = `${dir}/state/known_hosts`;
    const first = await startSshd({ clientKeyPath: `${dir}/id` });
    const port = first.port;
    const pinned = fingerprint(keyBlob(first.hostKey));
    const open = (id: number, insecureHostKeys = false) =>
      factory(`${dir}/id`, dir, { insecureHostKeys }).open(testSpec(id, [direct(port)], 1));
    try {
      const t1 = open(6);
      await waitFor("settled", settled(t1));
      assert.equal(t1.status().state, "up");
      await t1.close();
      assert.equal((await Deno.stat(knownHosts)).mode! & 0o777, 0o600);
      assert.match(await Deno.readTextFile(knownHosts), /^6 ssh-ed25519 AAAA/m);
    } finally {
      await first.stop();
    }

    // Same address, another host key: what a re-rented ip:port looks like.
    const second = await startSshd({ port, clientKeyPath: `${dir}/id` });
    const offered = fingerprint(keyBlob(second.hostKey));
    const t2 = open(6);
    const log = eventLog<TunnelEvent>();
    t2.subscribe(log.push);
    try {
      await waitFor("settled", settled(t2));
      const s = t2.status();
      assert.equal(s.state, "hostkey-mismatch");
      await assert.rejects(send(t2, "/"), (e) => e instanceof Http1Error && !e.sent);
      for (const part of ["instance 6", `127.0.0.1:${port}`, pinned, offered, knownHosts]) {
        assert.ok(s.reason!.includes(part), `${part} missing from: ${s.reason}`);
      }
      assert.deepEqual(log.events, [{ type: "hostkey-mismatch", reason: s.reason }]);
      const err = new HostKeyMismatchError({
        instanceId: 6,
        endpoint: `127.0.0.1:${port}`,
        expectedFingerprint: pinned,
        actualFingerprint: offered,
        knownHostsPath: knownHosts,
      });
      assert.equal(s.reason, err.message);
      // No retry after a mismatch: nothing new happens.
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(log.events.length, 1);
      // The documented fix: delete the pin, then reconnect (the UI's `r`).
      const text = await Deno.readTextFile(knownHosts);
      await Deno.writeTextFile(knownHosts, text.replace(/^6 .*\n/m, ""));
      t2.reconnect();
      await waitFor("up after unpinning", () => t2.status().state === "up");
      const repinned = `\n6 ${second.hostKey.split(" ").slice(0, 2).join(" ")}\n`;
      assert.ok((await Deno.readTextFile(knownHosts)).includes(repinned));
      await t2.close();

      // With --insecure-host-keys the same server is accepted; another
      // instance id gets its own pin.
      for (const t of [open(6, true), open(7)]) {
        await waitFor("settled", settled(t));
        assert.equal(t.status().state, "up", t.status().reason ?? "");
        await t.close();
      }
      assert.match(await Deno.readTextFile(knownHosts), /^7 ssh-ed25519 /m);
    } finally {
      await t2.close();
      await second.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

function keyBlob(publicKeyLine: string): Uint8Array {
  return Uint8Array.from(atob(publicKeyLine.split(" ")[1]), (c) => c.charCodeAt(0));
}

const SMI_ARGS = "--query-gpu=index,name,utilization.gpu,memory.used,memory.total," +
  "temperature.gpu,power.draw --format=csv,noheader,nounits";

Deno.test({
  name: "queryGpus() parses a fake nvidia-smi over SSH; a missing one is an error value",
  ignore,
  async fn() {
    const script = `[ "$*" = "${SMI_ARGS}" ] || { echo "bad args: $*" >&2; exit 2; }
echo "0, NVIDIA GeForce RTX 4090, 87, 20480, 24564, 65, 350.12"
echo "1, NVIDIA GeForce RTX 4090, [N/A], 1024, 24564, [N/A], [Not Supported]"`;
    const withSmi = await startSshd({ nvidiaSmi: script });
    const without = await startSshd({ clientKeyPath: withSmi.clientKeyPath });
    const http = serveText("still fine");
    const f = factory(withSmi.clientKeyPath, withSmi.dir);
    const t1 = f.open(testSpec(8, [direct(withSmi.port)], http.addr.port));
    const t2 = f.open(testSpec(9, [direct(without.port)], http.addr.port));
    try {
      await waitFor("settled", () => settled(t1)() && settled(t2)());
      const ok = await queryGpus(t1, { timeoutMs: 5_000 });
      assert.deepEqual(ok, {
        ok: true,
        gpus: [
          {
            index: 0,
            name: "NVIDIA GeForce RTX 4090",
            utilization: 87,
            memoryUsed: 20480,
            memoryTotal: 24564,
            temperature: 65,
            powerDraw: 350.12,
          },
          {
            index: 1,
            name: "NVIDIA GeForce RTX 4090",
            utilization: null,
            memoryUsed: 1024,
            memoryTotal: 24564,
            temperature: null,
            powerDraw: null,
          },
        ],
      });
      const missing = await queryGpus(t2, { timeoutMs: 5_000 });
      assert.equal(missing.ok, false);
      assert.match((missing as { error: string }).error, /nvidia-smi not found/);
      assert.equal(t2.status().state, "up");
      assert.equal(await (await send(t2, "/")).text(), "still fine");
      // A command that outlives its timeout is an error too, and the tunnel stays.
      await assert.rejects(t2.exec("sleep 5", { timeoutMs: 200 }), /timed out after 200 ms/);
      assert.equal(t2.status().state, "up");
      assert.equal((await t2.exec("echo ok")).stdout, "ok\n");
    } finally {
      await t1.close();
      await t2.close();
      await http.shutdown();
      await withSmi.stop();
      await without.stop();
    }
  },
});

Deno.test({
  name: "SshTunnel with a key the server does not accept reports an auth error",
  ignore,
  async fn() {
    const sshd = await startSshd();
    await generateKey(`${sshd.dir}/stranger`);
    const logger = new MemoryLogger();
    const t = factory(`${sshd.dir}/stranger`, sshd.dir, { logger }).open(
      testSpec(10, [direct(sshd.port)], 1),
    );
    try {
      await waitFor("settled", () => t.status().state === "down");
      const reason = t.status().reason!;
      assert.match(reason, /instance 10/);
      assert.match(reason, /authentication as root failed/);
      assert.ok(reason.includes(`${sshd.dir}/stranger`));
      assert.match(reason, /pass --ssh-key/);
      assert.match(logger.text(), /authentication as root failed/);
    } finally {
      await t.close();
      await sshd.stop();
    }
  },
});
