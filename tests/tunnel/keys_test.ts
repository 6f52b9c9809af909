import assert from "node:assert/strict";
import { MemoryLogger } from "../../lib/core/logger.ts";
import {
  authMethods,
  defaultKeyFiles,
  describeSources,
  loadAuthSources,
} from "../../lib/tunnel/keys.ts";
import { generateKey } from "../_helpers/sshd.ts";

const PASSPHRASE = "correct horse battery";

Deno.test("loadAuthSources() orders agent, explicit keys, then existing default files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await generateKey(`${dir}/explicit`);
    await generateKey(`${dir}/id_ed25519`);
    const logger = new MemoryLogger();
    const sources = loadAuthSources({
      agentSocket: "/tmp/agent.sock",
      sshKeys: [`${dir}/explicit`],
      defaultKeys: [`${dir}/id_ed25519`, `${dir}/id_ecdsa`, `${dir}/explicit`],
      logger,
    });
    assert.equal(
      describeSources(sources),
      `agent, ${dir}/explicit, ${dir}/id_ed25519`,
    );
    // Missing default files are silently optional.
    assert.equal(logger.records.length, 0);
    const methods = authMethods(sources, "root");
    assert.deepEqual(methods.map((m) => m.type), ["agent", "publickey", "publickey"]);
    assert.ok(methods.every((m) => m.username === "root"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadAuthSources() skips an encrypted key without passphrase, naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await generateKey(`${dir}/locked`, PASSPHRASE);
    const logger = new MemoryLogger();
    const sources = loadAuthSources({ sshKeys: [`${dir}/locked`], logger });
    assert.equal(sources.length, 0);
    assert.match(logger.text(), /encrypted and VASTPROXY_SSH_PASSPHRASE is not set/);
    assert.ok(logger.text().includes(`file=${dir}/locked`));
    assert.match(logger.text(), /no SSH agent or key available/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadAuthSources() decrypts with the passphrase and never logs it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await generateKey(`${dir}/locked`, PASSPHRASE);
    const logger = new MemoryLogger();
    const ok = loadAuthSources({ sshKeys: [`${dir}/locked`], passphrase: PASSPHRASE, logger });
    assert.equal(ok.length, 1);
    assert.equal(ok[0].kind === "key" && ok[0].key.isPrivateKey(), true);

    const wrong = loadAuthSources({ sshKeys: [`${dir}/locked`], passphrase: "nope nope", logger });
    assert.equal(wrong.length, 0);
    assert.match(logger.text(), /could not be decrypted with VASTPROXY_SSH_PASSPHRASE/);
    assert.ok(!logger.text().includes(PASSPHRASE) && !logger.text().includes("nope nope"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadAuthSources() reports a missing explicit key as an error", () => {
  const logger = new MemoryLogger();
  assert.deepEqual(loadAuthSources({ sshKeys: ["/nonexistent/key"], logger }), []);
  assert.equal(logger.records[0].level, "error");
  assert.equal(logger.records[0].fields.file, "/nonexistent/key");
});

Deno.test("defaultKeyFiles() lists OpenSSH's defaults in order", () => {
  assert.deepEqual(defaultKeyFiles("/home/u"), [
    "/home/u/.ssh/id_ed25519",
    "/home/u/.ssh/id_ecdsa",
    "/home/u/.ssh/id_rsa",
  ]);
  assert.deepEqual(defaultKeyFiles(undefined), []);
});
