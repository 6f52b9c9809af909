/**
 * The asynchronous opens (lib/tunnel/open_queue.ts) end to end: a real ssh2
 * Client over DenoSocket (packet cipher installed, as connect.ts does)
 * against an in-process ssh2 Server that writes 300 KB on an exec channel,
 * then exit 0, EOF, and ends the connection (DISCONNECT, FIN) at once.
 * ssh2's own decipher hands the client every byte and the exit status; the
 * asynchronous opens must too (a hostile review found 'end' freeing the
 * decipher while packets were still opening).
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { installPacketCipher, uninstallPacketCipher } from "../../lib/tunnel/packet_cipher.ts";
import { ssh2Pair } from "../_helpers/ssh2_server.ts";

async function once(total: number): Promise<{ got: number; exit: unknown }> {
  const pair = await ssh2Pair((st, conn) => {
    st.write(Buffer.alloc(total, 0x61));
    st.exit(0);
    st.end();
    conn.end();
  });
  try {
    const closed = new Promise<void>((r) => pair.client.on("close", r));
    const ch = await pair.exec();
    let got = 0;
    let exit: unknown = "none";
    ch.on("data", (b: Buffer) => (got += b.length));
    ch.on("exit", (code: unknown) => (exit = code));
    await closed;
    return { got, exit };
  } finally {
    pair.close();
  }
}

for (const own of [false, true]) {
  Deno.test(`ssh2 end to end: data, exit, DISCONNECT and FIN all reach the client (${own ? "own cipher" : "ssh2's"})`, async () => {
    if (own) installPacketCipher();
    else uninstallPacketCipher();
    try {
      for (let i = 0; i < 5; i++) assert.deepEqual(await once(300_000), { got: 300_000, exit: 0 });
    } finally {
      installPacketCipher();
    }
  });
}
