import assert from "node:assert/strict";
import type { BackendSpec } from "../../lib/core/backend_spec.ts";
import { instancesJson, NO_INSTANCES, renderInstanceTable } from "../../lib/ui/instances_table.ts";

const TOKEN = "ebc1e4b9922bd49aacfb54bba36259c801f5c4d9edaace7576f9b1ecd067559d";
const NOW = 1_767_225_600_000 + 90 * 60_000;

const running: BackendSpec = {
  id: 25078234,
  status: "running",
  eligible: true,
  label: "llm-pool-a",
  displayName: "25078234 RTX 4090",
  gpuName: "RTX 4090",
  numGpus: 2,
  gpuLabel: "RTX 4090 ×2",
  dph: 0.8042,
  startedAt: 1_767_225_600_000,
  endpoints: [
    { host: "151.237.25.16", port: 29283, path: "direct" },
    { host: "ssh6.vast.ai", port: 19840, path: "proxy" },
    { host: "ssh6.vast.ai", port: 19841, path: "proxy" },
  ],
  remotePort: 18000,
  engine: "vllm",
  token: TOKEN,
  modelHint: "Qwen/Qwen3-8B",
};

const loading: BackendSpec = {
  ...running,
  id: 7,
  status: "loading",
  eligible: false,
  label: null,
  gpuLabel: "H100 ×1",
  dph: null,
  startedAt: null,
  endpoints: [{ host: "ssh2.vast.ai", port: 4000, path: "proxy" }],
  engine: "unknown",
  token: null,
};

/** Cells per line: columns are separated by at least two spaces (cells hold single ones). */
function rows(text: string): string[][] {
  return text.split("\n").map((l) => l.trim().split(/ {2,}/));
}

Deno.test("renderInstanceTable() renders one row per instance with the expected cells", () => {
  const out = renderInstanceTable([running, loading], { color: false, now: NOW });
  assert.deepEqual(rows(out), [
    ["ID", "STATUS", "LABEL", "GPU", "$/H", "DIRECT SSH", "PROXY SSH", "ENGINE", "PORT", "AGE"],
    [
      "25078234",
      "running",
      "llm-pool-a",
      "RTX 4090 ×2",
      "0.804",
      "151.237.25.16:29283",
      "ssh6.vast.ai:19840,19841",
      "vllm",
      "18000",
      "1h30m",
    ],
    ["7", "loading", "-", "H100 ×1", "-", "-", "ssh2.vast.ai:4000", "unknown", "18000", "-"],
  ]);
});

Deno.test("renderInstanceTable() aligns columns and fits the width it is given", () => {
  const lines = renderInstanceTable([running, loading], { color: false, now: NOW }).split("\n");
  assert.equal(lines.length, 3);
  // Right-aligned ids end in the same column; left-aligned columns start in one.
  const ends = lines.map((l) => l.search(/\d(?= {2})/) + 1);
  assert.equal(new Set(ends.slice(1)).size, 1, lines.join("\n"));
  const engineAt = lines.map((l) => l.search(/ENGINE|vllm|unknown/));
  assert.equal(new Set(engineAt).size, 1, lines.join("\n"));
  // Narrow: low-priority columns go, identity and SSH endpoints stay.
  const narrow = renderInstanceTable([running, loading], { color: false, now: NOW, width: 70 });
  for (const l of narrow.split("\n")) assert.ok(l.length <= 70, l);
  assert.match(narrow, /ID\s+STATUS\s.*DIRECT SSH\s+PROXY SSH/);
  assert.doesNotMatch(narrow, /AGE/);
});

Deno.test("renderInstanceTable() says so when there are no instances", () => {
  assert.equal(renderInstanceTable([], { color: false, now: NOW }), NO_INSTANCES);
});

Deno.test("renderInstanceTable() emits no ANSI codes when color is false", () => {
  const plain = renderInstanceTable([running, loading], { color: false, now: NOW });
  assert.equal(plain.includes("\x1b["), false);
  const colored = renderInstanceTable([running, loading], { color: true, now: NOW });
  assert.equal(colored.includes("\x1b[32mrunning"), true);
});

Deno.test("renderInstanceTable() never shows the instance token", () => {
  assert.equal(renderInstanceTable([running], { color: true, now: NOW }).includes(TOKEN), false);
});

Deno.test("instancesJson() has stable fields and no token", () => {
  const json = instancesJson([running, loading]);
  assert.deepEqual(json[0], {
    id: 25078234,
    status: "running",
    eligible: true,
    label: "llm-pool-a",
    gpuName: "RTX 4090",
    numGpus: 2,
    gpuLabel: "RTX 4090 ×2",
    dph: 0.8042,
    startedAt: 1_767_225_600_000,
    sshDirect: "151.237.25.16:29283",
    sshProxy: ["ssh6.vast.ai:19840", "ssh6.vast.ai:19841"],
    engine: "vllm",
    port: 18000,
    modelHint: "Qwen/Qwen3-8B",
  });
  assert.equal(json[1].sshDirect, null);
  const text = JSON.stringify(json);
  assert.equal(text.includes(TOKEN), false);
  assert.equal(/token/i.test(text), false);
});
