import assert from "node:assert/strict";
import { DenoSocket, socketError } from "../../lib/tunnel/deno_socket.ts";
import { concatBytes } from "../../lib/core/slab.ts";
import { sourceOf } from "../../lib/tunnel/open_queue.ts";
import { Buffer } from "node:buffer";
import { socketPair } from "../_helpers/socket_pair.ts";

async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error(`EOF after ${at} of ${n} bytes`);
    at += got;
  }
  return out;
}

function events(sock: DenoSocket): string[] {
  const seen: string[] = [];
  sock.on("end", () => seen.push("end"));
  sock.on("close", () => seen.push("close"));
  sock.on("error", (e: Error & { code?: string }) => seen.push(`error:${e.code ?? e.message}`));
  return seen;
}

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 3_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(5);
  }
}

Deno.test("DenoSocket: writes of one turn arrive in order, in one segment", async () => {
  const t = await socketPair();
  try {
    const parts = ["len.", "body-of-the-packet.", "mac!"];
    for (const p of parts) assert.equal(t.sock.write(new TextEncoder().encode(p)), true);
    const want = parts.join("");
    const buf = new Uint8Array(1024);
    // One write: the first read sees every byte of the turn (loopback
    // delivers a write whole; three writes would be three segments).
    const n = await t.peer.read(buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), want);
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: nothing is read before resume(), and nothing sent meanwhile is lost", async () => {
  const t = await socketPair();
  try {
    await t.peer.write(new TextEncoder().encode("SSH-2.0-banner\r\n"));
    await tick(20);
    const got: Uint8Array[] = [];
    t.sock.on("data", (b: Uint8Array) => got.push(b));
    await tick(20);
    assert.equal(got.length, 0, "paused until resumed, like a net.Socket ssh2 pauses");
    t.sock.resume();
    await until(() => got.length > 0, "data after resume");
    assert.equal(new TextDecoder().decode(got[0]), "SSH-2.0-banner\r\n");
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: each 'data' chunk is its own memory (ssh2 may keep slices)", async () => {
  const t = await socketPair();
  try {
    const got: Uint8Array[] = [];
    t.sock.on("data", (b: Uint8Array) => got.push(b));
    t.sock.resume();
    await t.peer.write(new Uint8Array([1, 2, 3]));
    await until(() => got.length === 1, "first chunk");
    await t.peer.write(new Uint8Array([9, 9, 9]));
    await until(() => got.length === 2, "second chunk");
    assert.deepEqual([...got[0]], [1, 2, 3]);
    assert.deepEqual([...got[1]], [9, 9, 9]);
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: chunks kept across many reads, past the read buffer's end, stay intact", async () => {
  const t = await socketPair();
  try {
    const got: Uint8Array[] = [];
    let total = 0;
    t.sock.on("data", (b: Uint8Array) => {
      got.push(b);
      total += b.byteLength;
    });
    t.sock.resume();
    const sent: number[] = [];
    // Sizes that leave every kind of remainder in a 64 KiB buffer.
    for (let i = 0; i < 60; i++) {
      const size = [1, 700, 9_000, 15_000, 20_000][i % 5];
      const chunk = Uint8Array.from({ length: size }, (_, j) => (i * 31 + j) & 0xff);
      sent.push(...chunk);
      await t.peer.write(chunk);
      await until(() => total === sent.length, `chunk ${i}`);
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const b of got) {
      all.set(b, at);
      at += b.byteLength;
    }
    assert.deepEqual([...all], sent);
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: end() sends what was queued, then EOF; the peer's EOF closes it once", async () => {
  const t = await socketPair();
  try {
    const seen = events(t.sock);
    t.sock.resume();
    t.sock.write(new TextEncoder().encode("bye"));
    t.sock.end();
    assert.equal(t.sock.writable, false);
    assert.equal(t.sock.write(new Uint8Array([1])), false, "no writes after end()");
    assert.equal(new TextDecoder().decode(await readN(t.peer, 3)), "bye");
    assert.equal(await t.peer.read(new Uint8Array(8)), null, "EOF after the queued bytes");
    assert.equal(t.sock._readableState.ended, false, "still readable: half-closed");
    t.peer.close();
    await until(() => seen.includes("close"), "close");
    assert.deepEqual(seen, ["end", "close"]);
    assert.equal(t.sock._readableState.ended, true);
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: the peer's EOF ends and closes it (no half-open socket left behind)", async () => {
  const t = await socketPair();
  try {
    const seen = events(t.sock);
    t.sock.resume();
    await t.peer.closeWrite();
    await until(() => seen.includes("close"), "close");
    assert.deepEqual(seen, ["end", "close"]);
    assert.equal(await t.peer.read(new Uint8Array(8)), null, "our side was closed too");
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: destroy() closes at once and emits 'close' exactly once", async () => {
  const t = await socketPair();
  try {
    const seen = events(t.sock);
    t.sock.resume();
    t.sock.write(new Uint8Array([1, 2]));
    t.sock.destroy();
    t.sock.destroy();
    assert.equal(t.sock.write(new Uint8Array([3])), false);
    await tick(30);
    assert.deepEqual(seen, ["close"]);
    // Queued bytes were dropped with the socket, as net.Socket.destroy() does.
    assert.equal(await t.peer.read(new Uint8Array(8)), null);
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: a reset by the peer ends and closes it once (Deno reads a reset as EOF)", async () => {
  const t = await socketPair();
  try {
    const seen = events(t.sock);
    t.sock.resume();
    // Closing with unread data makes Linux send RST instead of FIN.
    t.sock.write(new Uint8Array(4096));
    await tick(20);
    t.peer.close();
    await until(() => seen.includes("close"), "close");
    assert.deepEqual(seen, ["end", "close"]);
    assert.equal(t.sock.write(new Uint8Array(1)), false, "nothing is written after close");
  } finally {
    t.close();
  }
});

Deno.test("socketError() gives Deno's network errors the codes ssh2 and our classifier expect", () => {
  assert.equal(socketError(new Deno.errors.ConnectionRefused("x")).code, "ECONNREFUSED");
  assert.equal(socketError(new Deno.errors.ConnectionReset("x")).code, "ECONNRESET");
  assert.equal(socketError(new Deno.errors.BrokenPipe("x")).code, "EPIPE");
  assert.equal(socketError(new Deno.errors.TimedOut("x")).code, "ETIMEDOUT");
  const plain = socketError("odd");
  assert.equal(plain.message, "odd");
  assert.equal(plain.code, undefined);
});

Deno.test("DenoSocket: connecting to a closed port is refused with ECONNREFUSED", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  const err = await Deno.connect({ hostname: "127.0.0.1", port }).then(
    () => null,
    (e) => socketError(e),
  );
  assert.ok(err);
  assert.equal(err.code, "ECONNREFUSED");
});

Deno.test("DenoSocket: a 'data' listener that throws ends the connection, not the process", async () => {
  const t = await socketPair();
  try {
    const seen = events(t.sock);
    t.sock.on("data", () => {
      throw new Error("parser blew up");
    });
    t.sock.resume();
    await t.peer.write(new Uint8Array([1]));
    await until(() => seen.includes("close"), "close");
    assert.deepEqual(seen, ["error:parser blew up", "close"]);
    assert.equal(await t.peer.read(new Uint8Array(8)), null, "the peer sees the close");
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: destroy(err) without an 'error' listener does not throw", async () => {
  const t = await socketPair();
  try {
    let closed = false;
    t.sock.on("close", () => (closed = true));
    t.sock.destroy(new Error("nobody listens"));
    await until(() => closed, "close");
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: writes across turns, during slow in-flight writes and around end() arrive whole and in order", async () => {
  const { sock, peer, close } = await socketPair();
  try {
    // Deterministic pseudo-random sizes and turn boundaries.
    let seed = 12345;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reading = (async () => {
      const parts: Uint8Array[] = [];
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        // A slow reader now and then: the socket's buffers fill, writes stay in flight.
        if (rand(50) === 0) await tick(2);
        const n = await peer.read(buf);
        if (n === null) break;
        parts.push(buf.slice(0, n));
      }
      return concatBytes(parts);
    })();
    for (let i = 0; i < 600; i++) {
      const size = rand(10) === 0 ? 200_000 + rand(300_000) : 1 + rand(2000);
      const c = new Uint8Array(size);
      for (let j = 0; j < size; j += 97) c[j] = (i + j) & 255;
      c[0] = i & 255;
      chunks.push(c);
      total += size;
      assert.equal(sock.write(c), true);
      const r = rand(4);
      if (r === 0) await Promise.resolve();
      else if (r === 1) await tick(0);
    }
    sock.end();
    // Writes after end() are refused, never sent.
    assert.equal(sock.write(new Uint8Array([1, 2, 3])), false);
    const got = await reading;
    assert.equal(got.length, total);
    let at = 0;
    for (const c of chunks) {
      assert.ok(got.subarray(at, at + c.length).every((b, k) => b === c[k]), `chunk at ${at}`);
      at += c.length;
    }
  } finally {
    close();
  }
});

Deno.test("DenoSocket: says it is the source of what it emits; holdReads() stops reads until released; redeliver() emits in place", async () => {
  const t = await socketPair();
  try {
    const got: string[] = [];
    const sources: unknown[] = [];
    let release!: () => void;
    t.sock.on("data", (b: Uint8Array) => {
      sources.push(sourceOf(b));
      const s = new TextDecoder().decode(b);
      got.push(s);
      if (s === "first") t.sock.holdReads(new Promise<void>((r) => (release = r)));
    });
    t.sock.resume();
    await t.peer.write(new TextEncoder().encode("first"));
    await until(() => got.length === 1, "first chunk");
    await t.peer.write(new TextEncoder().encode("second"));
    await tick(30);
    assert.deepEqual(got, ["first"], "no read while held");
    t.sock.redeliver(Buffer.from("again"));
    assert.deepEqual(got, ["first", "again"], "redelivered at once");
    release();
    await until(() => got.length === 3, "second chunk after release");
    assert.deepEqual(got, ["first", "again", "second"]);
    assert.ok(sources.every((s) => s === t.sock), "every emit names the socket");
    assert.equal(sourceOf(Buffer.from("first")), null, "outside an emit there is no source");
  } finally {
    t.close();
  }
});

Deno.test("DenoSocket: holdEnd() defers 'end' (and the close after it) until released", async () => {
  const t = await socketPair();
  try {
    const seen = events(t.sock);
    let release!: () => void;
    t.sock.holdEnd(new Promise<void>((r) => (release = r)));
    t.sock.on("data", () => {});
    t.sock.resume();
    t.peer.close();
    await tick(30);
    assert.equal(seen.length, 0, "'end' waits for the hold");
    release();
    await until(() => seen.includes("close"), "close after release");
    assert.deepEqual(seen, ["end", "close"]);
  } finally {
    t.close();
  }
});
