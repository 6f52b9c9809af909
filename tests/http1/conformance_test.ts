/**
 * Response-class conformance (issue #10 item 6): a raw-socket engine answers
 * with scripted bytes, and each case checks what the client sees and how
 * many times the engine saw the request (once; never replayed after it
 * reached the engine). Through the relay handler, and where bytes matter,
 * through a real Deno.serve read with a raw socket.
 */
import assert from "node:assert/strict";
import { readToEnd } from "../_helpers/byte_pipe.ts";
import type { Handler } from "../../lib/proxy/relay.ts";
import { guardResponse } from "../../lib/proxy/guard.ts";
import { bytesToLatin1, latin1ToBytes } from "../../lib/http1/latin1.ts";
import { closedPortUrl, FakeTarget, relayOver } from "../_helpers/fake_pool.ts";
import { ok, type RawEngine, type RawReply, startRawEngine, utf8 } from "../_helpers/raw_engine.ts";
import { tcpHttp1Client } from "../_helpers/tcp_client.ts";
import type { RawRequest } from "../_helpers/raw_engine.ts";

const P = "http://proxy.test";

interface Ctx {
  h: Handler;
  /** The scripted engine (target 1, tried first). */
  a: RawEngine;
  /** A healthy second engine (target 2), which must see nothing unless a retry is right. */
  b: RawEngine;
  t: FakeTarget[];
}

/** Target 1 on the scripted engine (or a closed port), target 2 on a plain one; 1 is tried first. */
async function withRelay(
  script: (req: RawRequest) => RawReply | Promise<RawReply>,
  fn: (ctx: Ctx) => Promise<void>,
  opts: { refuse?: boolean } = {},
): Promise<void> {
  const a = startRawEngine(script);
  const b = startRawEngine(() => ok("other"));
  const t = [
    new FakeTarget(1, { baseUrl: opts.refuse ? closedPortUrl() : a.url }),
    new FakeTarget(2, { baseUrl: b.url, inFlight: 5 }),
  ];
  const h = relayOver(t);
  try {
    await fn({ h, a, b, t });
    for (const x of t) assert.equal(x.doubleReleases, 0);
  } finally {
    for (const x of t) x.close();
    await a.close();
    await b.close();
  }
}

function req(path: string, init: RequestInit = {}): Request {
  return new Request(`${P}${path}`, init);
}

/** Fails instead of hanging when `p` takes longer than `ms`. */
async function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Runs `h` on a real Deno.serve (with guardResponse, as proxy_app does). */
async function withServer(h: Handler, fn: (port: number) => Promise<void>): Promise<void> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (r, info) => guardResponse(await h(r, info)),
  );
  try {
    await fn(server.addr.port);
  } finally {
    await server.shutdown();
  }
}

/** Sends raw `bytes` to 127.0.0.1:`port` and reads until the server closes (send `connection: close`). */
async function rawExchange(port: number, bytes: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(bytes);
    return await readToEnd(conn);
  } finally {
    conn.close();
  }
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, c) => s + c.length, 0));
  let at = 0;
  for (const c of parts) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

Deno.test("100 Continue then 200: the final answer, engine saw it once", async () => {
  await withRelay(() => `HTTP/1.1 100 Continue\r\n\r\n${ok("hi")}`, async ({ h, a, b }) => {
    const res = await h(req("/x", { method: "POST", body: "q" }));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "hi");
    assert.equal(a.count("/x"), 1);
    assert.equal(b.requests.length, 0);
  });
});

Deno.test("103 Early Hints then 200: the final answer, engine saw it once", async () => {
  await withRelay(
    () => `HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n${ok("hi")}`,
    async ({ h, a }) => {
      const res = await h(req("/x", { method: "POST", body: "q" }));
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "hi");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("HEAD keeps the engine's content-length and reads no body", async () => {
  await withRelay(
    (r) => r.method === "HEAD" ? "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n" : ok("after"),
    async ({ h, a }) => {
      const res = await h(req("/x", { method: "HEAD" }));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-length"), "42");
      assert.equal(await res.text(), "");
      const next = await h(req("/y"));
      assert.equal(await next.text(), "after");
      assert.equal(a.count("/x"), 1);
      // Direct: the client keeps content-length and yields no body.
      const c = tcpHttp1Client(a.port);
      try {
        const r = await c.request({ method: "HEAD", target: "/z", headers: [], body: null });
        assert.equal(r.body, null);
        assert.deepEqual(r.headers, [["content-length", "42"]]);
      } finally {
        c.close();
      }
    },
  );
});

Deno.test("204 has no body and the next request is answered correctly", async () => {
  await withRelay(
    (r) => r.target === "/x" ? "HTTP/1.1 204 No Content\r\n\r\n" : ok("next"),
    async ({ h, a }) => {
      const res = await h(req("/x", { method: "POST", body: "q" }));
      assert.equal(res.status, 204);
      assert.equal(res.body, null);
      assert.equal(await (await h(req("/y"))).text(), "next");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("205 with a body: no body relayed, no leak into the next answer", async () => {
  await withRelay(
    (r) =>
      r.target === "/x"
        ? "HTTP/1.1 205 Reset Content\r\ncontent-length: 5\r\n\r\nLEAK!"
        : ok("next"),
    async ({ h, a }) => {
      const res = await h(req("/x", { method: "POST", body: "q" }));
      assert.equal(res.status, 205);
      assert.equal(res.body, null);
      const next = await h(req("/y"));
      assert.equal(next.status, 200);
      assert.equal(await next.text(), "next");
      assert.equal(a.count("/x"), 1);
      assert.equal(a.count("/y"), 1);
    },
  );
});

Deno.test("304 has no body and keeps its validators", async () => {
  await withRelay(
    (r) =>
      r.target === "/x"
        ? 'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\ncontent-length: 10\r\n\r\n'
        : ok("next"),
    async ({ h, a }) => {
      const res = await h(req("/x"));
      assert.equal(res.status, 304);
      assert.equal(res.headers.get("etag"), '"v1"');
      assert.equal(res.body, null);
      assert.equal(await (await h(req("/y"))).text(), "next");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("chunked with extensions and trailers is decoded, channel reused", async () => {
  const chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" +
    '5;foo=bar\r\nhello\r\n6;x="y z"\r\n world\r\n0;end\r\nx-trailer: t\r\n\r\n';
  await withRelay(() => chunked, async ({ h, a }) => {
    assert.equal(await (await h(req("/x"))).text(), "hello world");
    assert.equal(await (await h(req("/x"))).text(), "hello world");
    assert.equal(a.count("/x"), 2);
    assert.equal(a.connections, 1);
  });
});

Deno.test("close-delimited body is read to the end", async () => {
  await withRelay(
    () => ({ parts: ["HTTP/1.1 200 OK\r\n\r\n", "abc", "def"], close: true, partDelayMs: 5 }),
    async ({ h, a }) => {
      const res = await h(req("/x"));
      assert.equal(res.headers.get("content-length"), null);
      assert.equal(await res.text(), "abcdef");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("Connection: close answer is delivered and the next request opens a new channel", async () => {
  await withRelay(
    () => ({ parts: ["HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"] }),
    async ({ h, a }) => {
      assert.equal(await (await h(req("/x"))).text(), "ok");
      assert.equal(await (await h(req("/x"))).text(), "ok");
      assert.equal(a.count("/x"), 2);
      assert.equal(a.connections, 2);
    },
  );
});

Deno.test("duplicate identical Content-Length is one length", async () => {
  await withRelay(
    () => "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabc",
    async ({ h, a }) => {
      const res = await h(req("/x"));
      assert.equal(res.status, 200);
      assert.equal(await res.text(), "abc");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("conflicting Content-Length: 502, not retried", async () => {
  await withRelay(
    () => "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    async ({ h, a, b }) => {
      const res = await h(req("/x", { method: "POST", body: "q" }));
      assert.equal(res.status, 502);
      await res.body?.cancel();
      assert.equal(a.count("/x"), 1);
      assert.equal(b.requests.length, 0);
    },
  );
});

Deno.test("Transfer-Encoding with Content-Length: chunked wins, no content-length downstream", async () => {
  await withRelay(
    () =>
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n" +
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    async ({ h, a }) => {
      const res = await h(req("/x"));
      assert.equal(res.headers.get("content-length"), null);
      assert.equal(await res.text(), "hello world");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("obs-fold is joined with a space", async () => {
  await withRelay(
    () => "HTTP/1.1 200 OK\r\nx-folded: a\r\n  b\r\n\tc\r\ncontent-length: 2\r\n\r\nok",
    async ({ h, a }) => {
      const res = await h(req("/x"));
      assert.equal(res.headers.get("x-folded"), "a b c");
      assert.equal(await res.text(), "ok");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("bare-LF head is answered without hanging", async () => {
  await withRelay(
    () => "HTTP/1.1 200 OK\nx-a: 1\ncontent-length: 2\n\nok",
    async ({ h, a }) => {
      const res = await within(3000, h(req("/x")));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("x-a"), "1");
      assert.equal(await within(3000, res.text()), "ok");
      assert.equal(a.count("/x"), 1);
    },
  );
});

Deno.test("head over 64 KiB: 502, not retried", async () => {
  await withRelay(
    () => `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(70_000)}\r\ncontent-length: 2\r\n\r\nok`,
    async ({ h, a, b }) => {
      const res = await within(5000, h(req("/x", { method: "POST", body: "q" })));
      assert.equal(res.status, 502);
      await res.body?.cancel();
      assert.equal(a.count("/x"), 1);
      assert.equal(b.requests.length, 0);
    },
  );
});

Deno.test("engine closes after reading the request: 502, not retried", async () => {
  await withRelay(() => null, async ({ h, a, b }) => {
    const res = await h(req("/x", { method: "POST", body: "q" }));
    assert.equal(res.status, 502);
    const body = await res.json();
    assert.match(body.error.message, /not retried/);
    assert.equal(a.count("/x"), 1);
    assert.equal(b.requests.length, 0);
  });
});

Deno.test("engine refuses connections: retried on another backend", async () => {
  await withRelay(() => ok("never"), async ({ h, a, b }) => {
    const res = await h(req("/x", { method: "POST", body: "q" }));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "other");
    assert.equal(a.requests.length, 0);
    assert.equal(b.count("/x"), 1);
  }, { refuse: true });
});

Deno.test("raw UTF-8 response header value reaches a raw client byte-identical", async () => {
  const value = utf8("Qwen—72B 通义");
  const reply = concat(
    latin1ToBytes("HTTP/1.1 200 OK\r\nx-served-model: "),
    value,
    latin1ToBytes("\r\ncontent-length: 2\r\n\r\nok"),
  );
  await withRelay(() => reply, async ({ h, a }) => {
    await withServer(h, async (port) => {
      const out = await within(
        5000,
        rawExchange(port, latin1ToBytes("GET /x HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n")),
      );
      const text = bytesToLatin1(out);
      assert.match(text, /^HTTP\/1\.1 200/);
      assert.ok(
        text.toLowerCase().includes(`x-served-model: ${bytesToLatin1(value)}\r\n`.toLowerCase()),
        `value bytes not found in: ${JSON.stringify(text)}`,
      );
      assert.ok(text.endsWith("ok"));
      assert.equal(a.count("/x"), 1);
    });
  });
});

Deno.test("client request header bytes >= 0x80 reach the engine byte-identical", async () => {
  const value = bytesToLatin1(utf8("Qwen—72B 通义 \xff"));
  await withRelay(() => ok("ok"), async ({ h, a }) => {
    await withServer(h, async (port) => {
      const out = await within(
        5000,
        rawExchange(
          port,
          latin1ToBytes(
            `GET /x HTTP/1.1\r\nhost: p\r\nx-note: ${value}\r\nconnection: close\r\n\r\n`,
          ),
        ),
      );
      assert.match(bytesToLatin1(out), /^HTTP\/1\.1 200/);
      assert.equal(a.requests.length, 1);
      assert.ok(a.requests[0].head.includes(`x-note: ${value}\r\n`), a.requests[0].head);
    });
  });
});

Deno.test("a DEL in an engine header drops that header and the proxy keeps serving", async () => {
  await withRelay(
    (r) =>
      r.target === "/x"
        ? "HTTP/1.1 200 OK\r\nx-bad: a\x7fb\r\nx-good: g\r\ncontent-length: 2\r\n\r\nok"
        : ok("next"),
    async ({ h, a }) => {
      await withServer(h, async (port) => {
        const res = await fetch(`http://127.0.0.1:${port}/x`);
        assert.equal(res.status, 200);
        assert.equal(res.headers.get("x-bad"), null);
        assert.equal(res.headers.get("x-good"), "g");
        assert.equal(await res.text(), "ok");
        const next = await fetch(`http://127.0.0.1:${port}/y`);
        assert.equal(await next.text(), "next");
        assert.equal(a.count("/x"), 1);
      });
    },
  );
});

Deno.test("a query with raw ' and \" reaches the engine unchanged", async () => {
  const target = `/q?a='x'&b="y"&c=%22`;
  await withRelay(() => ok("ok"), async ({ h, a }) => {
    await withServer(h, async (port) => {
      const out = await within(
        5000,
        rawExchange(
          port,
          latin1ToBytes(`GET ${target} HTTP/1.1\r\nhost: p\r\nconnection: close\r\n\r\n`),
        ),
      );
      assert.match(bytesToLatin1(out), /^HTTP\/1\.1 200/);
      assert.equal(a.count(target), 1);
    });
  });
});
