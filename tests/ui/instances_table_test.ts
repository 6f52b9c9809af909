import assert from "node:assert/strict";
import type { BackendSpec } from "../../lib/core/backend_spec.ts";
import { instancesJson, renderInstanceTable } from "../../lib/ui/instances_table.ts";

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

function rows(text: string): string[][] {
  return text.split("\n")
    .filter((l) => l.startsWith("│"))
    .map((l) => l.split("│").slice(1, -1).map((c) => c.trim()));
}

Deno.test("renderInstanceTable() renders one row per instance with the expected cells", () => {
  const out = renderInstanceTable([running, loading], { color: false, now: NOW });
  assert.deepEqual(rows(out), [
    ["id", "status", "label", "GPU × n", "$/h", "direct SSH", "proxy SSH", "engine", "port", "age"],
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
