/**
 * SSH packet micro-benchmark (issue #14 item 3): µs per packet to encrypt and
 * to decrypt, and socket writes per packet, for every cipher candidate, at
 * the sizes vastproxy's traffic has: 40 B (a window adjust), 330 B (a small
 * request) and 16 KiB (bulk).
 *
 * Candidates: ssh2's own JavaScript classes (what a connection under Deno
 * runs) for aes128/256-gcm, chacha20-poly1305 and aes-ctr with the etm MACs,
 * and "own" aes128/256-gcm: the same classes with lib/tunnel/packet_cipher.ts
 * installed (keyed once per key exchange, one write per packet). Each round
 * encrypts a run of packets, then decrypts them all; a decrypted payload is
 * checked against the input. Times are this process's CPU time
 * (`process.cpuUsage()`), steadier than wall time on a shared machine.
 * Rounds interleave the candidates, rotating the
 * order; medians are printed.
 *
 *   deno run -A bench/ssh_packets.ts [--rounds N] [--quick]
 */

import process from "node:process";
import { Buffer } from "node:buffer";
import { randomBytes } from "node:crypto";
import { OWN_GCM, packetCipherStats, SSH2_GCM, ssh2Crypto } from "../lib/tunnel/packet_cipher.ts";
import { median } from "./_stats.ts";

interface Candidate {
  name: string;
  cipher: string;
  mac?: string;
  own?: boolean;
}

export const CANDIDATES: Candidate[] = [
  { name: "ssh2 aes128-gcm", cipher: "aes128-gcm@openssh.com" },
  { name: "own aes128-gcm", cipher: "aes128-gcm@openssh.com", own: true },
  { name: "ssh2 aes256-gcm", cipher: "aes256-gcm@openssh.com" },
  { name: "own aes256-gcm", cipher: "aes256-gcm@openssh.com", own: true },
  { name: "ssh2 chacha20-poly1305", cipher: "chacha20-poly1305@openssh.com" },
  {
    name: "ssh2 aes128-ctr+sha256-etm",
    cipher: "aes128-ctr",
    mac: "hmac-sha2-256-etm@openssh.com",
  },
  {
    name: "ssh2 aes256-ctr+sha256-etm",
    cipher: "aes256-ctr",
    mac: "hmac-sha2-256-etm@openssh.com",
  },
  {
    name: "ssh2 aes128-ctr+sha512-etm",
    cipher: "aes128-ctr",
    mac: "hmac-sha2-512-etm@openssh.com",
  },
];

/** This process's CPU time in µs: steadier than wall time on a shared machine. */
const cpuUs = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

export const SIZES = [40, 330, 16 * 1024];

interface Ssh2CryptoFull {
  init: Promise<void>;
  CIPHER_INFO: Record<string, { keyLen: number; ivLen: number; sslName: string }>;
  MAC_INFO: Record<string, { len: number }>;
  createCipher(config: unknown): { allocPacket(len: number): Buffer; encrypt(p: Buffer): void };
  createDecipher(config: unknown): { decrypt(data: Buffer, p: number, len: number): unknown };
}

export interface PacketResult {
  encUs: number;
  decUs: number;
  writes: number;
}

/** Encrypts `count` packets of `size` payload bytes, then decrypts them; µs per packet. */
export function measure(cand: Candidate, size: number, count: number): PacketResult {
  const c = ssh2Crypto() as unknown as Ssh2CryptoFull;
  {
    const info = c.CIPHER_INFO[cand.cipher];
    const macInfo = cand.mac ? c.MAC_INFO[cand.mac] : undefined;
    const key = randomBytes(info.keyLen), iv = randomBytes(info.ivLen);
    const macKey = macInfo ? randomBytes(macInfo.len) : undefined;
    let chunks: Buffer[] = [];
    let writes = 0;
    const cipher = c.createCipher({
      outbound: {
        onWrite: (b: Buffer) => {
          writes++;
          chunks.push(b);
        },
        cipherInfo: info,
        cipherKey: key,
        cipherIV: Buffer.from(iv),
        seqno: 0,
        macInfo,
        macKey,
      },
    });
    const payload = randomBytes(size);
    let good = 0;
    const decipher = c.createDecipher({
      inbound: {
        onPayload: (p: Buffer) => {
          if (p.length === size && p[0] === payload[0] && p[size - 1] === payload[size - 1]) good++;
        },
        decipherInfo: info,
        decipherKey: key,
        decipherIV: Buffer.from(iv),
        seqno: 0,
        macInfo,
        macKey,
      },
    });
    if (cand.cipher.includes("gcm")) {
      // The same ssh2 classes, with either its own methods or ours (whatever
      // a connection in this process would use).
      const m = cand.own ? OWN_GCM : SSH2_GCM;
      Object.assign(cipher, { encrypt: m.encrypt });
      Object.assign(decipher, { decrypt: m.decrypt });
    }
    // Packets are allocated and filled outside the timed loop, as ssh2 does
    // before it calls encrypt().
    const packets: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const p = cipher.allocPacket(size);
      p.set(payload, 5);
      packets.push(p);
    }
    const wire: Buffer[] = [];
    const t0 = cpuUs();
    for (const p of packets) {
      chunks = [];
      cipher.encrypt(p);
      wire.push(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
    }
    const t1 = cpuUs();
    for (const w of wire) decipher.decrypt(w, 0, w.length);
    const t2 = cpuUs();
    if (good !== count) {
      throw new Error(`${cand.name} ${size} B: ${good} of ${count} round-tripped`);
    }
    return {
      encUs: (t1 - t0) / count,
      decUs: (t2 - t1) / count,
      writes: writes / count,
    };
  }
}

async function main() {
  const args = Deno.args;
  const quick = args.includes("--quick");
  const i = args.indexOf("--rounds");
  const rounds = i >= 0 ? Number(args[i + 1]) : quick ? 3 : 7;
  await (ssh2Crypto() as unknown as Ssh2CryptoFull).init;
  const counts: Record<number, number> = quick
    ? { 40: 5_000, 330: 5_000, [16 * 1024]: 300 }
    : { 40: 20_000, 330: 20_000, [16 * 1024]: 1_500 };
  const all: Record<string, Record<number, PacketResult[]>> = {};
  for (const c of CANDIDATES) all[c.name] = Object.fromEntries(SIZES.map((s) => [s, []]));
  // Warm up every path once.
  for (const c of CANDIDATES) for (const s of SIZES) measure(c, s, 200);
  for (let r = 0; r < rounds; r++) {
    const order = CANDIDATES.map((_, k) => CANDIDATES[(k + r) % CANDIDATES.length]);
    for (const c of order) for (const s of SIZES) all[c.name][s].push(measure(c, s, counts[s]));
    console.error(`round ${r + 1}/${rounds} done`);
  }
  if (packetCipherStats.sealed === 0) throw new Error("the own cipher never ran");
  const f = (x: number, d = 1) => x.toFixed(d);
  console.log(
    `\nCPU µs per packet, encrypt / decrypt (median of ${rounds} rounds); writes per packet\n`,
  );
  console.log(
    "| candidate | 40 B enc / dec | 330 B enc / dec | 16 KiB enc / dec | 16 KiB MB/s enc / dec | writes |",
  );
  console.log("| --- | --: | --: | --: | --: | --: |");
  for (const c of CANDIDATES) {
    const m = (s: number, k: keyof PacketResult) => median(all[c.name][s].map((x) => x[k]));
    const big = 16 * 1024;
    console.log(
      `| ${c.name} | ${f(m(40, "encUs"), 2)} / ${f(m(40, "decUs"), 2)} | ` +
        `${f(m(330, "encUs"), 2)} / ${f(m(330, "decUs"), 2)} | ` +
        `${f(m(big, "encUs"), 0)} / ${f(m(big, "decUs"), 0)} | ` +
        `${f(big / m(big, "encUs"), 0)} / ${f(big / m(big, "decUs"), 0)} | ${m(40, "writes")} |`,
    );
  }
  const out = new URL("./.cache/ssh_packets.json", import.meta.url);
  await Deno.mkdir(new URL("./.cache/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(out, JSON.stringify({ date: new Date().toISOString(), all }, null, 1));
  console.log(`\nEvery round: ${out.pathname}`);
}

if (import.meta.main) await main();
