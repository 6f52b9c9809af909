/**
 * The live table on a real terminal: `vastproxy demo` runs inside a detached
 * tmux pane (160×40) on its own tmux server; the test reads the screen with
 * `capture-pane`, quits with `q` like a user, and checks the terminal is
 * handed back (alternate screen off, cursor visible). Skipped loudly without
 * tmux, except under CI=true, where .ci/run installs it and it must run.
 */
import assert from "node:assert/strict";
import type { StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { freePort } from "../_helpers/sshd.ts";

const ROOT = new URL("../..", import.meta.url).pathname;

function tmuxAvailable(): boolean {
  try {
    return new Deno.Command("tmux", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const hasTmux = tmuxAvailable();
const ci = Deno.env.get("CI") === "true";
if (!hasTmux) {
  const msg = "tmux not found: the live-table test cannot run (Debian: apt-get install tmux)";
  if (ci) throw new Error(`${msg}; CI=true requires it`);
  console.error(`\n*** SKIPPING tests/e2e/tui_tmux_test.ts: ${msg} ***\n`);
}

/** The `deno run` flags of the `demo` task in deno.json: its permissions and V8 flags. */
function demoTaskPermissions(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`));
  return String(config.tasks.demo).split(/\s+/).filter((w) =>
    w.startsWith("--allow-") || w.startsWith("--v8-flags=")
  );
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

Deno.test({
  name: "demo TUI in tmux: header and one row per instance, q quits and restores the terminal",
  ignore: !hasTmux,
  async fn() {
    // A private tmux server (-L) so the test never touches the user's sessions.
    const socket = `vastproxy-test-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    const tmux = async (...args: string[]) => {
      const out = await new Deno.Command("tmux", {
        args: ["-L", socket, ...args],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      if (!out.success) {
        throw new Error(`tmux ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
      }
      return text;
    };
    const port = freePort();
    const base = `http://127.0.0.1:${port}`;
    const demo = [
      Deno.execPath(),
      "run",
      ...demoTaskPermissions(),
      "main.ts",
      "demo",
      "--instances",
      "3",
      "--listen",
      `127.0.0.1:${port}`,
      "--health-interval",
      "300ms",
      "--poll-interval",
      "500ms",
    ].map(shellQuote).join(" ");
    // After the demo, the shell prints its exit code and idles so the pane
    // (and what the demo left on the screen) can still be read.
    const script = `cd ${shellQuote(ROOT)} && ${demo}; echo "demo exited: $?"; exec sleep 120`;
    const pane = "vp:0.0";
    const screen = () => tmux("capture-pane", "-p", "-t", pane);
    const fmt = (f: string) => tmux("display-message", "-p", "-t", pane, f).then((s) => s.trim());
    const until = async (what: string, check: () => Promise<boolean>, timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      while (!(await check())) {
        if (Date.now() > deadline) {
          throw new Error(`timed out waiting for ${what}; the screen:\n${await screen()}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    await tmux("new-session", "-d", "-s", "vp", "-x", "160", "-y", "40", script);
    try {
      await until("the live table", async () => (await fmt("#{alternate_on}")) === "1");
      let ids: number[] = [];
      await until("healthy 3/3 and a row per instance", async () => {
        try {
          const snap = await (await fetch(`${base}/vastproxy/status`)).json() as StatusSnapshot;
          ids = snap.backends.map((b) => b.id);
        } catch {
          return false; // not listening yet
        }
        const text = await screen();
        return /healthy 3\/3/.test(text) && ids.length === 3 &&
          ids.every((id) => text.split("\n").some((l) => l.includes(String(id))));
      });
      const text = await screen();
      assert.match(text.split("\n")[0], new RegExp(`^vastproxy \\S+\\s+127\\.0\\.0\\.1:${port}`));
      assert.match(text, /\bID\s+GPU\s+STATE\s+SSH\s+MODEL\b/);
      assert.ok(text.includes("🐇") && text.includes("🐢"), "both SSH paths shown");
      // The hints go to the log pane; nothing was printed over the table.
      assert.match(text, /curl -N --json '\{"model":/);
      assert.match(text.trimEnd().split("\n").at(-1)!, /q quit/);

      await tmux("send-keys", "-t", pane, "q");
      await until("the demo to exit", async () => /demo exited: 0/.test(await screen()), 10_000);
      assert.equal(await fmt("#{alternate_on}"), "0", "left the alternate screen");
      assert.equal(await fmt("#{cursor_flag}"), "1", "cursor visible again");
      assert.match(await screen(), /INFO\s+stopped/);
    } finally {
      await tmux("kill-server").catch(() => {});
    }
  },
});
