/**
 * Helpers for tests of byte relays (the bench's floor paths): read exactly,
 * to the end or just count to the end, check that bytes pass unchanged on
 * concurrent connections, and check that a process exits by itself.
 */
import assert from "node:assert/strict";
import { concatBytes } from "../../lib/core/slab.ts";

/** The next `n` bytes of `conn`; throws if it ends first. */
export async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error(`connection ended after ${at} of ${n} bytes`);
    at += got;
  }
  return out;
}

/** Everything `conn` sends until it ends. */
export async function readToEnd(conn: Deno.Conn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
  }
  return concatBytes(parts);
}

/** How many bytes `conn` sends until it ends (a test server that only counts). */
export async function countToEnd(conn: Deno.Conn): Promise<number> {
  const buf = new Uint8Array(65536);
  let total = 0;
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return total;
    total += n;
  }
}

/**
 * Opens one connection per size to `port` (an echo behind a relay), all at
 * once, and checks each gets back exactly the distinct bytes it sent: a
 * relay that mixes up, reorders or truncates streams fails.
 */
export async function assertEchoedConcurrently(port: number, sizes: number[]): Promise<void> {
  await Promise.all(sizes.map(async (size, k) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      const sent = new Uint8Array(size).map((_, i) => (i * 31 + k * 7) & 0xff);
      const [, back] = await Promise.all([
        (async () => {
          for (let at = 0; at < size;) at += await conn.write(sent.subarray(at));
        })(),
        readExactly(conn, size),
      ]);
      assert.deepEqual(back, sent);
    } finally {
      conn.close();
    }
  }));
}

/** `child`'s exit status once it exits, or null if it is still running after `ms`. */
function exitWithin(
  child: Deno.ChildProcess,
  ms: number,
): Promise<Deno.CommandStatus | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    child.status,
    new Promise<null>((r) => timer = setTimeout(() => r(null), ms)),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Asserts that `child` exits within `ms` (else fails with `why`) and with
 * `code`; `detail` (e.g. its stderr) is added to a wrong-code failure.
 */
export async function assertExits(
  child: Deno.ChildProcess,
  code: number,
  ms: number,
  why: string,
  detail?: () => Promise<string>,
): Promise<void> {
  const status = await exitWithin(child, ms);
  assert.notEqual(status, null, why);
  if (status!.code !== code) {
    assert.fail(
      `exit code ${status!.code}, expected ${code}${detail ? `: ${await detail()}` : ""}`,
    );
  }
}
