/**
 * The bench's SSH floor (paths h and i): vastproxy's own SSH layer with the
 * least on top of it, so a run can split what the proxy adds over `ssh -L`
 * into its parts.
 *
 * - `bytes` (path h): `ssh -L` rebuilt on the proxy's SSH stack —
 *   `connectEndpoint` (ssh2 on the `DenoSocket`, the own AES-GCM packet
 *   cipher) and a `direct-tcpip` channel per accepted connection with the
 *   channel read/write shortcuts — copying bytes each way unchanged.
 *   (h) − (b) is what that SSH stack, and the Deno process it runs in,
 *   cost over OpenSSH's client.
 * - `http` (path i): the same, plus the HTTP work a proxy cannot skip: the
 *   request head is parsed and checked, its fields rewritten as the proxy
 *   does (`upstreamRequestHeaders`) and encoded again (`encodeRequest`); the
 *   response head is parsed, rewritten (`downstreamResponsePairs`) and
 *   written with its body by the server's own head encoder. No `Request`/`Response` objects, no routing,
 *   logging or metrics. (i) − (h) is that HTTP work; (c) − (i) is
 *   everything else the proxy does per request.
 *
 * A floor, not a product path: the `http` mode serves only what the bench
 * sends (bodies with a `Content-Length`, answers with one, each under
 * MAX_MESSAGE bytes) and closes the connection on anything else. `TOKEN`,
 * when given, goes to the engine as the instance's `Authorization`, as the
 * proxy sends it.
 *
 * Usage: deno run --allow-net --allow-read --allow-env --allow-sys=homedir,hostname,osRelease
 *   ssh_forward.ts bytes|http LISTEN_PORT SSHD_PORT ENGINE_PORT KEY_FILE MAX_SECONDS [TOKEN]
 * (loopback only; no host-key check). Exits 0 by itself after MAX_SECONDS,
 * or 1 at once when the SSH connection is lost (so a bench round sees
 * errors, not a floor that answers nothing).
 */
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import { connectEndpoint, endClient } from "../../lib/tunnel/connect.ts";
import { loadAuthSources } from "../../lib/tunnel/keys.ts";
import { openChannel } from "../../lib/tunnel/ssh.ts";
import { tryWriteNow } from "../../lib/tunnel/channel_write.ts";
import type { ReadDirect } from "../../lib/tunnel/channel_read.ts";
import { parseRequestHead, requestFraming } from "../../lib/http1/request_head.ts";
import { encodeRequest, findHeadEnd, framingOf, parseHead } from "../../lib/http1/parse.ts";
import { downstreamResponsePairs, upstreamRequestHeaders } from "../../lib/proxy/headers.ts";
import { encodeHead } from "../../lib/http1/response_head.ts";
import { headersOrder } from "../../lib/http1/raw.ts";

const USAGE =
  "usage: ssh_forward.ts bytes|http LISTEN_PORT SSHD_PORT ENGINE_PORT KEY_FILE MAX_SECONDS [TOKEN]";
const [mode, ...rest] = Deno.args;
const [listenPort, sshdPort, enginePort, keyFile, maxSecondsText, token] = rest;
const ports = [listenPort, sshdPort, enginePort, maxSecondsText].map(Number);
if (
  (mode !== "bytes" && mode !== "http") || rest.length < 5 || rest.length > 6 || !keyFile ||
  !ports.every((n) => Number.isInteger(n) && n > 0)
) {
  console.error(USAGE);
  Deno.exit(2);
}
/** Past this many unwritten bytes for a client, the channel stops reading. */
const HIGH_WATER = 1 << 20;
/** The `http` mode's limit for one request or answer, head and body. */
const MAX_MESSAGE = 1 << 20;
const ENGINE_HOST = `127.0.0.1:${enginePort}`;

type Channel = ClientChannel & ReadDirect;

const ssh = await connectEndpoint({ host: "127.0.0.1", port: ports[1], path: "direct" }, {
  instanceId: 0,
  username: "root",
  auth: loadAuthSources({ sshKeys: [keyFile] }),
  knownHosts: null,
  // The proxy's defaults (lib/tunnel/factory.ts).
  readyTimeoutMs: 10_000,
  keepaliveIntervalMs: 10_000,
  keepaliveCountMax: 3,
});
const open = openChannel(ssh.client, ports[2]) as () => Promise<Channel>;
const clients = new Set<Deno.TcpConn>();
const listener = Deno.listen({ hostname: "127.0.0.1", port: ports[0] });
let ending = false;
setTimeout(() => {
  ending = true;
  listener.close();
  for (const c of clients) closeQuietly(c);
  clients.clear();
  endClient(ssh.client);
}, ports[3] * 1000);
ssh.client.on("close", () => {
  if (ending) return;
  console.error("ssh_forward: the SSH connection was lost");
  Deno.exit(1);
});

function closeQuietly(c: Deno.Conn): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/**
 * Writes to the client in order, starting at once when nothing waits (so an
 * answer leaves in the turn it arrived in); tells the channel to pause while
 * too much waits.
 */
function clientWriter(client: Deno.TcpConn, onDrained: () => void) {
  const waiting: Uint8Array[] = [];
  let queued = 0;
  let busy = false;
  let failed = false;
  const onIdle: (() => void)[] = [];
  const run = async (bytes: Uint8Array) => {
    busy = true;
    for (let next: Uint8Array | undefined = bytes; next; next = waiting.shift()) {
      if (!failed) {
        try {
          for (let at = 0; at < next.byteLength;) at += await client.write(next.subarray(at));
        } catch {
          failed = true;
        }
      }
      const before = queued;
      queued -= next.byteLength;
      if (before >= HIGH_WATER && queued < HIGH_WATER) onDrained();
    }
    busy = false;
    for (const fn of onIdle.splice(0)) fn();
  };
  return {
    /** Queues `bytes`; false once over HIGH_WATER (the caller stops reading). */
    write(bytes: Uint8Array): boolean {
      queued += bytes.byteLength;
      if (busy) waiting.push(bytes);
      else void run(bytes);
      return queued < HIGH_WATER;
    },
    /** Runs `fn` once everything queued so far was written. */
    whenIdle(fn: () => void): void {
      if (busy) onIdle.push(fn);
      else fn();
    },
  };
}

/** Sends `bytes` on the channel, waiting for 'drain' when its buffer is full; throws once it closed. */
async function toChannel(ch: Channel, bytes: Uint8Array): Promise<void> {
  if (!ch.writable) throw new Error("channel closed");
  if (tryWriteNow(ch, bytes) || ch.write(bytes)) return;
  await new Promise<void>((resolve) => {
    const go = () => {
      ch.off("drain", go);
      ch.off("close", go);
      resolve();
    };
    ch.on("drain", go);
    ch.on("close", go);
  });
}

/**
 * `chunk` after the unconsumed `buf`. Nothing is copied when `buf` is
 * empty (nearly always): `keep` copies what is left over instead, as reads
 * land in a reused buffer.
 */
function append(buf: Uint8Array, chunk: Uint8Array): Uint8Array {
  if (buf.byteLength === 0) return chunk;
  const out = new Uint8Array(buf.byteLength + chunk.byteLength);
  out.set(buf);
  out.set(chunk, buf.byteLength);
  return out;
}

/** `buf`, unless an unfinished message already passed MAX_MESSAGE (then a throw). */
function capped(buf: Uint8Array): Uint8Array {
  if (buf.byteLength > MAX_MESSAGE) throw new Error("message over MAX_MESSAGE");
  return buf;
}

/** What is left of a chunk, copied out of the buffer it was read into (empty: no copy). */
function keep(rest: Uint8Array): Uint8Array {
  return rest.byteLength === 0 ? EMPTY : rest.slice();
}
const EMPTY = new Uint8Array(0);

/**
 * The `http` mode's request side: whole requests out of `buf`, each encoded
 * for the engine; `methods` gets each one's method for its answer. Throws
 * on anything the floor does not serve.
 */
function takeRequests(buf: Uint8Array, methods: string[], out: Uint8Array[]): Uint8Array {
  for (;;) {
    const end = findHeadEnd(buf, 0);
    if (end === -1) return keep(capped(buf));
    const head = parseRequestHead(buf.subarray(0, end));
    const framing = requestFraming(head);
    if (framing.kind === "chunked") throw new Error("chunked request bodies are not served");
    const length = framing.kind === "length" ? framing.length : 0;
    if (buf.byteLength < end + length) return keep(capped(buf));
    const body = length > 0 ? buf.subarray(end, end + length) : null;
    const headers = upstreamRequestHeaders(head.headers, token ?? null);
    out.push(encodeRequest(head.method, head.target, headers, body, ENGINE_HOST));
    methods.push(head.method);
    buf = buf.subarray(end + length);
  }
}

/** The `http` mode's response side: whole answers out of `buf`, encoded for the client. */
function takeResponses(buf: Uint8Array, methods: string[], out: Uint8Array[]): Uint8Array {
  for (;;) {
    const end = findHeadEnd(buf, 0);
    if (end === -1) return keep(capped(buf));
    const head = parseHead(buf.subarray(0, end));
    const framing = framingOf(methods[0] ?? "GET", head);
    if (framing.kind !== "length" && framing.kind !== "none") {
      throw new Error("answers without a Content-Length are not served");
    }
    const length = framing.kind === "length" ? framing.length : 0;
    if (buf.byteLength < end + length) return keep(capped(buf));
    // Written as the proxy's server writes an answer that came whole: its
    // own head encoder, the fields in the server's order, the body after.
    const fields = headersOrder(downstreamResponsePairs(head.headers, 0));
    out.push(
      encodeHead(head.status, head.statusText, fields, {
        method: methods.shift() ?? "GET",
        minor: 1,
        keepAlive: true,
        knownLength: length,
        tail: buf.subarray(end, end + length),
      }).bytes,
    );
    buf = buf.subarray(end + length);
  }
}

async function serve(client: Deno.TcpConn): Promise<void> {
  let ch: Channel;
  try {
    ch = await open();
  } catch {
    clients.delete(client);
    closeQuietly(client);
    return;
  }
  const done = () => {
    ch.destroy();
    if (clients.delete(client)) closeQuietly(client);
  };
  let more: (() => void) | null = null;
  const writer = clientWriter(client, () => more?.());
  const methods: string[] = [];
  let pendingResponse: Uint8Array = EMPTY;
  // Chunks are kept as they come, as the proxy's Conn keeps them: the
  // packet cipher opens every packet into a buffer of its own.
  const onData = (chunk: Uint8Array): boolean => {
    if (mode === "bytes") return writer.write(chunk);
    const out: Uint8Array[] = [];
    try {
      pendingResponse = takeResponses(append(pendingResponse, chunk), methods, out);
    } catch {
      done();
      return false;
    }
    let ok = true;
    for (const bytes of out) ok = writer.write(bytes);
    return ok;
  };
  more = ch.readDirect(onData);
  if (more === null) {
    // The shortcut declined (bytes came before it was attached): the
    // Readable, as the proxy's Conn falls back to it.
    ch.on("data", (chunk: Uint8Array) => {
      if (!onData(chunk)) ch.pause();
    });
    more = () => ch.resume();
  }
  // The engine's half-close reaches the client once its bytes did (as
  // `ssh -L` passes it on); an answer cut short ends the HTTP connection.
  ch.once("end", () =>
    writer.whenIdle(() => {
      if (mode === "http") return done();
      // Not once closed here; and a shutdown racing the peer's close must
      // not become an unhandled rejection (it ended a bench run's floor).
      if (clients.has(client)) client.closeWrite().catch(() => {});
    }));
  ch.once("close", () => writer.whenIdle(done));
  const buf = new Uint8Array(65536);
  let pendingRequest: Uint8Array = EMPTY;
  try {
    for (;;) {
      const n = await client.read(buf);
      if (n === null) break;
      if (mode === "bytes") {
        await toChannel(ch, buf.slice(0, n));
        continue;
      }
      const out: Uint8Array[] = [];
      pendingRequest = takeRequests(append(pendingRequest, buf.subarray(0, n)), methods, out);
      for (const bytes of out) await toChannel(ch, bytes);
    }
    ch.end();
  } catch {
    done();
  }
}

try {
  for await (const client of listener) {
    client.setNoDelay(true);
    clients.add(client);
    void serve(client);
  }
} catch { /* the listener closed */ }
if (!ending) {
  console.error("ssh_forward: the listener failed");
  Deno.exit(1);
}
