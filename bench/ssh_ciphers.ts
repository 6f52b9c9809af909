/**
 * SSH cipher micro-benchmark (issue #14 item 3): which cipher/MAC is
 * cheapest for vastproxy's traffic under Deno, where ssh2 always runs its
 * JavaScript crypto path over `node:crypto`.
 *
 * Per candidate, in interleaved rounds (the order rotates each round). AES-GCM
 * runs with lib/tunnel/packet_cipher.ts (as connections do), and once more
 * as "aes128-gcm (ssh2's)" with ssh2's own classes:
 *
 * - **packet**: ssh2's own `createCipher`/`createDecipher` (the classes the
 *   connection uses), µs per packet to encrypt and to decrypt a 300 B and a
 *   32 KiB payload, in this process, without sockets;
 * - **conn**: a real ssh2 connection, opened by `connectEndpoint` (so with
 *   Nagle off and the coalesced writes) to a local OpenSSH (`startSshd()`)
 *   with only that candidate offered, and `forwardOut` channels to an echo
 *   server in a subprocess:
 *   - latency: 300 B out, 300 B back, sequential on one channel (p50/p99);
 *   - throughput: the same exchange on 32 channels at once, exchanges/s;
 *   - down / up: 64 MiB over one channel each way, MB/s;
 *   - this process's CPU time (`process.cpuUsage()`) per exchange and per
 *     MiB, which is steadier than wall time on a shared machine.
 *
 *   deno run -A bench/ssh_ciphers.ts [--rounds N] [--quick] [--only packet|conn]
 *
 * Results go to stdout (medians) and `bench/.cache/ssh_ciphers.json` (every round).
 */

import process from "node:process";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import type { ClientChannel } from "ssh2";
import { connectEndpoint, endClient, type SshAlgorithms } from "../lib/tunnel/connect.ts";
import { loadAuthSources } from "../lib/tunnel/keys.ts";
import {
  installPacketCipher,
  OWN_GCM,
  SSH2_GCM,
  uninstallPacketCipher,
} from "../lib/tunnel/packet_cipher.ts";
import { forwardTo, startSshd } from "../tests/_helpers/sshd.ts";
import { median, quantile } from "./_stats.ts";

interface Candidate {
  name: string;
  algorithms: SshAlgorithms;
  /** AES-GCM with ssh2's own classes (lib/tunnel/packet_cipher.ts uninstalled). */
  ssh2Gcm?: boolean;
}

/** AEAD ciphers carry their own MAC; the hmac list is then ignored. */
const AEAD_HMAC: SshAlgorithms["hmac"] = ["hmac-sha2-256-etm@openssh.com"];

export const CANDIDATES: Candidate[] = [
  {
    name: "chacha20-poly1305",
    algorithms: { cipher: ["chacha20-poly1305@openssh.com"], hmac: AEAD_HMAC },
  },
  { name: "aes128-gcm", algorithms: { cipher: ["aes128-gcm@openssh.com"], hmac: AEAD_HMAC } },
  {
    name: "aes128-gcm (ssh2's)",
    algorithms: { cipher: ["aes128-gcm@openssh.com"], hmac: AEAD_HMAC },
    ssh2Gcm: true,
  },
  { name: "aes256-gcm", algorithms: { cipher: ["aes256-gcm@openssh.com"], hmac: AEAD_HMAC } },
  {
    name: "aes128-ctr+sha256-etm",
    algorithms: { cipher: ["aes128-ctr"], hmac: ["hmac-sha2-256-etm@openssh.com"] },
  },
  {
    name: "aes256-ctr+sha256-etm",
    algorithms: { cipher: ["aes256-ctr"], hmac: ["hmac-sha2-256-etm@openssh.com"] },
  },
  {
    name: "aes128-ctr+sha512-etm",
    algorithms: { cipher: ["aes128-ctr"], hmac: ["hmac-sha2-512-etm@openssh.com"] },
  },
];

// ---------------------------------------------------------------- echo server

const MiB = 1024 * 1024;

/** Runs in the subprocess: echo, bulk-down and bulk-up listeners; prints their ports. */
async function echoServer(bulkBytes: number): Promise<void> {
  const listen = () => Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const echo = listen(), down = listen(), up = listen();
  const port = (l: Deno.Listener) => (l.addr as Deno.NetAddr).port;
  console.log(JSON.stringify({ echo: port(echo), down: port(down), up: port(up) }));
  const serve = async (l: Deno.Listener, handle: (c: Deno.TcpConn) => Promise<void>) => {
    for await (const c of l) {
      (c as Deno.TcpConn).setNoDelay(true);
      handle(c as Deno.TcpConn).catch(() => {}).finally(() => {
        try {
          c.close();
        } catch {
          // Already closed.
        }
      });
    }
  };
  const chunk = new Uint8Array(64 * 1024).fill(7);
  await Promise.all([
    serve(echo, async (c) => {
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await c.read(buf);
        if (n === null) return;
        let off = 0;
        while (off < n) off += await c.write(buf.subarray(off, n));
      }
    }),
    serve(down, async (c) => {
      for (let sent = 0; sent < bulkBytes;) {
        sent += await c.write(chunk.subarray(0, Math.min(chunk.length, bulkBytes - sent)));
      }
    }),
    serve(up, async (c) => {
      const buf = new Uint8Array(256 * 1024);
      let got = 0;
      while (got < bulkBytes) {
        const n = await c.read(buf);
        if (n === null) return;
        got += n;
      }
      await c.write(new Uint8Array([1]));
    }),
  ]);
}

// ---------------------------------------------------------------- packet level

// ssh2's internal crypto module: the same classes a connection uses.
const require = createRequire(import.meta.url);

interface Ssh2Crypto {
  init: Promise<void>;
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number; sslName: string }>;
  MAC_INFO: Record<string, { len: number }>;
  createCipher(config: unknown): {
    allocPacket(len: number): Buffer;
    encrypt(packet: Buffer): void;
  };
  createDecipher(config: unknown): { decrypt(data: Buffer, p: number, len: number): void };
}

function loadSsh2Crypto(): Ssh2Crypto {
  const main = require.resolve("ssh2");
  return require(main.replace(/lib[\\/]index\.js$/, "lib/protocol/crypto.js")) as Ssh2Crypto;
}

interface PacketResult {
  size: number;
  encUs: number;
  decUs: number;
}

/** µs per packet to encrypt and decrypt `size`-byte payloads with ssh2's JS path. */
function packetBench(c: Ssh2Crypto, cand: Candidate, size: number, count: number): PacketResult {
  const cipherName = (cand.algorithms.cipher as string[])[0];
  const macName = (cand.algorithms.hmac as string[])[0];
  const info = c.CIPHER_INFO[cipherName];
  const macInfo = c.MAC_INFO[macName];
  const key = randomBytes(info.keyLen), iv = randomBytes(info.ivLen || 16);
  const macKey = randomBytes(macInfo.len);
  let chunks: Buffer[] = [];
  const cipher = c.createCipher({
    outbound: {
      onWrite: (b: Buffer) => chunks.push(Buffer.from(b)),
      cipherInfo: info,
      cipherKey: key,
      cipherIV: Buffer.from(iv),
      seqno: 0,
      macInfo,
      macKey,
    },
  });
  let payloads = 0;
  const decipher = c.createDecipher({
    inbound: {
      onPayload: () => {
        payloads++;
      },
      decipherInfo: info,
      decipherKey: key,
      decipherIV: Buffer.from(iv),
      seqno: 0,
      macInfo,
      macKey,
    },
  });
  if (cipherName.includes("gcm")) {
    const m = cand.ssh2Gcm ? SSH2_GCM : OWN_GCM;
    Object.assign(cipher, { encrypt: m.encrypt });
    Object.assign(decipher, { decrypt: m.decrypt });
  }
  const payload = randomBytes(size);
  const wire: Buffer[] = [];
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const pkt = cipher.allocPacket(size);
    pkt.set(payload, 5);
    chunks = [];
    cipher.encrypt(pkt);
    wire.push(Buffer.concat(chunks));
  }
  const t1 = performance.now();
  for (const w of wire) decipher.decrypt(w, 0, w.length);
  const t2 = performance.now();
  if (payloads !== count) {
    throw new Error(`${cand.name}: ${payloads} of ${count} packets decrypted`);
  }
  return { size, encUs: ((t1 - t0) * 1000) / count, decUs: ((t2 - t1) * 1000) / count };
}

// ---------------------------------------------------------------- connection level

interface ConnResult {
  latP50Ms: number;
  latP99Ms: number;
  latCpuUs: number;
  tputPerS: number;
  tputCpuUs: number;
  downMBs: number;
  downCpuMsPerMiB: number;
  upMBs: number;
  upCpuMsPerMiB: number;
}

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** A channel that answers `exchange(n)` once `n` echoed bytes are back. */
function exchanger(ch: ClientChannel) {
  let want = 0, got = 0;
  let done: (() => void) | null = null;
  ch.on("data", (b: Buffer) => {
    got += b.length;
    if (done && got >= want) {
      const d = done;
      done = null;
      d();
    }
  });
  return (msg: Buffer) =>
    new Promise<void>((resolve) => {
      want = msg.length;
      got = 0;
      done = resolve;
      ch.write(msg);
    });
}

async function connBench(
  cand: Candidate,
  sshdPort: number,
  keyPath: string,
  ports: { echo: number; down: number; up: number },
  o: { latCount: number; tputSeconds: number; bulkBytes: number },
): Promise<ConnResult> {
  // connect.ts installs the own AES-GCM packet cipher; the "ssh2's" row runs without it.
  if (cand.ssh2Gcm) uninstallPacketCipher();
  else installPacketCipher();
  const conn = await connectEndpoint({ host: "127.0.0.1", port: sshdPort, path: "direct" }, {
    instanceId: 1,
    username: "root",
    auth: loadAuthSources({ sshKeys: [keyPath] }),
    knownHosts: null,
    readyTimeoutMs: 10_000,
    keepaliveIntervalMs: 60_000,
    keepaliveCountMax: 3,
    algorithms: cand.algorithms,
  });
  const client = conn.client;
  try {
    const msg = Buffer.alloc(300, 0x61);
    // Latency: one channel, sequential.
    const ch = await forwardTo(client, ports.echo);
    const ex = exchanger(ch);
    for (let i = 0; i < 200; i++) await ex(msg);
    const lats: number[] = [];
    let c0 = cpuMs();
    for (let i = 0; i < o.latCount; i++) {
      const t = performance.now();
      await ex(msg);
      lats.push(performance.now() - t);
    }
    const latCpuUs = ((cpuMs() - c0) * 1000) / o.latCount;
    ch.close();

    // Throughput: 32 channels.
    const chans = await Promise.all(
      Array.from({ length: 32 }, () => forwardTo(client, ports.echo)),
    );
    const exs = chans.map(exchanger);
    await Promise.all(exs.map((e) => e(msg)));
    let n = 0;
    const stopAt = performance.now() + o.tputSeconds * 1000;
    c0 = cpuMs();
    const t0 = performance.now();
    await Promise.all(exs.map(async (e) => {
      while (performance.now() < stopAt) {
        await e(msg);
        n++;
      }
    }));
    const tputS = (performance.now() - t0) / 1000;
    const tputCpuUs = ((cpuMs() - c0) * 1000) / n;
    for (const c of chans) c.close();

    // Bulk down: the server sends bulkBytes and closes (EOF on the channel).
    const down = await forwardTo(client, ports.down);
    c0 = cpuMs();
    let t = performance.now();
    let got = 0;
    await new Promise<void>((resolve) => {
      down.on("data", (b: Buffer) => (got += b.length));
      down.on("end", () => resolve());
    });
    const downS = (performance.now() - t) / 1000;
    const downCpu = cpuMs() - c0;
    if (got !== o.bulkBytes) throw new Error(`bulk down: ${got} of ${o.bulkBytes} bytes`);
    down.close();

    // Bulk up: we send bulkBytes; the server answers one byte.
    const up = await forwardTo(client, ports.up);
    const block = Buffer.alloc(32 * 1024, 0x62);
    c0 = cpuMs();
    t = performance.now();
    const acked = new Promise<void>((resolve) => up.once("data", () => resolve()));
    for (let sent = 0; sent < o.bulkBytes; sent += block.length) {
      if (!up.write(block)) await new Promise((r) => up.once("drain", r));
    }
    await acked;
    const upS = (performance.now() - t) / 1000;
    const upCpu = cpuMs() - c0;
    up.close();

    const mib = o.bulkBytes / MiB;
    return {
      latP50Ms: quantile(lats, 0.5),
      latP99Ms: quantile(lats, 0.99),
      latCpuUs,
      tputPerS: n / tputS,
      tputCpuUs,
      downMBs: o.bulkBytes / 1e6 / downS,
      downCpuMsPerMiB: downCpu / mib,
      upMBs: o.bulkBytes / 1e6 / upS,
      upCpuMsPerMiB: upCpu / mib,
    };
  } finally {
    endClient(client);
    installPacketCipher();
  }
}

// ---------------------------------------------------------------- main

async function main() {
  const args = Deno.args;
  if (args[0] === "--echo") return await echoServer(Number(args[1]));
  const quick = args.includes("--quick");
  const flag = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const rounds = Number(flag("--rounds") ?? (quick ? 2 : 5));
  const only = flag("--only");
  const o = quick
    ? { latCount: 500, tputSeconds: 1, bulkBytes: 16 * MiB }
    : { latCount: 2000, tputSeconds: 3, bulkBytes: 64 * MiB };

  const ssh2Crypto = loadSsh2Crypto();
  await ssh2Crypto.init;

  const sshd = await startSshd();
  const echo = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", import.meta.filename!, "--echo", String(o.bulkBytes)],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = echo.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await lines.read();
  const ports = JSON.parse(String(first.value).split("\n")[0]);
  lines.releaseLock();

  const all: Record<string, { packet: PacketResult[][]; conn: ConnResult[] }> = {};
  for (const c of CANDIDATES) all[c.name] = { packet: [], conn: [] };
  try {
    for (let r = 0; r < rounds; r++) {
      const order = CANDIDATES.map((_, i) => CANDIDATES[(i + r) % CANDIDATES.length]);
      for (const cand of order) {
        if (only !== "conn") {
          all[cand.name].packet.push([
            packetBench(ssh2Crypto, cand, 300, quick ? 5_000 : 20_000),
            packetBench(ssh2Crypto, cand, 32 * 1024, quick ? 500 : 2_000),
          ]);
        }
        if (only !== "packet") {
          all[cand.name].conn.push(await connBench(cand, sshd.port, sshd.clientKeyPath, ports, o));
        }
        console.error(`round ${r + 1}/${rounds}: ${cand.name} done`);
      }
    }
  } finally {
    try {
      echo.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await echo.status;
    await sshd.stop();
  }

  const f = (x: number, d = 1) => Number.isFinite(x) ? x.toFixed(d) : "–";
  const med = <T>(xs: T[], get: (x: T) => number) => median(xs.map(get));
  if (only !== "conn") {
    console.log(`\nPacket level (ssh2's JS path, µs per packet, median of ${rounds} rounds)\n`);
    console.log("| candidate | enc 300 B | dec 300 B | enc 32 KiB | dec 32 KiB |");
    console.log("| --- | --: | --: | --: | --: |");
    for (const c of CANDIDATES) {
      const p = all[c.name].packet;
      console.log(
        `| ${c.name} | ${f(med(p, (x) => x[0].encUs), 2)} | ${f(med(p, (x) => x[0].decUs), 2)} | ` +
          `${f(med(p, (x) => x[1].encUs))} | ${f(med(p, (x) => x[1].decUs))} |`,
      );
    }
  }
  if (only !== "packet") {
    console.log(`\nConnection level (median of ${rounds} rounds; CPU = this process)\n`);
    console.log(
      "| candidate | lat p50 / p99 ms | CPU µs/exch (seq) | 32 ch exch/s | CPU µs/exch (32 ch) | " +
        "down MB/s | CPU ms/MiB down | up MB/s | CPU ms/MiB up |",
    );
    console.log("| --- | --: | --: | --: | --: | --: | --: | --: | --: |");
    for (const c of CANDIDATES) {
      const r = all[c.name].conn;
      console.log(
        `| ${c.name} | ${f(med(r, (x) => x.latP50Ms), 3)} / ${f(med(r, (x) => x.latP99Ms), 2)} | ` +
          `${f(med(r, (x) => x.latCpuUs), 0)} | ${f(med(r, (x) => x.tputPerS), 0)} | ` +
          `${f(med(r, (x) => x.tputCpuUs), 0)} | ${f(med(r, (x) => x.downMBs), 0)} | ` +
          `${f(med(r, (x) => x.downCpuMsPerMiB), 2)} | ${f(med(r, (x) => x.upMBs), 0)} | ` +
          `${f(med(r, (x) => x.upCpuMsPerMiB), 2)} |`,
      );
    }
  }
  const out = new URL("./.cache/ssh_ciphers.json", import.meta.url);
  await Deno.mkdir(new URL("./.cache/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    out,
    JSON.stringify({ date: new Date().toISOString(), rounds, o, all }, null, 1),
  );
  console.log(`\nEvery round: ${out.pathname}`);
}

if (import.meta.main) await main();
