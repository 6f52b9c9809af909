import assert from "node:assert/strict";
import { isLoopback, parseListen, resolveServeConfig, UsageError } from "../../lib/cli/config.ts";
import { parseDotenv } from "../../lib/cli/dotenv.ts";
import { formatDuration, parseDuration, parseSize } from "../../lib/cli/units.ts";

function files(map: Record<string, string>) {
  return (path: string) => {
    if (path in map) return map[path];
    throw new Deno.errors.NotFound(path);
  };
}

function usage(fn: () => unknown, pattern: RegExp): UsageError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof UsageError, `expected UsageError, got ${err}`);
    assert.match(err.message, pattern);
    return err;
  }
  assert.fail("expected a UsageError");
}

Deno.test("parseDuration() reads ms, s, m, h, compounds and bare seconds", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("10s"), 10_000);
  assert.equal(parseDuration("2m"), 120_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("1m30s"), 90_000);
  assert.equal(parseDuration("1.5s"), 1_500);
  assert.equal(parseDuration("7"), 7_000);
  for (const bad of ["", "s", "10x", "-5s", "ten seconds", "5 s s"]) {
    assert.equal(parseDuration(bad), undefined, bad);
  }
});

Deno.test("parseSize() reads binary and decimal units", () => {
  assert.equal(parseSize("32MiB"), 32 * 1024 * 1024);
  assert.equal(parseSize("1GB"), 1e9);
  assert.equal(parseSize("512k"), 512_000);
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("1.5KiB"), 1536);
  for (const bad of ["", "MiB", "12XB", "-1", "1e9"]) assert.equal(parseSize(bad), undefined, bad);
});

Deno.test("formatDuration() is compact", () => {
  assert.equal(formatDuration(850), "0s");
  assert.equal(formatDuration(12_000), "12s");
  assert.equal(formatDuration(192_000), "3m12s");
  assert.equal(formatDuration(2 * 3_600_000 + 5 * 60_000), "2h05m");
  assert.equal(formatDuration(50 * 3_600_000), "2d02h");
  assert.equal(formatDuration(30 * 3_600_000), "1d06h");
});

Deno.test("parseDotenv() handles quotes, export, comments and reports bad lines by number", () => {
  const { values, badLines } = parseDotenv(
    [
      "# comment",
      "VAST_API_KEY=abc123",
      "export VASTPROXY_LISTEN=127.0.0.1:9000",
      "A='literal # not comment'",
      'B="line\\nbreak"',
      "C=value # trailing",
      "this is not valid",
      "",
    ].join("\n"),
  );
  assert.deepEqual(values, {
    VAST_API_KEY: "abc123",
    VASTPROXY_LISTEN: "127.0.0.1:9000",
    A: "literal # not comment",
    B: "line\nbreak",
    C: "value",
  });
  assert.deepEqual(badLines, [7]);
});

Deno.test("resolveServeConfig() applies defaults", () => {
  const c = resolveServeConfig({}, {
    env: { VAST_API_KEY: "k" },
    home: "/home/u",
    readTextFile: files({}),
  });
  assert.equal(c.apiKey, "k");
  assert.equal(c.apiUrl, "https://console.vast.ai");
  assert.deepEqual(c.listen, { hostname: "127.0.0.1", port: 8080 });
  assert.equal(c.knownHosts, "/home/u/.local/state/vastproxy/known_hosts");
  assert.equal(c.policy, "cache-aware");
  assert.equal(c.pollIntervalMs, 10_000);
  assert.equal(c.healthIntervalMs, 5_000);
  assert.equal(c.maxBodyBytes, 32 * 1024 * 1024);
  assert.equal(c.drainTimeoutMs, 30_000);
  assert.equal(c.headerTimeoutMs, 10_000);
  assert.equal(c.idleTimeoutMs, 60_000);
  assert.equal(c.maxConnections, 4096);
  assert.equal(c.tui, false);
  assert.equal(c.logFormat, "text");
  assert.deepEqual(c.sshKeys, []);
  assert.equal(c.authToken, null);
  assert.equal(c.maxBufferedBytes, 256 * 1024 * 1024);
  assert.equal(c.bodyTimeoutMs, 30_000);
  assert.deepEqual(c.allowedHosts, []);
  assert.deepEqual(c.corsOrigins, []);
});

Deno.test("resolveServeConfig() reads the upload limits, --allowed-host and --cors-origin", () => {
  const sources = { env: { VAST_API_KEY: "k" }, home: "/h", readTextFile: files({}) };
  const c = resolveServeConfig({
    "max-buffered": "1GiB",
    "body-timeout": "2m",
    "allowed-host": ["GPU.lan", "proxy.example:8443", ".ts.net"],
    "cors-origin": ["http://localhost:3000/", "https://chat.example"],
  }, sources);
  assert.equal(c.maxBufferedBytes, 1024 ** 3);
  assert.equal(c.bodyTimeoutMs, 120_000);
  assert.deepEqual(c.allowedHosts, ["gpu.lan", "proxy.example:8443", ".ts.net"]);
  assert.deepEqual(c.corsOrigins, ["http://localhost:3000", "https://chat.example"]);
  const fromEnv = resolveServeConfig({}, {
    ...sources,
    env: {
      VAST_API_KEY: "k",
      VASTPROXY_ALLOWED_HOST: "a.lan, b.lan",
      VASTPROXY_CORS_ORIGIN: "http://localhost:3000,*",
    },
  });
  assert.deepEqual(fromEnv.allowedHosts, ["a.lan", "b.lan"]);
  assert.deepEqual(fromEnv.corsOrigins, ["http://localhost:3000", "*"]);

  usage(() => resolveServeConfig({ "max-buffered": "lots" }, sources), /--max-buffered/);
  usage(
    () => resolveServeConfig({ "max-buffered": "16MiB", "max-body": "32MiB" }, sources),
    /--max-buffered \(16MiB\) is smaller than --max-body \(32MiB\)/,
  );
  usage(() => resolveServeConfig({ "max-buffered": "16MiB" }, sources), /--max-body \(32MiB\)/);
  usage(() => resolveServeConfig({ "body-timeout": "0s" }, sources), /--body-timeout/);
  usage(
    () => resolveServeConfig({ "cors-origin": ["http://localhost:3000/chat"] }, sources),
    /--cors-origin: .* drop the path: http:\/\/localhost:3000/,
  );
  usage(
    () =>
      resolveServeConfig({}, { ...sources, env: { ...sources.env, VASTPROXY_CORS_ORIGIN: "x" } }),
    /VASTPROXY_CORS_ORIGIN: "x" is not an origin/,
  );
  usage(
    () => resolveServeConfig({ "allowed-host": ["http://gpu.lan"] }, sources),
    /--allowed-host: "http:\/\/gpu.lan" is not a host name/,
  );
});

Deno.test("resolveServeConfig() precedence is flag > env > .env > default", () => {
  const dotenv =
    "VASTPROXY_LISTEN=127.0.0.1:7000\nVASTPROXY_POLICY=round-robin\nVAST_API_KEY=fromfile\n";
  const read = files({ ".env": dotenv });
  // .env beats the default
  let c = resolveServeConfig({}, { env: {}, readTextFile: read, home: "/h" });
  assert.equal(c.listen.port, 7000);
  assert.equal(c.policy, "round-robin");
  assert.equal(c.apiKey, "fromfile");
  // env beats .env
  c = resolveServeConfig({}, {
    env: { VASTPROXY_LISTEN: "127.0.0.1:7001", VAST_API_KEY: "fromenv" },
    readTextFile: read,
    home: "/h",
  });
  assert.equal(c.listen.port, 7001);
  assert.equal(c.apiKey, "fromenv");
  // flag beats env
  c = resolveServeConfig({ listen: "127.0.0.1:7002", "api-key": "fromflag" }, {
    env: { VASTPROXY_LISTEN: "127.0.0.1:7001", VAST_API_KEY: "fromenv" },
    readTextFile: read,
    home: "/h",
  });
  assert.equal(c.listen.port, 7002);
  assert.equal(c.apiKey, "fromflag");
});

Deno.test("resolveServeConfig() reads an explicit --env-file and fails clearly when missing", () => {
  const c = resolveServeConfig({ "env-file": "/etc/vp.env" }, {
    env: {},
    readTextFile: files({ "/etc/vp.env": "VAST_API_KEY=x" }),
    home: "/h",
  });
  assert.equal(c.apiKey, "x");
  usage(
    () => resolveServeConfig({ "env-file": "/nope.env" }, { env: {}, readTextFile: files({}) }),
    /--env-file: cannot read \/nope\.env/,
  );
});

Deno.test("resolveServeConfig() usage errors name the flag or variable", () => {
  const env = { VAST_API_KEY: "k" };
  const read = files({});
  const cases: [Record<string, string | string[] | boolean>, Record<string, string>, RegExp][] = [
    [{}, {}, /--api-key KEY or set VAST_API_KEY/],
    [{ "poll-interval": "soon" }, env, /--poll-interval: "soon" is not a duration/],
    [{ "health-interval": "0s" }, env, /--health-interval/],
    [
      {},
      { ...env, VASTPROXY_LISTEN: "127.0.0.1:99999" },
      /VASTPROXY_LISTEN: "99999" is not a port/,
    ],
    [{ listen: "nohost" }, env, /--listen: expected HOST:PORT/],
    [{ "remote-port": "0" }, env, /--remote-port: "0" is not a port/],
    [
      { "ssh-key": ["/missing/key"] },
      env,
      /--ssh-key: cannot read SSH key \/missing\/key \(no such file\)/,
    ],
    [{}, { ...env, VASTPROXY_SSH_KEY: "/missing/a" }, /VASTPROXY_SSH_KEY: cannot read SSH key/],
    [
      { listen: "0.0.0.0:8080" },
      env,
      /--listen: refusing to listen on 0\.0\.0\.0 without --auth-token/,
    ],
    [{ policy: "random" }, env, /--policy: unknown policy "random"/],
    [{ "max-body": "lots" }, env, /--max-body: "lots" is not a size/],
    [{ "max-connections": "0" }, env, /--max-connections: "0" is not a connection count/],
    [{ "idle-timeout": "soon" }, env, /--idle-timeout: "soon" is not a duration/],
    [{ "log-format": "xml" }, env, /--log-format: "xml" is not text or json/],
    [{ instance: ["12", "abc"] }, env, /--instance: "abc" is not an instance id/],
    [{ "sticky-header": "bad header" }, env, /--sticky-header/],
    [{ "api-url": "ftp://x" }, env, /--api-url: "ftp:\/\/x" is not an http\(s\) URL/],
    [{ label: "pool", "mark-label": "live" }, env, /--mark-label cannot be combined with --label/],
    [{ "auth-token": " " }, env, /--auth-token: the token is empty/],
  ];
  for (const [flags, e, pattern] of cases) {
    usage(() => resolveServeConfig(flags, { env: e, readTextFile: read, home: "/h" }), pattern);
  }
});

Deno.test("resolveServeConfig() allows non-loopback listen with a token or --insecure-no-auth", () => {
  const env = { VAST_API_KEY: "k" };
  const read = files({});
  const a = resolveServeConfig({ listen: "0.0.0.0:8080", "auth-token": "t0ken" }, {
    env,
    readTextFile: read,
    home: "/h",
  });
  assert.equal(a.authToken, "t0ken");
  const b = resolveServeConfig({ listen: "0.0.0.0:8080", "insecure-no-auth": true }, {
    env,
    readTextFile: read,
    home: "/h",
  });
  assert.equal(b.listen.hostname, "0.0.0.0");
});

Deno.test("resolveServeConfig() parses repeatable and boolean flags", () => {
  const c = resolveServeConfig(
    {
      "ssh-key": ["~/.ssh/a", "/k/b"],
      instance: ["12", "34"],
      "insecure-host-keys": true,
      "ssh-native-crypto": true,
      "no-tui": true,
      "sticky-header": "X-Session-ID",
    },
    {
      env: { VAST_API_KEY: "k" },
      home: "/home/u",
      isTty: true,
      readTextFile: files({ "/home/u/.ssh/a": "key", "/k/b": "key" }),
    },
  );
  assert.deepEqual(c.sshKeys, ["/home/u/.ssh/a", "/k/b"]);
  assert.deepEqual(c.instances, [12, 34]);
  assert.equal(c.insecureHostKeys, true);
  assert.equal(c.sshNativeCrypto, true);
  assert.equal(c.tui, false);
  assert.equal(c.stickyHeader, "X-Session-ID");
  const tty = resolveServeConfig({}, {
    env: { VAST_API_KEY: "k" },
    isTty: true,
    readTextFile: files({}),
    home: "/h",
  });
  assert.equal(tty.tui, true);
  assert.equal(tty.sshNativeCrypto, false, "the JavaScript packet cipher is the default");
});

Deno.test("parseListen() and isLoopback() handle IPv4, IPv6 and names", () => {
  assert.deepEqual(parseListen("[::1]:9000", "--listen"), { hostname: "::1", port: 9000 });
  assert.deepEqual(parseListen(":9000", "--listen"), { hostname: "0.0.0.0", port: 9000 });
  assert.ok(isLoopback("127.0.0.2"));
  assert.ok(isLoopback("localhost"));
  assert.ok(isLoopback("::1"));
  assert.ok(!isLoopback("0.0.0.0"));
  assert.ok(!isLoopback("192.168.1.4"));
  assert.ok(!isLoopback("127.example.com"));
});

Deno.test("usage errors never echo the API key", () => {
  const secret = "sk-very-secret-key-123";
  try {
    resolveServeConfig({ "poll-interval": "x" }, {
      env: { VAST_API_KEY: secret },
      readTextFile: files({}),
    });
    assert.fail("should throw");
  } catch (err) {
    assert.ok(!String((err as Error).message).includes(secret));
  }
});

Deno.test("resolveServeConfig() without HOME names --known-hosts", () => {
  usage(
    () => resolveServeConfig({}, { env: { VAST_API_KEY: "k" }, readTextFile: files({}) }),
    /--known-hosts: cannot expand "~"/,
  );
});
