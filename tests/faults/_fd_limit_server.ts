/**
 * A child process for connection_hygiene_test.ts: serveHttp1 with a cap far
 * above its open-file limit (the test runs it under `prlimit --nofile=256`),
 * so `accept()` itself fails with EMFILE. Prints its port, then one JSON line
 * per log record on stdout; exits when stdin closes.
 */
import { serveHttp1 } from "../../lib/http1/server.ts";

// As `vastproxy serve` does (lib/commands/serve.ts), bind the signals before the flood: Deno 2.9
// panics (ext/signals unwrap) when a signal is first bound while every
// descriptor is taken, and its runtime binds one lazily soon after start.
Deno.addSignalListener("SIGINT", () => {});
Deno.addSignalListener("SIGTERM", () => {});

const server = serveHttp1({
  hostname: "127.0.0.1",
  port: 0,
  headerTimeoutMs: 2_000,
  idleTimeoutMs: 2_000,
  maxConnections: 10_000,
  logger: {
    log(level, msg, fields) {
      console.log(JSON.stringify({ level, msg, ...fields }));
    },
  },
}, () => new Response("ok"));
console.log(JSON.stringify({ port: server.addr.port }));
for await (const _ of Deno.stdin.readable) { /* until the test closes stdin */ }
await server.closeAll();
