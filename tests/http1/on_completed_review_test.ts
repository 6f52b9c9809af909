/**
 * Hostile review of `info.onCompleted` (5f024c4): listeners that reenter the
 * server, listeners added from a listener, the server closing while a
 * listener waits on a write, a handler failing after it asked, upgrades.
 *
 * `whenDone` uses `onCompleted` when the server has it, else `completed`,
 * so the same file runs against the parent commit for comparison.
 */
import assert from "node:assert/strict";
import { responseWithPairs } from "../../lib/http1/raw.ts";
import { serveHttp1 } from "../../lib/http1/server.ts";
import { upgradeResponse } from "../../lib/http1/upgrade.ts";
import { RawClient } from "../_helpers/raw_http.ts";

type Info = Deno.ServeHandlerInfo & {
  onCompleted?: (fn: (delivered: boolean) => void) => void;
};

function whenDone(info: Info, fn: (delivered: boolean) => void): void {
  if (typeof info.onCompleted === "function") info.onCompleted(fn);
  else info.completed.then(() => fn(true), () => fn(false));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition still false");
    await sleep(5);
  }
}

Deno.test("review: a listener that closes the whole server mid-#serveOne (pipelined request buffered) ends cleanly", async () => {
  const told: string[] = [];
  const errors: unknown[] = [];
  let served = 0;
  // deno-lint-ignore prefer-const
  let server: ReturnType<typeof serveHttp1>;
  server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    onError: (err) => {
      errors.push(err);
      return new Response(null, { status: 500 });
    },
  }, (_req, info) => {
    served++;
    whenDone(info as Info, (ok) => {
      told.push(`done ${ok}`);
      // Reentrancy: the listener closes every connection, its own included.
      void server.closeAll();
    });
    return Promise.resolve(responseWithPairs(new TextEncoder().encode("END"), { status: 200 }, []));
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.untilClosed(3000);
    assert.ok(c.received.startsWith("HTTP/1.1 200"), c.received);
    await server.finished;
    await sleep(10);
    assert.deepEqual(told.slice(0, 1), ["done true"]);
    // Each served request told exactly once.
    assert.equal(told.length, served);
    assert.deepEqual(errors, []);
  } finally {
    c.close();
    await server.closeAll();
  }
});

Deno.test("review: a listener added from inside a listener is called once, later, with the same answer", async () => {
  const told: string[] = [];
  let inListener = false;
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (_req, info) => {
    whenDone(info as Info, (ok) => {
      told.push(`outer ${ok}`);
      inListener = true;
      whenDone(info as Info, (ok2) => told.push(`inner ${ok2} ${inListener ? "nested" : "later"}`));
      inListener = false;
    });
    return Promise.resolve(new Response("END"));
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.endsWith("END"));
    await until(() => told.length >= 2);
    await sleep(10);
    assert.deepEqual(told, ["outer true", "inner true later"]);
  } finally {
    c.close();
    await server.closeAll();
  }
});

Deno.test("review: closeAll while a big bytes body is stuck in the write tells the listener false (not never)", async () => {
  const told: boolean[] = [];
  let asked = false;
  const big = new Uint8Array(32 * 1024 * 1024).fill(0x61);
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (_req, info) => {
    whenDone(info as Info, (ok) => told.push(ok));
    asked = true;
    return Promise.resolve(responseWithPairs(big, { status: 200 }, []));
  });
  // The client sends and never reads: the write blocks on a full socket buffer.
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await until(() => asked);
    await sleep(100);
    assert.deepEqual(told, [], "nothing told while the write is pending");
    await server.closeAll();
    await until(() => told.length === 1, 2000);
    assert.deepEqual(told, [false]);
  } finally {
    c.close();
    await server.closeAll();
  }
});

Deno.test("review: a handler failing after it asked: the fallback answer is written and the listener hears true", async () => {
  const told: boolean[] = [];
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (_req, info) => {
    whenDone(info as Info, (ok) => told.push(ok));
    return Promise.reject(new Error("handler bug after asking"));
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.includes("Internal Server Error"));
    assert.ok(c.received.startsWith("HTTP/1.1 500"));
    await until(() => told.length === 1);
    // Documented: "written whole" means the fallback, not the handler's answer.
    assert.deepEqual(told, [true]);
  } finally {
    c.close();
    await server.closeAll();
  }
});

Deno.test("review: a logger that throws while reporting a listener's throw costs nothing", async () => {
  let mode: "throw" | "reject" = "throw";
  const unhandled: unknown[] = [];
  const onUnhandled = (e: PromiseRejectionEvent) => {
    unhandled.push(e.reason);
    e.preventDefault();
  };
  globalThis.addEventListener("unhandledrejection", onUnhandled);
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    logger: {
      log: () => {
        if (mode === "throw") throw new Error("logger down");
        void Promise.reject(new Error("logger rejects"));
      },
    },
  }, (_req, info) => {
    whenDone(info as Info, () => {
      throw undefined; // not even an Error
    });
    return Promise.resolve(new Response("END"));
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.endsWith("END"));
    mode = "reject";
    c.received = "";
    await c.send("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.endsWith("END"));
    await sleep(20);
    // On the parent commit a throwing `.then` callback is an unhandled
    // rejection; here only the logger's own stray rejection is one.
    assert.deepEqual(unhandled.map((e) => (e as Error).message), ["logger rejects"]);
  } finally {
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
    c.close();
    await server.closeAll();
  }
});

Deno.test("review: an upgraded (101) exchange never tells its listeners, even after the server closed", async () => {
  const told: boolean[] = [];
  let upgraded: Deno.Conn | null = null;
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (_req, info) => {
    whenDone(info as Info, (ok) => told.push(ok));
    return Promise.resolve(upgradeResponse({
      statusText: "Switching Protocols",
      headers: [["upgrade", "websocket"], ["connection", "upgrade"]],
      onUpgrade: (client) => {
        upgraded = client.conn;
        client.initial.catch(() => {});
      },
      onAbandon: () => {},
    }));
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send(
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    await c.until((s) => s.includes("\r\n\r\n"));
    assert.ok(c.received.startsWith("HTTP/1.1 101"));
    (upgraded as Deno.Conn | null)?.close();
    await server.closeAll();
    await sleep(20);
    // Same as `completed` on the parent commit (it never settles either).
    assert.deepEqual(told, []);
  } finally {
    c.close();
    await server.closeAll();
  }
});

Deno.test("review: the very connection whose listener threw serves the next pipelined request", async () => {
  const errors: string[] = [];
  let n = 0;
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    onError: () => {
      throw new Error("a listener's throw is not a handler failure");
    },
    logger: {
      log: (level, msg, fields) => {
        if (level === "error" && msg === "a response-completion listener failed") {
          errors.push(String(fields?.error));
        }
      },
    },
  }, (_req, info) => {
    const k = ++n;
    whenDone(info as Info, () => {
      throw new Error(`listener bug ${k}`);
    });
    return Promise.resolve(new Response(`END${k}`));
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.includes("END2"));
    c.received = "";
    await c.send("GET /3 HTTP/1.1\r\nHost: h\r\n\r\n");
    await c.until((s) => s.includes("END3"));
    assert.equal(c.closed, false);
    await until(() => errors.length === 3);
    assert.deepEqual(errors, ["listener bug 1", "listener bug 2", "listener bug 3"]);
  } finally {
    c.close();
    await server.closeAll();
  }
});
