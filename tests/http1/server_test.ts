/**
 * serveHttp1(): request framing, response framing, streaming and
 * cancellation over real loopback sockets, byte for byte.
 */
import assert from "node:assert/strict";
import { type Http1Server, serveHttp1, type ServerHandler } from "../../lib/http1/server.ts";
import { requestTarget } from "../../lib/proxy/relay.ts";
import { countResponses, RawClient } from "../_helpers/raw_http.ts";

/** Runs `fn` against a server on a free port, then shuts it down. */
async function withServer(
  handler: ServerHandler,
  fn: (port: number, server: Http1Server) => Promise<void>,
  opts: { headerTimeoutMs?: number; idleTimeoutMs?: number } = {},
): Promise<void> {
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0, ...opts }, handler);
  try {
    await fn(server.addr.port, server);
  } finally {
    await server.closeAll();
  }
}

/** Echoes method, raw url and body length. */
const echo: ServerHandler = async (req) => {
  const body = req.body ? new Uint8Array(await req.arrayBuffer()) : new Uint8Array(0);
  return new Response(`${req.method} ${req.url} ${body.length} ${new TextDecoder().decode(body)}`);
};

Deno.test("serveHttp1() keeps a connection alive and frames small bodies by content-length", async () => {
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
      await c.until((s) => s.endsWith("GET http://x/a 0 "));
      assert.match(c.received, /^HTTP\/1\.1 200 OK\r\n/);
      assert.ok(c.received.includes("content-length: 17\r\n"), c.received);
      assert(!c.received.includes("transfer-encoding"));
      assert.ok(c.received.includes("\r\ndate: "), c.received);
      c.received = "";
      await c.send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
      await c.until((s) => s.endsWith("hello"));
      assert.ok(c.received.includes("POST http://x/b 5 hello"), c.received);
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() decodes a chunked request body and keeps the connection", async () => {
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(
        "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n" +
          "GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
      );
      await c.until((s) => countResponses(s) === 2 && s.endsWith("GET http://x/after 0 "));
      assert.ok(c.received.includes("POST http://x/c 7 abcdefg"), c.received);
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() refuses smuggling shapes with 400 and closes", async () => {
  const cases = [
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc",
    "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
    "GET / HTTP/1.1\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: evil/path?\r\n\r\n",
    "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
  ];
  let calls = 0;
  await withServer(() => {
    calls++;
    return new Response("no");
  }, async (port) => {
    for (const raw of cases) {
      const c = await RawClient.open(port);
      try {
        await c.send(raw);
        const got = await c.untilClosed();
        assert.match(got, /^HTTP\/1\.1 400 /, raw);
        assert.ok(got.includes("connection: close"), got);
      } finally {
        c.close();
      }
    }
  });
  assert.deepEqual(calls, 0);
});

Deno.test("serveHttp1() answers 501 for a transfer coding it does not know", async () => {
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
      assert.match(await c.untilClosed(), /^HTTP\/1\.1 501 /);
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() answers pipelined requests in order", async () => {
  let n = 0;
  await withServer(async (req) => {
    const i = n++;
    // The first takes longest: order must still hold.
    await new Promise((r) => setTimeout(r, i === 0 ? 50 : 0));
    return new Response(`${i}:${new URL(req.url).pathname}|`);
  }, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n" +
          "GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      );
      const got = await c.untilClosed();
      assert.deepEqual(countResponses(got), 3);
      assert(got.indexOf("0:/a|") < got.indexOf("1:/b|"));
      assert(got.indexOf("1:/b|") < got.indexOf("2:/c|"));
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() sends 100 Continue only when the handler reads the body", async () => {
  await withServer(async (req) => {
    if (new URL(req.url).pathname === "/refuse") return new Response("nope", { status: 413 });
    return new Response(await req.text());
  }, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(
        "POST /ok HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
      );
      await c.until((s) => s.includes("\r\n\r\n"));
      assert.deepEqual(c.received, "HTTP/1.1 100 Continue\r\n\r\n");
      await c.send("body");
      await c.until((s) => s.endsWith("body"));
      assert.match(c.received, /100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    } finally {
      c.close();
    }
    const r = await RawClient.open(port);
    try {
      await r.send(
        "POST /refuse HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
      );
      const got = await r.untilClosed();
      assert.match(got, /^HTTP\/1\.1 413 /);
      assert(!got.includes("100 Continue"));
      // The unread body leaves the connection out of step: it closes.
      assert.ok(got.includes("connection: close"), got);
    } finally {
      r.close();
    }
  });
});

Deno.test("serveHttp1() reads heads with bare LF line ends", async () => {
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send("POST /lf HTTP/1.1\nHost: x\nContent-Length: 2\n\nhi");
      await c.until((s) => s.endsWith("hi"));
      assert.ok(c.received.includes("POST http://x/lf 2 hi"), c.received);
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() answers 431 to a head over 64 KiB", async () => {
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(70 * 1024)}\r\n\r\n`)
        .catch(() => {});
      assert.match(await c.untilClosed(), /^HTTP\/1\.1 431 /);
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() reads heads that come in pieces, after blank lines, and refuses one that grows too large", async () => {
  const pause = () => new Promise((r) => setTimeout(r, 20));
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      // Blank lines before the first head, each in its own packet.
      for (const piece of ["\r\n", "\n", "\r\n"]) {
        await c.send(piece);
        await pause();
      }
      // The end of the head split inside "\r\n\r\n", then the body apart.
      for (
        const piece of ["POST /a HTTP/1.1\r\nHo", "st: x\r\nContent-Length: 2\r\n\r", "\n", "hi"]
      ) {
        await c.send(piece);
        await pause();
      }
      await c.until((s) => s.endsWith("POST http://x/a 2 hi"));
      c.received = "";
      // A stray CRLF after the body, then the next head a byte at a time at its end.
      await c.send("\r\nGET /b HTTP/1.1\r\nHost: x\r\n");
      await pause();
      await c.send("\r");
      await pause();
      await c.send("\nGET /c HTTP/1.1\nHost: x\n\n");
      await c.until((s) => countResponses(s) === 2 && s.endsWith("GET http://x/c 0 "));
      assert.ok(c.received.includes("GET http://x/b 0 "), c.received);
    } finally {
      c.close();
    }
    const big = await RawClient.open(port);
    try {
      await big.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
      for (let i = 0; i < 9; i++) {
        await big.send("a".repeat(8 * 1024)).catch(() => {});
        await pause();
      }
      assert.match(await big.untilClosed(), /^HTTP\/1\.1 431 /);
    } finally {
      big.close();
    }
  });
});

Deno.test("serveHttp1() keeps a HEAD answer's framing headers and sends no body", async () => {
  await withServer(
    (req) =>
      new Response(req.method === "HEAD" ? null : "x".repeat(42), {
        headers: { "content-length": "42", "x-a": "\xe9" },
      }),
    async (port) => {
      const c = await RawClient.open(port);
      try {
        await c.send("HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n");
        await c.until((s) => countResponses(s) === 2 && s.endsWith("x".repeat(42)));
        const [first, second] = c.received.split(/(?=HTTP\/1\.1 )/);
        assert.ok(first.includes("content-length: 42\r\n"), first);
        assert(first.endsWith("\r\n\r\n"), "HEAD answer has no body");
        // Header values are byte strings on the wire: 0xe9 is one byte.
        assert.ok(first.includes("x-a: \xe9\r\n"), first);
        assert.ok(second.includes("content-length: 42\r\n"), second);
      } finally {
        c.close();
      }
    },
  );
});

Deno.test("serveHttp1() sends 204 without a body and keeps the connection", async () => {
  await withServer(() => new Response(null, { status: 204 }), async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await c.until((s) => countResponses(s) === 2 && s.endsWith("\r\n\r\n"));
      assert(!c.received.includes("content-length"));
      assert(!c.received.includes("transfer-encoding"));
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() gives the handler the raw request target", async () => {
  const target = `/v1/x?q='"%27&a=b%20c&u=\xe9`;
  let seen = "";
  await withServer((req) => {
    seen = req.url;
    return new Response("ok");
  }, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n`);
      await c.until((s) => s.endsWith("ok"));
    } finally {
      c.close();
    }
  });
  assert.deepEqual(seen, `http://127.0.0.1:9${target}`);
  assert.deepEqual(requestTarget(seen), target);
});

Deno.test("serveHttp1() answers HTTP/1.0 without keep-alive by closing after the body", async () => {
  await withServer(() =>
    new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode("one"));
          setTimeout(() => {
            c.enqueue(new TextEncoder().encode("two"));
            c.close();
          }, 20);
        },
      }),
    ), async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send("GET / HTTP/1.0\r\n\r\n");
      const got = await c.untilClosed();
      assert(!got.includes("transfer-encoding"));
      assert(got.endsWith("\r\n\r\nonetwo"), got);
    } finally {
      c.close();
    }
  });
});

Deno.test("serveHttp1() streams each chunk as it comes (SSE)", async () => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  await withServer(() => {
    const enc = new TextEncoder();
    return new Response(
      new ReadableStream({
        async start(c) {
          c.enqueue(enc.encode("data: 1\n\n"));
          await released;
          c.enqueue(enc.encode("data: 2\n\n"));
          c.close();
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    );
  }, async (port) => {
    const c = await RawClient.open(port);
    try {
      await c.send("GET /s HTTP/1.1\r\nHost: x\r\n\r\n");
      await c.until((s) => s.includes("data: 1\n\n\r\n"));
      assert.ok(c.received.includes("transfer-encoding: chunked"), c.received);
      assert(!c.received.includes("data: 2"));
      release();
      await c.until((s) => s.endsWith("0\r\n\r\n"));
      assert.ok(c.received.includes("9\r\ndata: 2\n\n\r\n0\r\n\r\n"), c.received);
    } finally {
      release();
      c.close();
    }
  });
});

Deno.test("serveHttp1() aborts request.signal when the client leaves, never after a finished answer", async () => {
  const signals: AbortSignal[] = [];
  let started!: () => void;
  const handlerStarted = new Promise<void>((r) => (started = r));
  await withServer((req) => {
    signals.push(req.signal);
    if (new URL(req.url).pathname === "/quick") return Promise.resolve(new Response("done"));
    started();
    // A long generation: nothing for a while.
    return new Promise<Response>((resolve) => {
      req.signal.addEventListener("abort", () => resolve(new Response("late")));
    });
  }, async (port) => {
    const quick = await RawClient.open(port);
    await quick.send("GET /quick HTTP/1.1\r\nHost: x\r\n\r\n");
    await quick.until((s) => s.endsWith("done"));
    quick.close();
    const c = await RawClient.open(port);
    await c.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
    await handlerStarted;
    c.close();
    const deadline = Date.now() + 3_000;
    while (!signals[1].aborted && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
  });
  assert.deepEqual(signals.length, 2);
  assert.deepEqual(signals[0].aborted, false, "a finished answer's signal stays quiet");
  assert(signals[1].aborted, "client disconnect aborts the request");
});

Deno.test("serveHttp1() still sees the client leave after more bytes came while the handler ran", async () => {
  let signal: AbortSignal | undefined;
  let started!: () => void;
  const handlerStarted = new Promise<void>((r) => (started = r));
  await withServer((req) => {
    signal = req.signal;
    started();
    // Reads nothing: the rest of the body arrives and is only buffered.
    return new Promise<Response>((resolve) => {
      req.signal.addEventListener("abort", () => resolve(new Response("late")));
    });
  }, async (port) => {
    const c = await RawClient.open(port);
    await c.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nhi");
    await handlerStarted;
    // One read of the watch ends with these bytes; the next must still see the close.
    await c.send("yo");
    await new Promise((r) => setTimeout(r, 50));
    await c.send("!!");
    c.close();
    const deadline = Date.now() + 3_000;
    while (!signal!.aborted && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // Before the server shuts down, which would abort it too.
    assert(signal!.aborted, "client disconnect aborts the request");
  });
});

Deno.test("serveHttp1() turns a handler exception into onError's response", async () => {
  const server = serveHttp1({
    hostname: "127.0.0.1",
    port: 0,
    onError: () => Response.json({ error: "x" }, { status: 500 }),
  }, () => {
    throw new Error("bug");
  });
  const c = await RawClient.open(server.addr.port);
  try {
    await c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await c.until((s) => s.endsWith('{"error":"x"}'));
    assert.match(c.received, /^HTTP\/1\.1 500 /);
  } finally {
    c.close();
    await server.closeAll();
  }
});

Deno.test("Http1Server.shutdown() closes idle connections and lets an answer in flight finish", async () => {
  let finish!: () => void;
  const gate = new Promise<void>((r) => (finish = r));
  let started!: () => void;
  const inHandler = new Promise<void>((r) => (started = r));
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, async () => {
    started();
    await gate;
    return new Response("finished");
  });
  const idle = await RawClient.open(server.addr.port);
  const busy = await RawClient.open(server.addr.port);
  try {
    await busy.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await inHandler;
    const done = server.shutdown();
    await idle.untilClosed(2_000);
    finish();
    const got = await busy.untilClosed(2_000);
    assert(got.endsWith("finished"));
    assert.ok(got.includes("connection: close"), got);
    await done;
  } finally {
    idle.close();
    busy.close();
    await server.closeAll();
  }
});

Deno.test("serveHttp1() gives each accepted connection its own connectionId", async () => {
  const ids: number[] = [];
  const server = serveHttp1({ hostname: "127.0.0.1", port: 0 }, (_req, info) => {
    ids.push(info.connectionId);
    return new Response("ok");
  });
  try {
    for (let conn = 0; conn < 2; conn++) {
      const c = await RawClient.open(server.addr.port);
      try {
        for (let i = 0; i < 2; i++) {
          const from = c.received.length;
          await c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
          await c.until((r) => r.slice(from).endsWith("ok"));
        }
      } finally {
        c.close();
      }
    }
    assert.equal(ids.length, 4);
    assert.equal(ids[0], ids[1], "one connection, one id");
    assert.equal(ids[2], ids[3]);
    assert.notEqual(ids[0], ids[2], "a new connection, a new id");
  } finally {
    await server.shutdown();
  }
});

Deno.test("serveHttp1() keeps every byte when small and large reads alternate (reused read buffer)", async () => {
  // Tiny writes make compacted reads (the read buffer is then used again);
  // a body over a quarter of the read size is kept as a view of it instead.
  // Each request's body must come through exactly, whatever came before.
  await withServer(echo, async (port) => {
    const c = await RawClient.open(port);
    try {
      for (let i = 0; i < 6; i++) {
        const body = String.fromCharCode(97 + i).repeat(i % 2 === 0 ? 7 : 3000);
        const msg =
          `POST /r${i} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
        c.received = "";
        if (i % 2 === 0) {
          for (let at = 0; at < msg.length; at += 9) {
            await c.send(msg.slice(at, at + 9));
            await new Promise((r) => setTimeout(r, 1));
          }
        } else {
          await c.send(msg);
        }
        await c.until((s) => s.endsWith(body));
        assert.ok(c.received.includes(`POST http://x/r${i} ${body.length} ${body}`), c.received);
      }
    } finally {
      c.close();
    }
  });
});
