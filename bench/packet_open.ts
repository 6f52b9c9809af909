/**
 * Opening one AES-GCM SSH packet: `node:crypto` on the JavaScript thread (what
 * lib/tunnel/packet_cipher.ts does for packets over 1 KiB) against
 * WebCrypto's `crypto.subtle.decrypt` (lib/tunnel/open_queue.ts), which Deno
 * runs on its blocking-task threads. Per packet size: wall µs per packet
 * opened one at a time (latency), this thread's CPU µs per packet (what the
 * proxy's one thread pays), and MB/s with 8 opens in flight. Thread CPU is
 * read from /proc (Linux; 10 ms ticks, so each measurement opens ≥ 32 MiB).
 * Rounds interleave the two; medians are printed.
 *
 *   deno run -A bench/packet_open.ts [--rounds N]
 */
import { Buffer } from "node:buffer";
import { createDecipheriv } from "node:crypto";
import { median } from "./_stats.ts";

const SIZES = [1024, 2048, 4096, 8192, 16384, 32768];

/** CPU ms of this process's main thread (the JavaScript thread), or NaN off Linux. */
function threadCpuMs(): number {
  try {
    const s = Deno.readTextFileSync(`/proc/self/task/${Deno.pid}/stat`);
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
}

interface Row {
  wallUs: number[];
  cpuUs: number[];
  mbps: number[];
}

async function main() {
  const roundsArg = Deno.args.indexOf("--rounds");
  const rounds = roundsArg >= 0 ? Number(Deno.args[roundsArg + 1]) : 5;
  const key = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const aad = new Uint8Array(4);
  const k = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["decrypt", "encrypt"]);
  const params = { name: "AES-GCM", iv, additionalData: aad };
  const rows = new Map<string, Row>();
  const row = (name: string) => {
    let r = rows.get(name);
    if (!r) rows.set(name, r = { wallUs: [], cpuUs: [], mbps: [] });
    return r;
  };
  for (let round = 0; round < rounds; round++) {
    for (const n of SIZES) {
      const pt = crypto.getRandomValues(new Uint8Array(n));
      const ct = new Uint8Array(await crypto.subtle.encrypt(params, k, pt));
      const count = Math.max(2000, (32 << 20) / n);
      const nodeOpen = () => {
        const d = createDecipheriv("aes-128-gcm", key, iv);
        d.setAAD(aad);
        d.setAuthTag(ct.subarray(n));
        const out = d.update(ct.subarray(0, n));
        d.final();
        return out;
      };
      const check = (b: Uint8Array) => {
        if (!Buffer.from(b).equals(Buffer.from(pt))) throw new Error("opened bytes differ");
      };
      check(nodeOpen());
      check(new Uint8Array(await crypto.subtle.decrypt(params, k, ct)));
      const order = round % 2 ? ["webcrypto", "node"] : ["node", "webcrypto"];
      for (const which of order) {
        const r = row(`${which} ${n}`);
        const c0 = threadCpuMs(), t0 = performance.now();
        if (which === "node") { for (let i = 0; i < count; i++) nodeOpen(); }
        else for (let i = 0; i < count; i++) await crypto.subtle.decrypt(params, k, ct);
        const wall = performance.now() - t0, cpu = threadCpuMs() - c0;
        r.wallUs.push((wall / count) * 1000);
        r.cpuUs.push((cpu / count) * 1000);
        const t1 = performance.now();
        if (which === "node") { for (let i = 0; i < count; i++) nodeOpen(); }
        else {
          for (let i = 0; i < count; i += 8) {
            await Promise.all(
              Array.from({ length: 8 }, () => crypto.subtle.decrypt(params, k, ct)),
            );
          }
        }
        r.mbps.push((count * n) / 1e6 / ((performance.now() - t1) / 1000));
      }
    }
  }
  console.log(`median of ${rounds} rounds\n`);
  console.log(
    "| open      | size B | wall µs/packet | JS-thread CPU µs/packet | MB/s, 8 in flight |",
  );
  console.log(
    "| --------- | ------ | -------------- | ----------------------- | ----------------- |",
  );
  for (const n of SIZES) {
    for (const which of ["node", "webcrypto"]) {
      const r = row(`${which} ${n}`);
      console.log(
        `| ${which.padEnd(9)} | ${String(n).padStart(6)} | ${
          median(r.wallUs).toFixed(1).padStart(14)
        } | ${median(r.cpuUs).toFixed(1).padStart(23)} | ${
          median(r.mbps).toFixed(0).padStart(17)
        } |`,
      );
    }
  }
}

if (import.meta.main) await main();
