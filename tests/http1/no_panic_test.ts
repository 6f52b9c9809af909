/**
 * No engine byte can crash the proxy (issue #10): every byte value in every
 * position of a response head (reason, field name, field value, a
 * hop-by-hop list, a 204's head) and of chunked framing (extension,
 * trailer) goes through the relay and a real Deno.serve in a child process,
 * since a Deno.serve panic exits the process it happens in. The child must
 * exit cleanly with every client answered and no request seen twice.
 */
import assert from "node:assert/strict";

Deno.test("no byte in any position of an engine's response crashes Deno.serve", async () => {
  const child = new URL("../_helpers/hostile_serve_child.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net=127.0.0.1", "--allow-read", "--allow-env", child],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `child exited ${out.code} (a panic?):\n${stderr.slice(-2000)}`);
  const summary = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
  assert.equal(summary.bad.length, 0, summary.bad.join("\n"));
  assert.deepEqual(summary.twice, []);
  assert.equal(summary.inFlight, 0);
  const answered = Object.values(summary.statuses as Record<string, number>).reduce((a, b) =>
    a + b
  );
  assert.equal(answered, summary.cases);
});
