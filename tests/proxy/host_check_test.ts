import assert from "node:assert/strict";
import {
  allowedHostProblem,
  createHostCheck,
  isIpLiteral,
  isLoopbackName,
  parseHost,
} from "../../lib/proxy/host_check.ts";

Deno.test("parseHost() splits name and port, unbrackets IPv6, lower-cases, drops a trailing dot", () => {
  assert.deepEqual(parseHost("LocalHost:8080"), { name: "localhost", port: "8080" });
  assert.deepEqual(parseHost("[::1]:8080"), { name: "::1", port: "8080" });
  assert.deepEqual(parseHost("[::1]"), { name: "::1", port: null });
  assert.deepEqual(parseHost("example.com."), { name: "example.com", port: null });
  for (const bad of ["", ":80", "a:b", "[::1", "a b", "a:1:2", "x@y:80/"]) {
    assert.equal(parseHost(bad), null, bad);
  }
});

Deno.test("isLoopbackName() and isIpLiteral() recognise names that cannot be rebound", () => {
  for (const n of ["localhost", "app.localhost", "127.0.0.1", "127.1.2.3", "::1"]) {
    assert.ok(isLoopbackName(n), n);
  }
  for (const n of ["localhost.evil.example", "evil.example", "128.0.0.1"]) {
    assert.ok(!isLoopbackName(n), n);
  }
  for (const n of ["10.0.0.5", "192.168.1.2", "fe80::1"]) assert.ok(isIpLiteral(n), n);
  for (const n of ["evil.example", "1.2.3.example"]) assert.ok(!isIpLiteral(n), n);
});

Deno.test("createHostCheck() serves loopback names, IP literals and the listen host by default", () => {
  const ok = createHostCheck({ listenHostname: "127.0.0.1", allowedHosts: [] });
  for (
    const h of [
      "127.0.0.1:8080",
      "localhost:8080",
      "LOCALHOST",
      "[::1]:8080",
      "chat.localhost:8080",
      "192.168.1.20:8080",
      "[fe80::1]:8080",
      null,
    ]
  ) assert.ok(ok(h), `${h}`);
  for (
    const h of [
      "attacker.example",
      "attacker.example:8080",
      "localhost.attacker.example",
      "127.0.0.1.nip.io:8080",
      "",
      "a b",
    ]
  ) assert.ok(!ok(h), h);
  const named = createHostCheck({ listenHostname: "gpu-box.lan", allowedHosts: [] });
  assert.ok(named("gpu-box.lan:8080"));
  const wildcard = createHostCheck({ listenHostname: "0.0.0.0", allowedHosts: [] });
  assert.ok(!wildcard("0.0.0.0.evil.example"));
});

Deno.test("createHostCheck() adds --allowed-host names, name:port, .domain and *", () => {
  const ok = createHostCheck({
    listenHostname: "127.0.0.1",
    allowedHosts: ["MyBox.lan", "proxy.example:443", ".ts.net"],
  });
  assert.ok(ok("mybox.lan:8080"));
  assert.ok(ok("mybox.lan"));
  assert.ok(ok("proxy.example:443"));
  assert.ok(!ok("proxy.example:8080"));
  assert.ok(!ok("proxy.example"));
  assert.ok(ok("gpu.tail1234.ts.net:8080"));
  assert.ok(ok("ts.net"));
  assert.ok(!ok("evilts.net"));
  const any = createHostCheck({ listenHostname: "127.0.0.1", allowedHosts: ["*"] });
  assert.ok(any("attacker.example"));
});

Deno.test("allowedHostProblem() accepts host names and explains bad entries", () => {
  for (const e of ["mybox.lan", "mybox.lan:8080", ".example.com", "*", "[::1]:8080", "10.0.0.1"]) {
    assert.equal(allowedHostProblem(e), null, e);
  }
  for (const e of ["http://mybox.lan", "mybox.lan/x", ".example.com:80", "", "a b", "user@h"]) {
    assert.ok(allowedHostProblem(e), e);
  }
});
