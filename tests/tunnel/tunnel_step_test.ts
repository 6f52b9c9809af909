/**
 * The tunnel's reconnect and upgrade loop, step by step on a fake clock with
 * a fake connector (no SSH): the pure `nextTunnelStep` decision, the exact
 * backoff schedule, the direct upgrade every `directRetryMs`, and the one
 * place (`adopt`) that swaps connections. Real-sshd behaviour is in
 * ssh_test.ts and tests/integration/sshd_test.ts.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { FakeClock, flushMicrotasks } from "../../lib/core/clock.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import type { SshEndpoint } from "../../lib/core/backend_spec.ts";
import type { Connection } from "../../lib/tunnel/connect.ts";
import { HostKeyMismatchError } from "../../lib/tunnel/errors.ts";
import { SshTunnel, type TunnelSettings } from "../../lib/tunnel/ssh.ts";
import { nextTunnelStep, type TunnelLoopState } from "../../lib/tunnel/tunnel_step.ts";
import type { TunnelEvent } from "../../lib/tunnel/tunnel.ts";
import { testSpec } from "../_helpers/fake_tunnel.ts";

const timing = { backoffBaseMs: 1000, backoffMaxMs: 8000, directRetryMs: 60_000, random: () => 0 };
const base: TunnelLoopState = {
  closed: false,
  mismatch: false,
  livePath: null,
  hasDirect: true,
  directDisabled: false,
  attempt: 0,
  immediate: false,
};

Deno.test("nextTunnelStep() decides stop, wait, upgrade and connect with backoff", () => {
  const step = (s: Partial<TunnelLoopState>) => nextTunnelStep({ ...base, ...s }, timing);
  assert.deepEqual(step({ closed: true }), { kind: "stop" });
  assert.deepEqual(step({ mismatch: true }), { kind: "stop" });
  assert.deepEqual(step({ livePath: "direct" }), { kind: "wait" });
  assert.deepEqual(step({ livePath: "proxy" }), { kind: "upgrade", delayMs: 60_000 });
  assert.deepEqual(step({ livePath: "proxy", hasDirect: false }), { kind: "wait" });
  assert.deepEqual(step({ livePath: "proxy", directDisabled: true }), { kind: "wait" });
  assert.deepEqual(step({ immediate: true, attempt: 5 }), { kind: "connect", delayMs: 0 });
  // 1 s doubling, capped at the maximum (random 0: no jitter taken off).
  assert.deepEqual([0, 1, 2, 3, 4, 9].map((attempt) => step({ attempt })), [
    { kind: "connect", delayMs: 1000 },
    { kind: "connect", delayMs: 2000 },
    { kind: "connect", delayMs: 4000 },
    { kind: "connect", delayMs: 8000 },
    { kind: "connect", delayMs: 8000 },
    { kind: "connect", delayMs: 8000 },
  ]);
  // Jitter takes off at most half.
  const half = nextTunnelStep({ ...base, attempt: 1 }, { ...timing, random: () => 0.999 });
  assert.deepEqual(half, { kind: "connect", delayMs: 1001 });
});

/** A stand-in ssh2 client: events, and `end()` that closes it. */
class FakeClient extends EventEmitter {
  ended = false;
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.emit("close");
  }
  forwardOut(): void {
    throw new Error("no channels in this test");
  }
}

type Outcome = "ok" | "fail" | "mismatch";

/** A connector that answers per path from a script, recording when each attempt came. */
function fakeConnector(clock: FakeClock) {
  const calls: { at: number; paths: string[] }[] = [];
  const clients: FakeClient[] = [];
  const script = { direct: "fail" as Outcome, proxy: "fail" as Outcome };
  const connect = (endpoints: readonly SshEndpoint[]): Promise<Connection> => {
    calls.push({ at: clock.now(), paths: endpoints.map((e) => e.path) });
    for (const endpoint of endpoints) {
      const outcome = script[endpoint.path];
      if (outcome === "mismatch") {
        return Promise.reject(
          new HostKeyMismatchError({
            instanceId: 9,
            endpoint: `${endpoint.host}:${endpoint.port}`,
            expectedFingerprint: "SHA256:a",
            actualFingerprint: "SHA256:b",
            knownHostsPath: "/tmp/kh",
          }),
        );
      }
      if (outcome === "ok") {
        const client = new FakeClient();
        clients.push(client);
        return Promise.resolve({
          client: client as unknown as Connection["client"],
          endpoint,
          address: `${endpoint.host}:${endpoint.port}`,
          isClosed: () => client.ended,
        });
      }
    }
    return Promise.reject(new Error("connection refused"));
  };
  return { calls, clients, script, connect };
}

function setup(verify: () => Promise<boolean> = () => Promise.resolve(true)) {
  const clock = new FakeClock(0);
  const connector = fakeConnector(clock);
  const settings: TunnelSettings = {
    connect: {} as TunnelSettings["connect"],
    clock,
    random: () => 0,
    logger: new MemoryLogger(() => clock.now()),
    directRetryMs: 60_000,
    healthyResetMs: 30_000,
    backoffBaseMs: 1000,
    backoffMaxMs: 8000,
    drainTimeoutMs: 1000,
    connectAny: connector.connect as TunnelSettings["connectAny"],
  };
  const spec = testSpec(9);
  const events: TunnelEvent[] = [];
  const start = () => {
    const t = new SshTunnel(spec, settings, { verify });
    t.subscribe((e) => events.push(e));
    return t;
  };
  return { clock, connector, start, events };
}

/** Advances fake time in steps, letting the loop run between them. */
async function advance(clock: FakeClock, ms: number, step = 500) {
  for (let done = 0; done < ms; done += step) {
    await clock.tick(Math.min(step, ms - done));
    await flushMicrotasks();
  }
}

Deno.test("SshTunnel reconnects on the exact backoff schedule, capped, until an endpoint answers", async () => {
  const { clock, connector, start } = setup();
  const t = start();
  try {
    await advance(clock, 30_000);
    // Attempts at 0, then +1, +2, +4, +8, +8 … seconds.
    assert.deepEqual(
      connector.calls.map((c) => c.at),
      [0, 1000, 3000, 7000, 15_000, 23_000],
    );
    assert.equal(t.status().state, "down");
    connector.script.proxy = "ok";
    await advance(clock, 8000);
    assert.equal(t.status().state, "up");
    assert.equal(t.status().path, "proxy");
    assert.equal(connector.calls.length, 7);
  } finally {
    await t.close();
  }
});

Deno.test("SshTunnel on the proxy path tries direct every directRetryMs and swaps only after verify", async () => {
  let verdict = false;
  let checks = 0;
  const { clock, connector, start, events } = setup(() => {
    checks++;
    return Promise.resolve(verdict);
  });
  connector.script.proxy = "ok";
  const t = start();
  try {
    await advance(clock, 100);
    assert.equal(t.status().path, "proxy");
    connector.script.direct = "ok";
    await advance(clock, 59_000);
    assert.equal(connector.calls.length, 1, "no upgrade attempt before a minute");
    await advance(clock, 1_500);
    assert.deepEqual(connector.calls[1], { at: 60_000, paths: ["direct"] });
    assert.equal(checks, 1);
    assert.equal(t.status().path, "proxy", "a failed check keeps the proxy path");
    assert.equal(connector.clients[1].ended, true, "the rejected candidate is closed");
    verdict = true;
    await advance(clock, 60_000);
    assert.equal(t.status().path, "direct");
    assert.deepEqual(events.map((e) => e.type), ["up", "up"]);
    // The old proxy connection drains (nothing in flight) and ends.
    await advance(clock, 100);
    assert.equal(connector.clients[0].ended, true, "the proxy connection was retired");
    assert.equal(connector.clients[2].ended, false);
    // On the direct path nothing more is tried.
    await advance(clock, 180_000);
    assert.equal(connector.calls.length, 3);
  } finally {
    await t.close();
  }
});

Deno.test("SshTunnel stops upgrading when the direct endpoint offers a different host key", async () => {
  const { clock, connector, start } = setup();
  connector.script.proxy = "ok";
  connector.script.direct = "fail";
  const t = start();
  try {
    await advance(clock, 100);
    connector.script.direct = "mismatch";
    await advance(clock, 61_000);
    assert.equal(connector.calls.length, 2);
    await advance(clock, 300_000);
    assert.equal(connector.calls.length, 2, "no more direct attempts");
    assert.equal(t.status().path, "proxy");
  } finally {
    await t.close();
  }
});

Deno.test("SshTunnel: a loss backs off, a long-lived connection resets the backoff, reconnect() skips it", async () => {
  const { clock, connector, start } = setup();
  connector.script.direct = "ok";
  const t = start();
  try {
    await advance(clock, 100);
    assert.equal(t.status().state, "up");
    connector.script.direct = "fail";
    connector.clients[0].end(); // lost at 100 ms: 1 s, then 2 s
    await advance(clock, 4000);
    assert.deepEqual(connector.calls.map((c) => c.at), [0, 1100, 3100]);
    // reconnect() connects at once, with the backoff reset.
    connector.script.direct = "ok";
    t.reconnect();
    await advance(clock, 100);
    assert.equal(connector.calls.length, 4);
    assert.equal(t.status().state, "up");
    // Up for longer than healthyResetMs: the next loss starts from 1 s again.
    await advance(clock, 31_000);
    connector.script.direct = "fail";
    const lostAt = clock.now();
    connector.clients.at(-1)!.end();
    await advance(clock, 1_500);
    assert.equal(connector.calls.at(-1)!.at - lostAt, 1000);
  } finally {
    await t.close();
  }
});

Deno.test("SshTunnel stops at a host-key mismatch and starts again on reconnect()", async () => {
  const { clock, connector, start, events } = setup();
  connector.script.direct = "mismatch";
  const t = start();
  try {
    await advance(clock, 100);
    assert.equal(t.status().state, "hostkey-mismatch");
    await advance(clock, 120_000);
    assert.equal(connector.calls.length, 1, "no retry while refused");
    connector.script.direct = "ok";
    t.reconnect();
    await advance(clock, 100);
    assert.equal(t.status().state, "up");
    assert.deepEqual(events.map((e) => e.type), ["hostkey-mismatch", "up"]);
  } finally {
    await t.close();
  }
});
