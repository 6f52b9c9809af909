import assert from "node:assert/strict";
import * as net from "node:net";
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import { type ForwardOutClient, startForward } from "../../lib/tunnel/forward.ts";
import { waitFor } from "../_helpers/sshd.ts";

/** A stand-in for an SSH connection: each channel is a plain TCP socket to `target`. */
function fakeConn(target: number, opts: { refuse?: () => boolean } = {}): ForwardOutClient & {
  opened: number;
} {
  const conn = {
    opened: 0,
    forwardOut(
      _srcIP: string,
      _srcPort: number,
      _dstIP: string,
      dstPort: number,
      cb: (err: Error | undefined, ch: ClientChannel) => void,
    ) {
      assert.equal(dstPort, target);
      if (opts.refuse?.()) {
        setTimeout(() => cb(new Error("Connection refused"), undefined as never), 0);
        return;
      }
      const sock = net.connect(target, "127.0.0.1", () => {
        conn.opened++;
        cb(undefined, Object.assign(sock, { close: () => sock.destroy() }) as never);
      });
    },
  };
  return conn;
}

/** A TCP echo server that remembers its open sockets. */
function echoServer(): Promise<{ port: number; server: net.Server; open: Set<net.Socket> }> {
  const open = new Set<net.Socket>();
  const server = net.createServer((s) => {
    open.add(s);
    s.on("close", () => open.delete(s));
    s.on("error", () => {});
    s.pipe(s);
  });
  return new Promise((r) =>
    server.listen(
      0,
      "127.0.0.1",
      () => r({ port: (server.address() as net.AddressInfo).port, server, open }),
    )
  );
}

function roundTrip(port: number, text: string): Promise<{ reply: string; sock: net.Socket }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, "127.0.0.1", () => sock.write(text));
    sock.on("error", reject);
    sock.once("data", (d) => resolve({ reply: d.toString(), sock }));
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((r) => server.close(() => r()));
}

Deno.test("startForward() pipes each local socket through its own channel", async () => {
  const echo = await echoServer();
  const conn = fakeConn(echo.port);
  const fwd = await startForward(conn, echo.port);
  try {
    const a = await roundTrip(fwd.port, "hello");
    const b = await roundTrip(fwd.port, "world");
    assert.deepEqual([a.reply, b.reply], ["hello", "world"]);
    assert.equal(conn.opened, 2);
    assert.equal(fwd.openSockets, 2);
    // Closing the local side closes the channel (the remote socket) too.
    a.sock.destroy();
    await waitFor("remote side closed", () => echo.open.size === 1);
    b.sock.destroy();
    await waitFor("all closed", () => fwd.openSockets === 0 && echo.open.size === 0);
  } finally {
    await fwd.close({ graceful: false });
    await closeServer(echo.server);
  }
});

Deno.test("startForward() closes only the socket whose channel failed to open", async () => {
  const echo = await echoServer();
  let refuse = true;
  const fwd = await startForward(fakeConn(echo.port, { refuse: () => refuse }), echo.port);
  try {
    const closed = await new Promise<boolean>((resolve) => {
      const s = net.connect(fwd.port, "127.0.0.1");
      s.on("error", () => {});
      s.on("close", () => resolve(true));
    });
    assert.ok(closed);
    refuse = false;
    const ok = await roundTrip(fwd.port, "still works");
    assert.equal(ok.reply, "still works");
    ok.sock.destroy();
  } finally {
    await fwd.close({ graceful: false });
    await closeServer(echo.server);
  }
});

Deno.test("Forward.close() graceful waits for busy sockets; immediate destroys them", async () => {
  const echo = await echoServer();
  const fwd = await startForward(fakeConn(echo.port), echo.port, { drainIdleMs: 60_000 });
  try {
    // The client spoke last: a request still waiting for its answer.
    const busy = await roundTrip(fwd.port, "x");
    busy.sock.write("waiting");
    await new Promise((r) => setTimeout(r, 20));
    let done = false;
    const closing = fwd.close({ graceful: true, timeoutMs: 5_000 }).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(done, false);
    // No new connections while draining.
    await assert.rejects(roundTrip(fwd.port, "new"));
    // Escalating to an immediate close cuts the wait short.
    await fwd.close({ graceful: false });
    await closing;
    assert.equal(fwd.openSockets, 0);
    busy.sock.destroy();
  } finally {
    await closeServer(echo.server);
  }
});

Deno.test("Forward.close() graceful closes idle keep-alive sockets after drainIdleMs", async () => {
  const echo = await echoServer();
  const fwd = await startForward(fakeConn(echo.port), echo.port, { drainIdleMs: 100 });
  try {
    const idle = await roundTrip(fwd.port, "response delivered");
    const started = Date.now();
    await fwd.close({ graceful: true, timeoutMs: 5_000 });
    assert.ok(Date.now() - started < 1_000);
    idle.sock.destroy();
  } finally {
    await closeServer(echo.server);
  }
});
