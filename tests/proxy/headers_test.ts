import assert from "node:assert/strict";
import { bearerToken, createTokenCheck } from "../../lib/proxy/auth.ts";
import {
  downstreamResponseHeaders,
  HOP_BY_HOP,
  instanceAuthorization,
  parsePin,
  upstreamRequestHeaders,
} from "../../lib/proxy/headers.ts";
import { headerValue } from "../../lib/http1/types.ts";

Deno.test("upstreamRequestHeaders() removes the standard hop-by-hop list and names listed in Connection", () => {
  const h = new Headers({
    connection: "keep-alive, X-Custom-Hop, , bad header name",
    "keep-alive": "timeout=5",
    "proxy-authenticate": "Basic",
    "proxy-authorization": "Basic xyz",
    te: "trailers",
    trailer: "X-Checksum",
    "transfer-encoding": "chunked",
    upgrade: "websocket",
    "x-custom-hop": "1",
    "x-keep": "yes",
    "content-type": "application/json",
  });
  const out = upstreamRequestHeaders(h, null);
  for (const name of [...HOP_BY_HOP, "x-custom-hop"]) {
    assert.equal(headerValue(out, name), null, name);
  }
  assert.deepEqual(out, [["content-type", "application/json"], ["x-keep", "yes"]]);
  assert.equal(h.has("connection"), true, "input is not mutated");
});

Deno.test("upstreamRequestHeaders() replaces Authorization and strips the pin header", () => {
  const incoming = new Headers({
    authorization: "Bearer proxy-secret",
    "x-vastproxy-instance": "123",
    host: "localhost:8080",
    "content-length": "17",
    connection: "close",
    "content-type": "application/json",
    "x-session-id": "s1",
    "user-agent": "OpenAI/JS 7.57.0",
    accept: "text/event-stream",
  });
  const out = upstreamRequestHeaders(incoming, "Bearer instance-token");
  assert.equal(headerValue(out, "authorization"), "Bearer instance-token");
  for (const gone of ["x-vastproxy-instance", "host", "content-length", "connection"]) {
    assert.equal(headerValue(out, gone), null, gone);
  }
  // Everything else unchanged, in order, byte for byte.
  assert.deepEqual(out, [
    ["accept", "text/event-stream"],
    ["content-type", "application/json"],
    ["user-agent", "OpenAI/JS 7.57.0"],
    ["x-session-id", "s1"],
    ["authorization", "Bearer instance-token"],
  ]);
});

Deno.test("upstreamRequestHeaders() drops the client's Authorization when the instance has no token", () => {
  const out = upstreamRequestHeaders(new Headers({ authorization: "Bearer proxy-secret" }), null);
  assert.deepEqual(out, []);
});

Deno.test("instanceAuthorization() accepts a bare token or a full header value", () => {
  assert.equal(instanceAuthorization("abc123"), "Bearer abc123");
  assert.equal(instanceAuthorization("Bearer abc123"), "Bearer abc123");
  assert.equal(instanceAuthorization(null), null);
  assert.equal(instanceAuthorization(""), null);
});

Deno.test("downstreamResponseHeaders() strips hop-by-hop and sets X-VastProxy-Instance", () => {
  const out = downstreamResponseHeaders(
    [
      ["transfer-encoding", "chunked"],
      ["connection", "keep-alive"],
      ["content-type", "text/event-stream"],
      ["x-request-id", "r1"],
    ],
    25078234,
  );
  assert.equal(out.get("x-vastproxy-instance"), "25078234");
  assert.equal(out.has("transfer-encoding"), false);
  assert.equal(out.has("connection"), false);
  assert.equal(out.get("content-type"), "text/event-stream");
  assert.equal(out.get("x-request-id"), "r1");
});

Deno.test("parsePin() accepts positive integer ids only", () => {
  assert.equal(parsePin(" 42 "), 42);
  assert.equal(parsePin("0"), undefined);
  assert.equal(parsePin("-3"), undefined);
  assert.equal(parsePin("4.5"), undefined);
  assert.equal(parsePin("abc"), undefined);
  assert.equal(parsePin(null), undefined);
});

Deno.test("bearerToken() extracts a Bearer credential, null for anything else", () => {
  assert.equal(bearerToken("Bearer abc"), "abc");
  assert.equal(bearerToken("bearer   abc "), "abc");
  assert.equal(bearerToken("Basic abc"), null);
  assert.equal(bearerToken(null), null);
});

Deno.test("createTokenCheck() accepts only the exact Bearer token", async () => {
  const check = createTokenCheck("s3cret");
  assert.equal(await check("Bearer s3cret"), true);
  for (
    const bad of [null, "", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"]
  ) {
    assert.equal(await check(bad), false, String(bad));
  }
  assert.equal(await createTokenCheck(null)(null), true);
});
