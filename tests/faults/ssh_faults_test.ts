/**
 * SSH faults end to end against real OpenSSH: sshd killed under streaming
 * traffic and restarted, a network stall (the session processes SIGSTOPped)
 * that only keepalive can detect, and an instance whose host key changed.
 * Also the local side's hygiene: forwards on 127.0.0.1 only, known_hosts 0600.
 */
import assert from "node:assert/strict";
import { type Sshd, sshdAvailable, startSshd } from "../_helpers/sshd.ts";
import { type E2eFleet, eventually, startE2eFleet } from "../_helpers/e2e_fleet.ts";

const ignore = !sshdAvailable();

async function chat(url: string, headers: Record<string, string> = {}) {
  const started = Date.now();
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
  });
  const text = await res.text();
  return {
    status: res.status,
    instance: Number(res.headers.get("x-vastproxy-instance")),
    ms: Date.now() - started,
    text,
  };
}

/** Starts a stream and resolves once its first chunk arrived; `end` settles when it ends. */
async function openStream(url: string) {
  const res = await fetch(`${url}/sse?n=60&interval=20`);
  const instance = Number(res.headers.get("x-vastproxy-instance"));
  const reader = res.body!.getReader();
  await reader.read();
  const end = (async () => {
    try {
      for (;;) if ((await reader.read()).done) return "closed";
    } catch {
      return "errored";
    }
  })();
  return { instance, end };
}

/**
 * The kernel's socket tables. Deno reads /proc only with --allow-all, which
 * the test runner does not grant; a child `deno eval` (the runner may start
 * Deno itself) has all permissions and reads them for us.
 */
async function procNetTcp(): Promise<string> {
  try {
    return Deno.readTextFileSync("/proc/net/tcp") + Deno.readTextFileSync("/proc/net/tcp6");
  } catch {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        'for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) ' +
        "{ try { console.log(Deno.readTextFileSync(f)); } catch { /* no IPv6 */ } }",
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    return new TextDecoder().decode(out.stdout);
  }
}

/** Local addresses (kernel hex) of listening TCP sockets on `port`. */
function listeners(tables: string, port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const out: string[] = [];
  for (const line of tables.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[3] !== "0A" || !f[1].includes(":")) continue; // 0A = LISTEN
    const [addr, p] = f[1].split(":");
    if (p === hexPort) out.push(addr);
  }
  return out;
}

/**
 * Ports of the LISTEN sockets in `tables`; only those whose inode is in
 * `inodes` when given (the machine may run other tests meanwhile).
 */
function listeningPorts(tables: string, inodes?: Set<string>): Set<number> {
  const ports = new Set<number>();
  for (const line of tables.split("\n")) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== "0A" || !f[1].includes(":")) continue;
    if (inodes && !inodes.has(f[9])) continue;
    ports.add(parseInt(f[1].split(":").at(-1)!, 16));
  }
  return ports;
}

/**
 * Socket inodes this process holds. Read by a child: the test runner's
 * permissions do not cover /proc/<pid>/fd.
 */
async function ownSocketInodes(): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `for (const e of Deno.readDirSync("/proc/${Deno.pid}/fd")) {` +
      ` try { const m = /^socket:\\[(\\d+)\\]$/.exec(Deno.readLinkSync("/proc/${Deno.pid}/fd/" + e.name));` +
      " if (m) console.log(m[1]); } catch { /* closed meanwhile */ } }",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(out.success, "listed this process's sockets");
  return new Set(new TextDecoder().decode(out.stdout).split("\n").filter(Boolean));
}

function stateOf(fleet: E2eFleet, id: number): string | undefined {
  return fleet.proxy.status().backends.find((b) => b.id === id)?.state;
}

Deno.test({
  name: "faults e2e: sshd killed and restarted, a network stall, a changed host key",
  ignore,
  async fn(t) {
    const before = listeningPorts(await procNetTcp());
    const fleet = await startE2eFleet({
      models: ["m", "m", "m"],
      healthIntervalMs: 200,
      keepaliveIntervalMs: 250,
      keepaliveCountMax: 2,
    });
    let impostor: Sshd | undefined;
    try {
      await fleet.waitHealthy(3);
      const url = fleet.proxy.url;

      await t.step("serve opens no listener besides --listen; known_hosts is 0600", async () => {
        const tables = await procNetTcp();
        assert.match(tables, /local_address/, "read the kernel's socket table");
        const proxyPort = Number(new URL(url).port);
        assert.deepEqual(listeners(tables, proxyPort), ["0100007F"]);
        // Listeners that appeared since the fleet started are the test's
        // engines, sshds and fake API, and the proxy itself; any other would
        // be a local forward.
        const expected = new Set([
          proxyPort,
          Number(new URL(fleet.api.url).port),
          ...fleet.engines.map((e) => Number(new URL(e.url).port)),
          ...fleet.sshds.map((d) => d.port),
        ]);
        // The proxy runs in this process: its listeners are among ours.
        const ours = await ownSocketInodes();
        assert.ok(ours.size > 0);
        const appeared = [...listeningPorts(tables, ours)].filter((p) => !before.has(p));
        assert.ok(appeared.includes(proxyPort), `the proxy's listener is seen: ${appeared}`);
        assert.deepEqual(appeared.filter((p) => !expected.has(p)), [], "no other listener");
        assert.equal(Deno.statSync(fleet.knownHosts).mode! & 0o777, 0o600);
      });

      await t.step(
        "sshd killed under streams: its streams end, everything else is served, it rejoins",
        async () => {
          const streams = await Promise.all(Array.from({ length: 9 }, () => openStream(url)));
          const victim = fleet.ids[0];
          assert.ok(streams.some((s) => s.instance === victim));
          await fleet.sshds[0].kill("SIGKILL");
          const results = [];
          for (let i = 0; i < 12; i++) results.push(await chat(url));
          for (const r of results) {
            assert.equal(r.status, 200, r.text);
            assert.notEqual(r.instance, victim);
          }
          let timer: ReturnType<typeof setTimeout> | undefined;
          const ends = await Promise.race([
            Promise.all(streams.map(async (s) => ({ instance: s.instance, how: await s.end }))),
            new Promise<never>((_, reject) =>
              timer = setTimeout(() => reject(new Error("a stream hung")), 10_000)
            ),
          ]).finally(() => clearTimeout(timer));
          for (const e of ends) {
            // The victim's streams end with an error; the others finish normally.
            assert.equal(e.how, e.instance === victim ? "errored" : "closed", JSON.stringify(e));
          }
          assert.notEqual(stateOf(fleet, victim), "healthy");
          await fleet.sshds[0].restart();
          await fleet.waitHealthy(3);
          const pinned = await chat(url, { "x-vastproxy-instance": String(victim) });
          assert.equal(pinned.instance, victim);
        },
      );

      await t.step(
        "network stall: keepalive finds it, traffic moves on, the proxy stays responsive",
        async () => {
          const stalled = fleet.ids[1];
          const logMark = fleet.logger.records.length;
          const stopped = await fleet.sshds[1].signalSessions("SIGSTOP");
          assert.ok(stopped > 0, "sshd has session processes to stop");
          try {
            const statuses: number[] = [];
            for (let i = 0; i < 9; i++) {
              // Admin stays instant even while a tunnel hangs.
              const s0 = Date.now();
              const st = await fetch(`${url}/vastproxy/status`);
              await st.body?.cancel();
              assert.equal(st.status, 200);
              assert.ok(Date.now() - s0 < 300, "status answered promptly");
              const r = await chat(url);
              statuses.push(r.status);
              // Bounded by keepalive (2 × 250 ms), not by a TCP timeout.
              assert.ok(r.ms < 4_000, `request took ${r.ms} ms`);
              if (r.status !== 200) {
                // A request already written onto the stalled connection may
                // have reached the engine: it is answered 502, never replayed.
                assert.equal(r.status, 502, r.text);
                assert.match(r.text, new RegExp(`Instance ${stalled} failed after receiving`));
              }
            }
            // Once keepalive declared the connection lost, traffic moved on.
            assert.ok(statuses.filter((x) => x !== 200).length <= 1, `statuses ${statuses}`);
            assert.deepEqual(statuses.slice(-4), [200, 200, 200, 200]);
            await eventually(
              "keepalive declared the stalled connection lost",
              () =>
                fleet.logger.records.slice(logMark).some((r) =>
                  r.msg === "SSH tunnel down" && r.fields.instance === stalled &&
                  String(r.fields.reason).includes("keepalive")
                ),
              5_000,
            );
          } finally {
            await fleet.sshds[1].signalSessions("SIGCONT");
          }
          await fleet.waitHealthy(3);
        },
      );

      await t.step("a changed host key refuses that backend and only that one", async () => {
        const id = fleet.ids[2];
        const pinnedBefore = await Deno.readTextFile(fleet.knownHosts);
        const port = fleet.sshds[2].port;
        await fleet.sshds[2].kill("SIGKILL");
        // Another machine now answers on that address, with its own host key.
        impostor = await startSshd({ port, clientKeyPath: fleet.sshds[2].clientKeyPath });
        await eventually("hostkey-mismatch", () => stateOf(fleet, id) === "hostkey-mismatch");
        const reason = fleet.proxy.status().backends.find((b) => b.id === id)!.reason ?? "";
        assert.match(reason, /host key/i);
        for (let i = 0; i < 6; i++) {
          const r = await chat(url);
          assert.equal(r.status, 200);
          assert.notEqual(r.instance, id);
        }
        // A pin to the refused instance falls back to the others.
        const pinned = await chat(url, { "x-vastproxy-instance": String(id) });
        assert.equal(pinned.status, 200);
        assert.notEqual(pinned.instance, id);
        // The pin was not replaced by the new key.
        assert.equal(await Deno.readTextFile(fleet.knownHosts), pinnedBefore);
        assert.ok(!pinnedBefore.includes(impostor.hostKey.split(" ")[1]));
      });
    } finally {
      await impostor?.stop();
      await fleet.close();
    }
  },
});
