/**
 * The cipher/MAC order in SSH_ALGORITHMS against a real OpenSSH: the default
 * negotiates aes128-gcm, and every fallback entry, offered alone,
 * negotiates and carries data intact in both directions across a rekey.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { Client, NegotiatedAlgorithms } from "ssh2";
import { endClient, SSH_ALGORITHMS, type SshAlgorithms } from "../../lib/tunnel/connect.ts";
import {
  connectTestSshd,
  forwardTo,
  roundTrip,
  type Sshd,
  sshdAvailable,
  startSshd,
} from "../_helpers/sshd.ts";
import { echoServer } from "../_helpers/echo_server.ts";

const ignore = !sshdAvailable();

const connect = connectTestSshd;

/** Rekeys and resolves with what the new key exchange negotiated. */
function rekey(client: Client): Promise<NegotiatedAlgorithms> {
  return new Promise((resolve) => {
    client.once("handshake", resolve);
    (client as unknown as { _protocol: { rekey(): void } })._protocol.rekey();
  });
}

async function exercise(sshd: Sshd, port: number, algorithms?: SshAlgorithms) {
  const conn = await connect(sshd, algorithms);
  try {
    const ch = await forwardTo(conn.client, port);
    const data = randomBytes(300_000);
    await roundTrip(ch, data);
    const negotiated = await rekey(conn.client);
    await roundTrip(ch, data.subarray(0, 100_000));
    // And once more while a rekey is in flight.
    const again = rekey(conn.client);
    await roundTrip(ch, data.subarray(100_000));
    await again;
    ch.close();
    return negotiated;
  } finally {
    endClient(conn.client);
  }
}

Deno.test({
  name: "the default order negotiates aes128-gcm (not Terrapin-exposed chacha20) with OpenSSH",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const echo = echoServer();
    try {
      const n = await exercise(sshd, echo.port);
      assert.equal(n.cs.cipher, "aes128-gcm@openssh.com");
      assert.equal(n.sc.cipher, "aes128-gcm@openssh.com");
    } finally {
      await echo.close();
      await sshd.stop();
    }
  },
});

Deno.test({
  name: "every cipher and MAC in the fallback list works against OpenSSH across rekeys",
  ignore,
  async fn() {
    const sshd = await startSshd();
    const echo = echoServer();
    const ciphers = SSH_ALGORITHMS.cipher as string[];
    const macs = SSH_ALGORITHMS.hmac as string[];
    const cases: SshAlgorithms[] = [
      ...ciphers.map((c) => ({ cipher: [c], hmac: [macs[0]] }) as SshAlgorithms),
      ...macs.slice(1).map((m) => ({ cipher: ["aes128-ctr"], hmac: [m] }) as SshAlgorithms),
    ];
    try {
      for (const algorithms of cases) {
        const n = await exercise(sshd, echo.port, algorithms);
        const cipher = (algorithms.cipher as string[])[0];
        assert.equal(n.cs.cipher, cipher);
        assert.equal(n.sc.cipher, cipher);
        if (!/gcm|chacha/.test(cipher)) assert.equal(n.cs.mac, (algorithms.hmac as string[])[0]);
      }
    } finally {
      await echo.close();
      await sshd.stop();
    }
  },
});
