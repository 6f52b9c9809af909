import assert from "node:assert/strict";
import { makeInstanceRecord, VAST_INSTANCE_FIXTURE } from "../../lib/sim/fake_vast_api.ts";
import {
  detectRemotePort,
  formatAge,
  instanceSummary,
  parsePortalConfig,
  portalApiEntry,
  portFromArgs,
  resolveInstance,
  type ResolveOptions,
} from "../../lib/vast/instance.ts";
import { instanceRecordSchema } from "../../lib/vast/schema.ts";

/** A validated record: the fixture with overrides (undefined deletes a key). */
function record(overrides: Record<string, unknown> = {}) {
  const raw: Record<string, unknown> = makeInstanceRecord();
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete raw[k];
    else raw[k] = v;
  }
  return instanceRecordSchema.parse(raw);
}

function resolve(overrides: Record<string, unknown> = {}, opts: ResolveOptions = {}) {
  return resolveInstance(record(overrides), opts);
}

/** The fixture's extra_env with some keys replaced/added and others removed. */
function env(set: Record<string, string>, drop: string[] = []): [string, string][] {
  const base = (VAST_INSTANCE_FIXTURE.extra_env as [string, string][])
    .filter(([k]) => !(k in set) && !drop.includes(k));
  return [...base, ...Object.entries(set)];
}

Deno.test("resolveInstance() resolves the fixture record completely", () => {
  const spec = resolve();
  assert.deepEqual(spec, {
    id: 25078234,
    status: "running",
    eligible: true,
    label: "llm-pool-a",
    displayName: "25078234 RTX 4090",
    gpuName: "RTX 4090",
    numGpus: 1,
    gpuLabel: "RTX 4090 ×1",
    dph: 0.4021,
    startedAt: 1767225600123,
    endpoints: [
      { host: "151.237.25.16", port: 29283, path: "direct" },
      { host: "ssh6.vast.ai", port: 19840, path: "proxy" },
      { host: "ssh6.vast.ai", port: 19841, path: "proxy" },
    ],
    remotePort: 18000,
    engine: "vllm",
    token: "ebc1e4b9922bd49aacfb54bba36259c801f5c4d9edaace7576f9b1ecd067559d",
    modelHint: "Qwen/Qwen3-8B",
  });
});

const noDirect: [string, Record<string, unknown>][] = [
  ["ports null", { ports: null }],
  ["ports {}", { ports: {} }],
  ["ports absent", { ports: undefined }],
  ["no 22/tcp", { ports: { "8000/tcp": [{ HostIp: "0.0.0.0", HostPort: "29044" }] } }],
  ["empty 22/tcp list", { ports: { "22/tcp": [] } }],
  ["no public ip", { public_ipaddr: "  \n" }],
];
for (const [name, overrides] of noDirect) {
  Deno.test(`resolveInstance() has no direct endpoint when ${name}`, () => {
    const spec = resolve(overrides);
    assert.deepEqual(spec.endpoints.map((e) => `${e.path}:${e.host}:${e.port}`), [
      "proxy:ssh6.vast.ai:19840",
      "proxy:ssh6.vast.ai:19841",
    ]);
  });
}

Deno.test("resolveInstance() adds ssh_port+1 only for jupyter runtypes", () => {
  const ports = (runtype: string) =>
    resolve({ image_runtype: runtype }).endpoints.map((e) => e.port);
  assert.deepEqual(ports("jupyter_direc ssh_direc ssh_proxy"), [29283, 19840, 19841]);
  assert.deepEqual(ports("ssh_direc ssh_proxy"), [29283, 19840]);
  assert.deepEqual(ports("ssh_proxy"), [29283, 19840]);
});

Deno.test("resolveInstance() trims whitespace around public_ipaddr", () => {
  const spec = resolve({ public_ipaddr: " \t10.0.0.7 \n" });
  assert.deepEqual(spec.endpoints[0], { host: "10.0.0.7", port: 29283, path: "direct" });
});

Deno.test("resolveInstance() accepts extra_env as a dict", () => {
  const spec = resolve({
    extra_env: { SGLANG_MODEL: "meta/llama", SGLANG_ARGS: "--host 127.0.0.1 --port 30000" },
  });
  assert.equal(spec.engine, "sglang");
  assert.equal(spec.remotePort, 30000);
  assert.equal(spec.modelHint, "meta/llama");
});

Deno.test("resolveInstance() reads --port=N from engine args", () => {
  const spec = resolve({ extra_env: env({ VLLM_ARGS: "--max-model-len 8000 --port=8123" }) });
  assert.equal(spec.remotePort, 8123);
});

Deno.test("resolveInstance() reads --port N from onstart when env has none", () => {
  const spec = resolve({
    extra_env: env({ VLLM_ARGS: "--max-model-len 8000" }, ["PORTAL_CONFIG"]),
    onstart: "vllm serve Qwen/Qwen3-8B --port 9001 --host 127.0.0.1",
  });
  assert.equal(spec.remotePort, 9001);
});

Deno.test("resolveInstance() prefers engine args over onstart and PORTAL_CONFIG", () => {
  const spec = resolve({
    extra_env: env({ LLAMA_ARGS: "-m model.gguf --port 7000" }, ["VLLM_ARGS"]),
    onstart: "run --port 9001",
  });
  assert.equal(spec.remotePort, 7000);
});

Deno.test("resolveInstance() falls back to PORTAL_CONFIG's API entry", () => {
  const spec = resolve({
    extra_env: env({
      VLLM_ARGS: "--max-model-len 8000",
      PORTAL_CONFIG: "localhost:1111:11111:/:Instance Portal|localhost:8000:18888:/docs:vLLM API",
    }),
  });
  assert.equal(spec.remotePort, 18888);
});

Deno.test("resolveInstance() detects Ollama records as port 11434", () => {
  const viaPortal = resolve({
    extra_env: [
      ["OLLAMA_MODEL", "llama3.1:8b"],
      [
        "PORTAL_CONFIG",
        "localhost:1111:11111:/:Instance Portal|localhost:21434:11434:/:Ollama API",
      ],
    ],
  });
  assert.equal(viaPortal.remotePort, 11434);
  assert.equal(viaPortal.engine, "unknown");
  const envOnly = resolve({ extra_env: [["OLLAMA_HOST", "127.0.0.1"]] });
  assert.equal(envOnly.remotePort, 11434);
});

Deno.test("resolveInstance() defaults to port 18000 and engine unknown without hints", () => {
  const spec = resolve({ extra_env: [["-p 8000:8000", "1"], ["JUPYTER_DIR", "/"]], onstart: null });
  assert.equal(spec.remotePort, 18000);
  assert.equal(spec.engine, "unknown");
  assert.equal(spec.modelHint, null);
});

Deno.test("resolveInstance() --remote-port overrides detection", () => {
  assert.equal(resolve({}, { remotePort: 5555 }).remotePort, 5555);
});

Deno.test("resolveInstance() tolerates missing optional fields", () => {
  const spec = resolveInstance(
    instanceRecordSchema.parse({ id: 7, actual_status: null }),
    {},
  );
  assert.deepEqual(spec, {
    id: 7,
    status: "unknown",
    eligible: false,
    label: null,
    displayName: "7 unknown GPU",
    gpuName: "unknown GPU",
    numGpus: 0,
    gpuLabel: "unknown GPU",
    dph: null,
    startedAt: null,
    endpoints: [],
    remotePort: 18000,
    engine: "unknown",
    token: null,
    modelHint: null,
  });
});

Deno.test("resolveInstance() labels multi-GPU instances as ×n", () => {
  assert.equal(resolve({ gpu_name: "H100 SXM", num_gpus: 8 }).gpuLabel, "H100 SXM ×8");
});

Deno.test("resolveInstance() eligibility: running and passing --label / --instance", () => {
  assert.equal(resolve({ actual_status: "loading" }).eligible, false);
  assert.equal(resolve({ actual_status: "stopped" }).status, "stopped");
  assert.equal(resolve({}, { label: "llm-pool-a" }).eligible, true);
  assert.equal(resolve({}, { label: "other" }).eligible, false);
  assert.equal(resolve({ label: null }, { label: "llm-pool-a" }).eligible, false);
  assert.equal(resolve({}, { instances: [1, 25078234] }).eligible, true);
  assert.equal(resolve({}, { instances: [1] }).eligible, false);
  assert.equal(resolve({}, { instances: [] }).eligible, true);
  assert.equal(resolve({ label: "" }).label, null);
});

Deno.test("portFromArgs() matches only a whole --port option", () => {
  assert.equal(portFromArgs("--port 18000"), 18000);
  assert.equal(portFromArgs("a --port=8001 b"), 8001);
  assert.equal(portFromArgs("--port-range 9000"), null);
  assert.equal(portFromArgs("--port 99999"), null);
  assert.equal(portFromArgs("--port 8000; echo hi"), 8000);
  assert.equal(portFromArgs(null), null);
});

Deno.test("portalApiEntry() picks the engine/API entry, never Jupyter or the portal", () => {
  const fixturePortal = (VAST_INSTANCE_FIXTURE.extra_env as [string, string][])
    .find(([k]) => k === "PORTAL_CONFIG")![1];
  const entries = parsePortalConfig(fixturePortal);
  assert.equal(entries.length, 5);
  assert.deepEqual(portalApiEntry(entries), {
    host: "localhost",
    external: 8000,
    internal: 18000,
    path: "/docs",
    name: "vLLM API",
  });
  const unnamed = parsePortalConfig("localhost:8080:18080:/:Jupyter|localhost:8000:17000:/:Model");
  assert.equal(portalApiEntry(unnamed)?.internal, 17000);
  assert.equal(portalApiEntry(parsePortalConfig("localhost:8080:18080:/:Jupyter")), null);
});

Deno.test("detectRemotePort() ignores a PORTAL_CONFIG with no API entry", () => {
  const rec = record({ extra_env: [["PORTAL_CONFIG", "localhost:1111:11111:/:Instance Portal"]] });
  assert.equal(detectRemotePort(rec), 18000);
});

Deno.test("instanceSummary() formats display cells", () => {
  const spec = resolve();
  const s = instanceSummary(spec, spec.startedAt! + (3 * 3600 + 5 * 60) * 1000);
  assert.deepEqual(s, {
    id: "25078234",
    status: "running",
    label: "llm-pool-a",
    gpu: "RTX 4090 ×1",
    dph: "0.402",
    direct: "151.237.25.16:29283",
    proxy: "ssh6.vast.ai:19840,19841",
    engine: "vllm",
    port: "18000",
    age: "3h05m",
  });
  assert.equal(instanceSummary(resolve({}, { label: "x" }), 0).status, "running (filtered)");
});

Deno.test("formatAge() picks a readable unit", () => {
  assert.equal(formatAge(45_000), "45s");
  assert.equal(formatAge(12 * 60_000), "12m");
  assert.equal(formatAge((2 * 24 + 4) * 3_600_000), "2d04h");
  assert.equal(formatAge(-5), "0s");
});
