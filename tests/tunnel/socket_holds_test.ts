/**
 * DenoSocket holds (holdReads/holdEnd) and OpenQueue lifecycle edges, from a
 * hostile review: holds that never settle or reject, a queue freed while a
 * key-exchange packet waits or while NEWKEYS is delivered, and a write error
 * while packets already read are still opening.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { OpenQueue, type PacketSource } from "../../lib/tunnel/open_queue.ts";
import { socketPair } from "../_helpers/socket_pair.ts";

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

Deno.test("socket holds: destroy() while the read loop waits on a hold that never settles still emits 'close'", async () => {
  const t = await socketPair();
  const seen: string[] = [];
  t.sock.on("close", () => seen.push("close"));
  t.sock.on("data", () => seen.push("data"));
  t.sock.resume();
  t.sock.holdReads(new Promise<void>(() => {}));
  t.sock.holdEnd(new Promise<void>(() => {}));
  await t.peer.write(new Uint8Array([1, 2, 3]));
  await tick(20);
  t.sock.destroy();
  await tick(20);
  assert.deepEqual(seen, ["close"]);
  t.close();
});

Deno.test("socket holds: EOF with an end hold that never settles: 'end' never comes (documented hang)", async () => {
  const t = await socketPair();
  const seen: string[] = [];
  t.sock.on("end", () => seen.push("end"));
  t.sock.on("close", () => seen.push("close"));
  t.sock.resume();
  t.sock.holdEnd(new Promise<void>(() => {}));
  t.peer.close();
  await tick(50);
  // Nothing: neither 'end' nor 'close' until someone destroys the socket.
  assert.deepEqual(seen, []);
  t.sock.destroy();
  await tick(10);
  assert.deepEqual(seen, ["close"]);
});

Deno.test("socket holds: a hold promise that rejects must not become an unhandled rejection", async () => {
  const t = await socketPair();
  const unhandled: unknown[] = [];
  const onUnhandled = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    unhandled.push(e.reason);
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  try {
    t.sock.resume();
    t.sock.holdEnd(Promise.reject(new Error("boom")));
    t.peer.close();
    await tick(50);
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    t.close();
  }
  assert.deepEqual(unhandled.map((e) => (e as Error).message), []);
});

/** A fake source recording what the queue asks of it. */
function fakeSource() {
  const log: string[] = [];
  const endHolds: Promise<void>[] = [];
  const src: PacketSource & { log: string[]; endHolds: Promise<void>[] } = {
    destroyed: false,
    log,
    endHolds,
    redeliver(b: Buffer) {
      log.push(`redeliver:${b.length}`);
    },
    holdReads(p: Promise<void>) {
      log.push("holdReads");
      p.then(() => log.push("readsReleased"));
    },
    holdEnd(p: Promise<void>) {
      endHolds.push(p);
      p.then(() => log.push("endReleased"));
    },
    destroy(err?: unknown) {
      log.push(`destroy:${(err as Error)?.message}`);
    },
  };
  return src;
}

async function sealed(key: Uint8Array, iv: Uint8Array, len: number, plain: Uint8Array) {
  const k = await crypto.subtle.importKey("raw", key as Uint8Array<ArrayBuffer>, "AES-GCM", false, [
    "encrypt",
  ]);
  const aad = new Uint8Array([len >>> 24, len >>> 16, len >>> 8, len]);
  return new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: iv as Uint8Array<ArrayBuffer>, additionalData: aad },
      k,
      plain as Uint8Array<ArrayBuffer>,
    ),
  );
}

Deno.test("socket holds: queue freed while a KEX packet waits behind an async open: end hold released, held bytes not redelivered", async () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const len = 8192;
  const plain = new Uint8Array(len);
  plain[0] = 4;
  plain[1] = 94; // padding 4, CHANNEL_DATA
  const ct = await sealed(key, iv, len, plain);
  const src = fakeSource();
  const delivered: number[] = [];
  const q = new OpenQueue(src, key, (p) => void delivered.push(p[0]));
  q.openAsync(ct, iv, len);
  const kex = Buffer.from([4, 20, 0, 0, 0, 0]); // KEXINIT, small, opened
  q.push(kex, undefined);
  assert.equal(q.stopped, true);
  q.hold(Buffer.alloc(100, 7), 0, 100);
  q.free(); // connection closed by ssh2
  await Promise.race([
    Promise.all(src.endHolds),
    tick(2000).then(() => {
      throw new Error("end hold never released");
    }),
  ]);
  assert.deepEqual(delivered, []);
  assert.ok(!src.log.some((l) => l.startsWith("redeliver")), src.log.join());
});

Deno.test("socket holds: free() during delivery of NEWKEYS still redelivers the held bytes (to the new decipher)", async () => {
  const key = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const len = 8192;
  const plain = new Uint8Array(len);
  plain[0] = 4;
  plain[1] = 94;
  const ct = await sealed(key, iv, len, plain);
  const src = fakeSource();
  const delivered: number[] = [];
  // deno-lint-ignore prefer-const
  let q: OpenQueue;
  q = new OpenQueue(src, key, (p) => {
    delivered.push(p[0]);
    if (p[0] === 21) q.free();
  });
  q.openAsync(ct, iv, len);
  q.push(Buffer.from([4, 21, 0, 0, 0, 0]), undefined);
  q.hold(Buffer.alloc(100, 7), 0, 100);
  await Promise.all(src.endHolds);
  assert.deepEqual(delivered, [94, 21]);
  assert.ok(src.log.includes("redeliver:100"), src.log.join());
});

Deno.test("socket holds: a write error destroys the socket while an end hold is pending (it waits: read data still opening reaches ssh2 first)", async () => {
  const t = await socketPair();
  const seen: string[] = [];
  t.sock.on("close", () => seen.push("close"));
  t.sock.on("error", () => seen.push("error"));
  t.sock.resume();
  let settled = false;
  t.sock.holdEnd(
    new Promise<void>((r) =>
      setTimeout(() => {
        settled = true;
        r();
      }, 1500)
    ),
  );
  t.peer.close();
  for (let i = 0; i < 200 && !seen.includes("close"); i++) {
    t.sock.write(new Uint8Array(1024));
    await tick(5);
  }
  // 'close' waits for the hold, as 'end' and read errors do.
  assert.equal(seen.includes("close") && !settled, false, `seen=${seen} settled=${settled}`);
  t.sock.destroy();
  await tick(1600);
});
