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
    assert.deepEqual(names, ["k", "k.pub", "known_hosts"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseKnownHosts() skips comments, blanks and malformed lines", () => {
  const pins = parseKnownHosts("# c\n\n7 ssh-ed25519 AAAA\nbad line\nx ssh-rsa AAAA\n8 ssh-rsa\n");
  assert.deepEqual(pins, [{ instanceId: 7, keyType: "ssh-ed25519", keyBase64: "AAAA" }]);
});
