import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
// @ts-types="@types/ssh2"
import { Client, type Client as ClientType } from "ssh2";
import { makeFakeNvidiaSmi } from "../../lib/sim/fake_nvidia_smi.ts";
import { ed25519KeyPair } from "../../lib/sim/fleet.ts";
import { startSimSshServer } from "../../lib/sim/ssh_server.ts";

// ed25519KeyPair() redraws the ~1 in 200 keys ssh2 generates but cannot parse.
const HOST = ed25519KeyPair();
const USER = ed25519KeyPair();
const STRANGER = ed25519KeyPair();

function connect(port: number, privateKey: string): Promise<ClientType> {
  return new Promise((resolve, reject) => {
    const c = new Client();
    c.once("ready", () => resolve(c));
    c.once("error", (err) => {
      c.end();
      reject(err);
    });
    c.connect({ host: "127.0.0.1", port, username: "root", privateKey, readyTimeout: 5000 });
  });
}

function closed(c: ClientType): Promise<void> {
  return new Promise((resolve) => c.once("close", () => resolve()));
}

function exec(c: ClientType, cmd: string): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    c.exec(cmd, (err, stream) => {
      if (err) return reject(err);
      let out = "";
      let errText = "";
      let code = -1;
      stream.on("data", (d: Buffer) => out += d.toString());
      stream.stderr.on("data", (d: Buffer) => errText += d.toString());
      stream.on("exit", (n: number) => code = n);
      stream.on("close", () => resolve({ code, out, err: errText }));
    });
  });
}

async function withServer(
  fn: (port: number) => Promise<void>,
  extra: { portMap?: (p: number) => number | undefined } = {},
) {
  const smi = makeFakeNvidiaSmi({ gpus: 2, random: () => 0.5, now: () => 0 });
  const server = await startSimSshServer({
    hostKey: HOST.private,
    authorizedKey: USER.public,
    nvidiaSmi: smi,
    ...extra,
  });
  try {
    await fn(server.port);
  } finally {
    await server.close();
  }
}

Deno.test("startSimSshServer() accepts the authorized key and runs nvidia-smi", async () => {
  await withServer(async (port) => {
    const c = await connect(port, USER.private);
    const r = await exec(
      c,
      "nvidia-smi --query-gpu=index,name,utilization.gpu,memory.used,memory.total," +
        "temperature.gpu,power.draw --format=csv,noheader,nounits",
    );
    assert.equal(r.code, 0);
    const lines = r.out.trim().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0], /^0, NVIDIA H100 80GB HBM3, \d+, \d+, 81559, \d+, \d+\.\d\d$/);
    assert.match(lines[1], /^1, /);
    const unknown = await exec(c, "rm -rf /");
    assert.equal(unknown.code, 127);
    assert.match(unknown.err, /rm: command not found/);
    c.end();
    await closed(c);
  });
});

Deno.test("startSimSshServer() rejects a key that is not authorized", async () => {
  await withServer(async (port) => {
    await assert.rejects(connect(port, STRANGER.private), /authentication methods failed/);
  });
});

Deno.test("startSimSshServer() forwards direct-tcpip to a loopback server via portMap", async () => {
  const ac = new AbortController();
  let listening!: (port: number) => void;
  const ready = new Promise<number>((r) => listening = r);
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: (a) => listening(a.port) },
    (req) => Response.json({ path: new URL(req.url).pathname }),
  );
  const realPort = await ready;
  try {
    await withServer(async (port) => {
      const c = await connect(port, USER.private);
      const body = await new Promise<string>((resolve, reject) => {
        // 18000 is the engine's port "inside the instance"; portMap finds the real one.
        c.forwardOut("127.0.0.1", 0, "127.0.0.1", 18000, (err, ch) => {
          if (err) return reject(err);
          let text = "";
          ch.on("data", (d: Buffer) => text += d.toString());
          ch.on("close", () => resolve(text));
          ch.write("GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        });
      });
      assert.match(body, /^HTTP\/1\.1 200 OK/);
      assert.match(body, /\{"path":"\/v1\/models"\}/);
      // A port nothing listens on: the channel is refused, like sshd does.
      await assert.rejects(
        new Promise((resolve, reject) =>
          c.forwardOut("127.0.0.1", 0, "127.0.0.1", 1, (err, ch) => err ? reject(err) : resolve(ch))
        ),
        /Channel open failure/,
      );
      c.end();
      await closed(c);
    }, { portMap: (p) => p === 18000 ? realPort : undefined });
  } finally {
    ac.abort();
    await http.finished;
  }
});

Deno.test("startSimSshServer().close() ends clients and stops listening", async () => {
  const server = await startSimSshServer({ hostKey: HOST.private, authorizedKey: USER.public });
  const c = await connect(server.port, USER.private);
  assert.equal(server.connections, 1);
  const gone = closed(c);
  await server.close();
  await gone;
  assert.equal(server.connections, 0);
  await assert.rejects(connect(server.port, USER.private), /ECONNREFUSED|refused/i);
});

Deno.test("startSimSshServer().disconnectAll() drops clients but keeps listening", async () => {
  const server = await startSimSshServer({ hostKey: HOST.private, authorizedKey: USER.public });
  try {
    const c = await connect(server.port, USER.private);
    const gone = closed(c);
    server.disconnectAll();
    await gone;
    const again = await connect(server.port, USER.private);
    assert.equal(server.connections, 1);
    again.end();
    await closed(again);
  } finally {
    await server.close();
  }
});

Deno.test("makeFakeNvidiaSmi() moves slowly and reports [N/A] power when asked", () => {
  let t = 0;
  const smi = makeFakeNvidiaSmi({
    name: "NVIDIA GeForce RTX 4090",
    memTotal: 24564,
    powerNa: true,
    now: () => t,
  });
  const first = smi().trim().split(", ");
  t += 5000;
  const second = smi().trim().split(", ");
  assert.equal(first.length, 7);
  assert.equal(first[6], "[N/A]");
  assert.equal(first[4], "24564");
  assert.ok(Math.abs(Number(first[2]) - Number(second[2])) <= 30);
  const h100 = makeFakeNvidiaSmi({ random: () => 0.99 })();
  assert.match(h100, /^0, NVIDIA H100 80GB HBM3, \d+, \d+, 81559, \d+, \d+\.\d{2}\n$/);
});
