import assert from "node:assert/strict";
import {
  fingerprint,
  keyTypeOf,
  KnownHosts,
  parseKnownHosts,
} from "../../lib/tunnel/known_hosts.ts";
import { generateKey } from "../_helpers/sshd.ts";

async function publicKey(dir: string, name: string): Promise<{ blob: Uint8Array; line: string }> {
  await generateKey(`${dir}/${name}`);
  const line = (await Deno.readTextFile(`${dir}/${name}.pub`)).trim();
  return { line, blob: Uint8Array.from(atob(line.split(" ")[1]), (c) => c.charCodeAt(0)) };
}

Deno.test("fingerprint() matches ssh-keygen -l", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = await publicKey(dir, "k");
    const out = await new Deno.Command("ssh-keygen", { args: ["-lf", `${dir}/k.pub`] }).output();
    const expected = new TextDecoder().decode(out.stdout).split(" ")[1];
    assert.equal(fingerprint(key.blob), expected);
    assert.equal(keyTypeOf(key.blob), "ssh-ed25519");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KnownHosts.check() pins on first use, matches, then reports a mismatch", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const a = await publicKey(dir, "a");
    const b = await publicKey(dir, "b");
    const path = `${dir}/nested/state/known_hosts`;
    const kh = new KnownHosts(path);
    assert.deepEqual(await kh.check(42, a.blob), {
      status: "pinned",
      fingerprint: fingerprint(a.blob),
    });
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual(await kh.check(42, a.blob), {
      status: "match",
      fingerprint: fingerprint(a.blob),
    });
    assert.deepEqual(await kh.check(42, b.blob), {
      status: "mismatch",
      expectedFingerprint: fingerprint(a.blob),
      actualFingerprint: fingerprint(b.blob),
    });
    // Per instance id: another instance at any address gets its own pin.
    assert.equal((await kh.check(43, b.blob)).status, "pinned");
    assert.equal((await kh.lookup(43))?.fingerprint, fingerprint(b.blob));
    assert.equal(await kh.lookup(44), undefined);
    const text = await Deno.readTextFile(path);
    assert.match(text, /^# vastproxy known hosts/);
    // `<instanceId> <keytype> <base64>`: the .pub line minus its comment.
    assert.ok(text.includes(`\n42 ${a.line.split(" ").slice(0, 2).join(" ")}\n`));
    // Deleting the line accepts a new key next time.
    await Deno.writeTextFile(path, text.split("\n").filter((l) => !l.startsWith("42 ")).join("\n"));
    assert.equal((await kh.check(42, b.blob)).status, "pinned");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KnownHosts.check() keeps every line when many instances pin at once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const key = await publicKey(dir, "k");
    const kh = new KnownHosts(`${dir}/known_hosts`);
    const ids = Array.from({ length: 30 }, (_, i) => 1000 + i);
    await Promise.all(ids.map((id) => kh.check(id, key.blob)));
    const pins = parseKnownHosts(await Deno.readTextFile(`${dir}/known_hosts`));
    assert.deepEqual(pins.map((p) => p.instanceId).sort(), ids);
    // Atomic writes leave no temp files behind.
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["k", "k.pub", "known_hosts", "known_hosts.lock"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseKnownHosts() skips comments, blanks and malformed lines", () => {
  const pins = parseKnownHosts("# c\n\n7 ssh-ed25519 AAAA\nbad line\nx ssh-rsa AAAA\n8 ssh-rsa\n");
  assert.deepEqual(pins, [{ instanceId: 7, keyType: "ssh-ed25519", keyBase64: "AAAA" }]);
});

/** Starts a writer process (tests/_helpers/known_hosts_writer.ts) that waits for "go". */
async function startWriter(path: string, keyFile: string, first: number, count: number) {
  const dir = path.slice(0, path.lastIndexOf("/"));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      new URL("../_helpers/known_hosts_writer.ts", import.meta.url).pathname,
      path,
      keyFile,
      String(first),
      String(count),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  while (!buffered.includes("ready\n")) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`writer exited early: ${await new Response(child.stderr).text()}`);
    buffered += value;
  }
  return {
    go: async () => {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode("go\n"));
      await w.close();
    },
    /** Each id's status (`pinned`, `match`, `mismatch`) once the process exits. */
    result: async (): Promise<Record<string, string>> => {
      let rest = buffered.slice(buffered.indexOf("ready\n") + 6);
      for (;;) {
        const { value, done } = await lines.read();
        if (done) break;
        rest += value;
      }
      const [status, stderr] = await Promise.all([
        child.status,
        new Response(child.stderr).text(),
      ]);
      assert.ok(status.success, stderr);
      return JSON.parse(rest);
    },
  };
}

Deno.test("KnownHosts.check() from two processes at once keeps all 60 pins", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await publicKey(dir, "k");
    const path = `${dir}/known_hosts`;
    const a = await startWriter(path, `${dir}/k.pub`, 1000, 30);
    const b = await startWriter(path, `${dir}/k.pub`, 2000, 30);
    await Promise.all([a.go(), b.go()]);
    const [ra, rb] = await Promise.all([a.result(), b.result()]);
    assert.ok(Object.values({ ...ra, ...rb }).every((s) => s === "pinned"));
    const ids = parseKnownHosts(await Deno.readTextFile(path)).map((p) => p.instanceId);
    const want = [...Array.from({ length: 30 }, (_, i) => 1000 + i)].concat(
      Array.from({ length: 30 }, (_, i) => 2000 + i),
    );
    assert.deepEqual(ids.sort(), want);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    // Only the file and its lock file remain: no temp files left behind.
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["k", "k.pub", "known_hosts", "known_hosts.lock"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KnownHosts.check() racing another process for the same ids pins each id once", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ka = await publicKey(dir, "a");
    const kb = await publicKey(dir, "b");
    const path = `${dir}/known_hosts`;
    // Two proxies meet the same 30 instances, each offered a different key:
    // for every id exactly one key may win, and the other proxy must see a
    // mismatch, never a second "pinned".
    const a = await startWriter(path, `${dir}/a.pub`, 1, 30);
    const b = await startWriter(path, `${dir}/b.pub`, 1, 30);
    await Promise.all([a.go(), b.go()]);
    const [ra, rb] = await Promise.all([a.result(), b.result()]);
    const pins = parseKnownHosts(await Deno.readTextFile(path));
    assert.equal(pins.length, 30);
    for (const pin of pins) {
      const id = String(pin.instanceId);
      const winner = pin.keyBase64 === ka.line.split(" ")[1] ? "a" : "b";
      assert.deepEqual(
        [ra[id], rb[id]],
        winner === "a" ? ["pinned", "mismatch"] : ["mismatch", "pinned"],
        `instance ${id}`,
      );
    }
    assert.ok(kb.blob.length > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("KnownHosts.check() enforces a pin another process wrote after it started", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await publicKey(dir, "a");
    const b = await publicKey(dir, "b");
    const path = `${dir}/known_hosts`;
    // Created (and used) before the other process pins instance 7.
    const kh = new KnownHosts(path);
    assert.equal((await kh.check(8, b.blob)).status, "pinned");
    const other = await startWriter(path, `${dir}/a.pub`, 7, 1);
    await other.go();
    assert.deepEqual(await other.result(), { "7": "pinned" });
    const verdict = await kh.check(7, b.blob);
    assert.equal(verdict.status, "mismatch");
    // The other process's pin survives, and our earlier one too.
    const pins = parseKnownHosts(await Deno.readTextFile(path));
    assert.deepEqual(pins.map((p) => p.instanceId).sort(), [7, 8]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
