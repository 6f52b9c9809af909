import assert from "node:assert/strict";
import type { BackendSnapshot, StatusSnapshot } from "../../lib/proxy/snapshot.ts";
import { displayWidth, stripAnsi, truncate } from "../../lib/ui/ansi.ts";
import {
  bar,
  EMPTY_FLEET_MESSAGE,
  formatLatency,
  renderPlainTable,
  renderStatus,
} from "../../lib/ui/table.ts";
import { formatDuration } from "../../lib/cli/units.ts";

const NOW = 1_800_000_000_000;

function backend(id: number, over: Partial<BackendSnapshot> = {}): BackendSnapshot {
  return {
    id,
    name: `${id} H100`,
    state: "healthy",
    stateSince: NOW - 192_000,
    reason: null,
    vastStatus: "running",
    ssh: "direct",
    endpoint: "203.0.113.7:40022",
    engine: "sglang",
    models: ["meta-llama/Llama-3.1-70B-Instruct"],
    port: 18000,
    gpuLabel: "H100 SXM ×2",
    inFlight: 3,
    requests: 1234,
    errors: 0,
    latencyMs: { p50: 420, p99: 1900 },
    gpus: [
      {
        index: 0,
        name: "NVIDIA H100",
        utilization: 62,
        memoryUsed: 41234,
        memoryTotal: 81559,
        temperature: 54,
        powerDraw: 312.45,
      },
    ],
    gpuStale: false,
    dph: 2.41,
    drained: false,
    ...over,
  };
}

function snapshot(backends: BackendSnapshot[], over: Partial<StatusSnapshot> = {}): StatusSnapshot {
  return {
    version: "0.1.0",
    listen: "127.0.0.1:8080",
    policy: "least-inflight",
    time: NOW,
    startedAt: NOW - 3_720_000,
    counts: {
      total: backends.length,
      healthy: backends.filter((b) => b.state === "healthy").length,
      inFlight: 3,
      requests: 5000,
      errors: 2,
    },
    dph: backends.reduce((a, b) => a + (b.dph ?? 0), 0),
    apiError: null,
    backends,
    ...over,
  };
}

const MIXED = snapshot([
  backend(25078234),
  backend(25078235, { state: "unhealthy", ssh: "proxy", models: ["a", "b", "c"] }),
  backend(25078236, { state: "connecting", ssh: null, models: [], gpus: [], dph: null }),
  backend(25078237, { state: "draining", drained: true }),
  backend(25078238, { state: "hostkey-mismatch", reason: "host key changed" }),
  backend(25078239, { state: "removed", latencyMs: { p50: null, p99: null } }),
  backend(25078240, {
    state: "discovered",
    gpuLabel: "RTX 4090 ×8 with an absurdly long label",
    models: ["Qwen/Qwen2.5-Coder-32B-Instruct-AWQ-some-very-long-suffix"],
  }),
], { apiError: "429 Too Many Requests (retrying in 8s)" });

const LOGS = Array.from(
  { length: 30 },
  (_, i) => `18:11:${String(i).padStart(2, "0")} INFO  request done id=25078234 status=200 ms=${i}`,
);

Deno.test("displayWidth() counts emoji as two columns and escapes as none", () => {
  assert.equal(displayWidth("🐇"), 2);
  assert.equal(displayWidth("a🐢b"), 4);
  assert.equal(displayWidth("\x1b[32mok\x1b[39m"), 2);
  assert.equal(displayWidth("…×▇░"), 4);
});

Deno.test("truncate() ends with … and never splits an emoji over the limit", () => {
  assert.equal(truncate("abcdef", 4), "abc…");
  assert.equal(truncate("abc", 4), "abc");
  assert.equal(truncate("a🐇🐇", 4), "a🐇…");
  assert.equal(displayWidth(truncate("🐇🐇🐇", 4)), 3);
  assert.ok(truncate("\x1b[31mabcdef\x1b[39m", 3).endsWith("…\x1b[0m"));
});

Deno.test("formatDuration(), formatLatency() and bar() are compact", () => {
  assert.equal(formatDuration(45_000), "45s");
  assert.equal(formatDuration(192_000), "3m12s");
  assert.equal(formatDuration(7_500_000), "2h05m");
  assert.equal(formatDuration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
  assert.equal(formatLatency(87), "87ms");
  assert.equal(formatLatency(1234), "1.2s");
  assert.equal(formatLatency(null), "-");
  assert.equal(bar(62), "▇▇▇░░  62%");
  assert.equal(bar(100), "▇▇▇▇▇ 100%");
});

for (const width of [60, 100, 160]) {
  for (const color of [false, true]) {
    Deno.test(`renderStatus() keeps every line within ${width} columns (color ${color})`, () => {
      const lines = renderStatus(MIXED, {
        width,
        height: 40,
        color,
        now: NOW,
        selected: 25078235,
        logLines: LOGS,
        rps: 12.3,
      });
      // Header (2), table header, at least one row, footer: never an empty screen.
      assert.ok(lines.length >= 5, `${lines.length} lines`);
      for (const l of lines) {
        assert.ok(displayWidth(l) <= width, `${displayWidth(l)} > ${width}: ${l}`);
      }
      assert.ok(lines.length <= 40);
    });
  }
}

Deno.test("renderStatus() truncates long cells with … at a narrow width", () => {
  const text = renderStatus(MIXED, { width: 100, color: false, now: NOW }).join("\n");
  assert.match(text, /…/);
  assert.doesNotMatch(text, /some-very-long-suffix/);
});

Deno.test("renderStatus() without colour emits no escape at all", () => {
  const lines = renderStatus(MIXED, {
    width: 160,
    color: false,
    now: NOW,
    selected: 25078234,
    logLines: LOGS,
    prompt: "Destroy?",
  });
  assert.ok(!lines.join("\n").includes("\x1b"));
  assert.ok(
    !renderStatus(MIXED, { width: 160, color: false, now: NOW, help: true }).join("")
      .includes("\x1b"),
  );
});

Deno.test("renderStatus() colours states when colour is on", () => {
  const text = renderStatus(MIXED, { width: 160, color: true, now: NOW }).join("\n");
  assert.ok(text.includes("\x1b[32mhealthy"));
  assert.ok(text.includes("\x1b[31munhealthy"));
  assert.ok(text.includes("\x1b[33mconnecting"));
  assert.ok(text.includes("\x1b[35mdraining"));
  assert.ok(text.includes("\x1b[1;31mhostkey-mismatch"));
  assert.ok(text.includes("\x1b[2mremoved"));
});

Deno.test("renderStatus() shows the header, icons, models and API error", () => {
  const text = renderStatus(MIXED, { width: 160, color: false, now: NOW, rps: 12.34 }).join("\n");
  assert.match(text, /127\.0\.0\.1:8080/);
  assert.match(text, /healthy 1\/7/);
  assert.match(text, /12\.3 req\/s/);
  assert.match(text, /in-flight 3/);
  assert.match(text, /fleet \$14\.46\/h/);
  assert.match(text, /vast API: 429 Too Many Requests/);
  assert.match(text, /🐇/);
  assert.match(text, /🐢/);
  assert.match(text, /hostkey-mismatch/);
  assert.match(text, /a \+2/);
  assert.match(text, /3m12s/);
  assert.match(text, /▇▇▇░░ {2}62%/);
  assert.match(text, /\$2\.41/);
  assert.match(text, /420ms/);
});

Deno.test("renderStatus() marks the selected row with > and inverse", () => {
  const plain = renderStatus(MIXED, { width: 160, color: false, now: NOW, selected: 25078236 });
  const marked = plain.filter((l) => l.startsWith(">"));
  assert.equal(marked.length, 1);
  assert.match(marked[0], /25078236/);
  const coloured = renderStatus(MIXED, { width: 160, color: true, now: NOW, selected: 25078236 });
  const inv = coloured.filter((l) => l.startsWith("\x1b[7m"));
  assert.equal(inv.length, 1);
  assert.match(stripAnsi(inv[0]), /25078236/);
});

Deno.test("renderStatus() shows the empty-fleet message", () => {
  const lines = renderStatus(snapshot([]), { width: 80, height: 24, color: false, now: NOW });
  assert.ok(lines.some((l) => l.includes(EMPTY_FLEET_MESSAGE)));
  assert.match(lines.join("\n"), /healthy 0\/0/);
});

Deno.test("renderStatus() fits 50 instances into the height, keeping the selection and logs", () => {
  const many = snapshot(Array.from({ length: 50 }, (_, i) => backend(30_000_000 + i)));
  const lines = renderStatus(many, {
    width: 100,
    height: 24,
    color: false,
    now: NOW,
    selected: 30_000_040,
    logLines: LOGS,
  });
  assert.equal(lines.length, 24);
  const text = lines.join("\n");
  assert.match(text, /30000040/);
  assert.match(text, /… \d+ more/);
  assert.match(text, /ms=29/); // the newest log line is kept
  assert.match(lines[23], /q quit/);
  // Without a height every row is rendered.
  const all = renderStatus(many, { width: 100, color: false, now: NOW });
  assert.equal(all.filter((l) => /3000\d{4}/.test(l)).length, 50);
});

Deno.test("renderStatus() shows the prompt in the footer and the help overlay", () => {
  const lines = renderStatus(MIXED, {
    width: 100,
    height: 30,
    color: false,
    now: NOW,
    prompt: "Destroy instance 25078234? [y/N]",
  });
  assert.match(lines.at(-1)!, /Destroy instance 25078234\? \[y\/N\]/);
  const help = renderStatus(MIXED, { width: 100, height: 30, color: false, now: NOW, help: true });
  assert.match(help.join("\n"), /destroy it on vast\.ai/);
  assert.doesNotMatch(help.join("\n"), /25078235/);
});

Deno.test("renderPlainTable() prints every instance with the same columns", () => {
  const lines = renderPlainTable(MIXED, { color: false, now: NOW, width: 200 });
  const text = lines.join("\n");
  assert.ok(!text.includes("\x1b"));
  assert.match(text, /ID\s+GPU\s+STATE\s+SSH\s+MODEL/);
  assert.equal(lines.filter((l) => /2507823\d|25078240/.test(l)).length, 7);
  const narrow = renderPlainTable(MIXED, { color: true, now: NOW, width: 80 });
  assert.equal(narrow.length, lines.length);
  for (const l of narrow) {
    assert.ok(displayWidth(l) <= 80);
  }
  assert.match(
    renderPlainTable(snapshot([]), { color: false, now: NOW }).join("\n"),
    /no instances yet/,
  );
});

Deno.test("renderPlainTable() shows engine queue, KV%, TTFT and TOK/S; narrow tables drop them first", () => {
  const snap = snapshot([
    backend(1, {
      engineLoad: {
        running: 12,
        waiting: 3,
        kvCacheUsage: 0.456,
        prefixHitRate: 0.5,
        stale: false,
      },
      llm: { ttftP50Ms: 180, itlP50Ms: 20, tokensPerSec: 61.4, outputTokens: 900 },
    }),
    backend(2, { engineLoad: null }),
  ]);
  const [, , header, row1, row2] = renderPlainTable(snap, { color: false, now: NOW, width: 200 });
  for (const title of ["TTFT", "TOK/S", "Q", "KV%"]) {
    assert.ok(header.split(/\s+/).includes(title), title);
  }
  for (const cell of ["12/3", "46%", "180ms", "61"]) {
    assert.ok(row1.split(/\s+/).includes(cell), cell);
  }
  assert.ok(row2.split(/\s+/).filter((c) => c === "-").length >= 4, "unknown shows dashes");
  const narrow = renderPlainTable(snap, { color: false, now: NOW, width: 100 });
  assert.ok(!narrow[2].includes("TOK/S") && !narrow[2].includes("KV%"));
  assert.ok(narrow[2].includes("P50"), "older columns stay");
});

Deno.test("renderStatus() shows the admission queue's depth in the header when there is one", () => {
  const without = renderStatus(MIXED, { width: 160, color: false, now: NOW }).join("\n");
  assert.doesNotMatch(without, /queued/);
  const withQueue = renderStatus(
    { ...MIXED, queue: { depth: 4, rejected: 1, timedOut: 0 } },
    { width: 160, color: false, now: NOW },
  ).join("\n");
  assert.match(withQueue, /in-flight 3 {2}queued 4 {2}requests/);
});
