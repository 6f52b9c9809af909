/**
 * Terminal safety (issue #12, item 4): strings an instance, an engine or the
 * vast API chose reach every terminal sink — live table, log pane, text
 * logs, `vastproxy status`, `vastproxy list` — without control or escape
 * sequences, while `--json` and the JSON log keep the exact value.
 *
 * A real proxy (`startProxy`) serves engines whose model id, and a fake vast
 * API whose label and GPU name, carry a window-title OSC, a clear-screen CSI
 * and a bidi override; everything below renders through the real code.
 */
import assert from "node:assert/strict";
import { memoryIo } from "../../lib/cli/cli_io.ts";
import { runCli } from "../../lib/cli/cli.ts";
import { statusCommand } from "../../lib/commands/status.ts";
import { TERM } from "../../lib/ui/ansi.ts";
import { LiveUI, UiLogBuffer } from "../../lib/ui/live.ts";
import { LineLogger } from "../../lib/ui/log.ts";
import { LOCAL_API_KEY, startLocalProxy, until } from "./_local_proxy.ts";

const EVIL = "\x1b]0;pwned\x07\x1b[2J";
const MODEL = `Qwen/${EVIL}Qwen3-8B\u202e`;
const LABEL = `pool-${EVIL}a`;
const GPU = `RTX ${EVIL}4090`;

/**
 * What is left of `text` once the sequences the renderers emit on purpose
 * (screen control, SGR colours, the live screen's CRLF line ends) are taken
 * out: it must hold no ESC, BEL, CR, C1 or bidi control, and nothing of the
 * payload (JSON may show the payload as escaped, inert text).
 */
function assertNoHostileBytes(what: string, text: string, opts: { json?: boolean } = {}): void {
  let rest = text;
  for (const seq of Object.values(TERM)) rest = rest.replaceAll(seq, "");
  // deno-lint-ignore no-control-regex
  rest = rest.replace(/\x1b\[[0-9;]*m/g, "").replaceAll("\r\n", "\n");
  // deno-lint-ignore no-control-regex
  const bad = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/.exec(rest);
  assert.equal(bad, null, `${what}: raw control at …${JSON.stringify(rest.slice(bad?.index))}`);
  // JSON keeps the exact value, escaped (`\u001b]0;pwned\u0007`): inert text.
  if (!opts.json) assert.ok(!rest.includes("pwned"), `${what}: the OSC payload leaked`);
}

/** Bytes written to a terminal, as text. */
function captureTerminal(columns: number) {
  const frames: string[] = [];
  return {
    frames,
    writer: {
      write(p: Uint8Array) {
        frames.push(new TextDecoder().decode(p));
        return p.length;
      },
      columns: () => ({ columns, rows: 30 }),
    },
  };
}

Deno.test("terminal safety: hostile model id, label and GPU name never reach a terminal raw", async () => {
  const lp = await startLocalProxy({
    instances: 2,
    model: MODEL,
    record: { label: LABEL, gpu_name: GPU },
  });
  try {
    await until(
      "both backends healthy with the hostile model",
      () => lp.proxy.status().backends.filter((b) => b.models.includes(MODEL)).length === 2,
    );
    // Some traffic, so the request log has lines too.
    const res = await fetch(`${lp.proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, messages: [] }),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();

    // Live table and log pane, with and without colour.
    for (const color of [false, true]) {
      const term = captureTerminal(220);
      const logBuffer = new UiLogBuffer();
      for (const r of lp.logger.records) logBuffer.log(r.level, r.msg, r.fields);
      logBuffer.log("warn", `engine said ${EVIL}`, { model: MODEL, gpu: GPU });
      const ui = new LiveUI({
        stdout: term.writer,
        stdin: null,
        snapshot: () => lp.proxy.status(),
        actions: {
          drainToggle() {},
          reconnect() {},
          abortAll() {},
          destroy: () => Promise.resolve(),
          quit() {},
        },
        color,
        logBuffer,
      });
      const done = ui.start();
      await until("a frame", () => term.frames.length >= 2);
      ui.stop();
      await done;
      const screen = term.frames.join("");
      assertNoHostileBytes(`live table (color ${color})`, screen);
      assert.match(screen, /Qwen\/Qwen3-8B/, "the model is shown, minus its escapes");
      assert.match(screen, /RTX 4090/);
      assert.match(screen, /engine said/);
    }

    // Headless text log: every record the run produced, plus a hostile one.
    const records = [...lp.logger.records, {
      time: Date.now(),
      level: "warn" as const,
      msg: `engine said ${EVIL}`,
      fields: { model: MODEL },
    }];
    const text = new LineLogger({ writer: { write: (p) => p.length } });
    assertNoHostileBytes("text log", records.map((r) => text.format(r)).join("\n"));
    // JSON log: the exact value, escaped by JSON, nothing raw.
    const json = new LineLogger({ writer: { write: (p) => p.length }, format: "json" });
    const line = json.format(records.at(-1)!);
    assertNoHostileBytes("JSON log", line, { json: true });
    assert.equal(JSON.parse(line).model, MODEL);

    // `vastproxy status`: the table is clean, --json keeps the exact values.
    for (const isTty of [false, true]) {
      const io = memoryIo({ isTty });
      assert.equal(await statusCommand({ url: lp.proxy.url }, io, { columns: 220 }), 0);
      assertNoHostileBytes(`status (tty ${isTty})`, io.stdout());
      assert.match(io.stdout(), /Qwen\/Qwen3-8B/);
    }
    const io = memoryIo();
    assert.equal(await statusCommand({ url: lp.proxy.url, json: true }, io), 0);
    assertNoHostileBytes("status --json", io.stdout(), { json: true });
    const status = JSON.parse(io.stdout());
    assert.deepEqual(status.backends.map((b: { models: string[] }) => b.models), [
      [MODEL],
      [MODEL],
    ]);
    assert.ok(status.backends.every((b: { gpuLabel: string }) => b.gpuLabel.startsWith(GPU)));

    // `vastproxy list`: same rule for the vast API's own strings.
    for (const isTty of [false, true]) {
      const out = memoryIo({ env: { HOME: "/h" }, isTty });
      const args = ["list", "--api-url", lp.api.url, "--api-key", LOCAL_API_KEY];
      assert.equal(await runCli(args, out), 0, out.stderr());
      assertNoHostileBytes(`list (tty ${isTty})`, out.stdout());
      assert.match(out.stdout(), /pool-a/);
    }
    const out = memoryIo({ env: { HOME: "/h" } });
    const args = ["list", "--json", "--api-url", lp.api.url, "--api-key", LOCAL_API_KEY];
    assert.equal(await runCli(args, out), 0, out.stderr());
    assertNoHostileBytes("list --json", out.stdout(), { json: true });
    const rows = JSON.parse(out.stdout());
    assert.deepEqual(rows.map((r: { label: string }) => r.label), [LABEL, LABEL]);
    assert.deepEqual(rows.map((r: { gpuName: string }) => r.gpuName), [GPU, GPU]);
  } finally {
    await lp.close();
  }
});

Deno.test("terminal safety: an API error quoting hostile text is printed clean by list", async () => {
  // A vast error body is quoted in the message (after HTML is stripped).
  const api = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => Response.json({ msg: `maintenance ${EVIL}window` }, { status: 401 }),
  );
  try {
    const io = memoryIo({ env: { HOME: "/h" } });
    const url = `http://127.0.0.1:${api.addr.port}`;
    const code = await runCli(["list", "--api-url", url, "--api-key", LOCAL_API_KEY], io);
    assert.equal(code, 2);
    assertNoHostileBytes("list error", io.stderr());
    assert.match(io.stderr(), /maintenance/);
  } finally {
    await api.shutdown();
  }
});
