import assert from "node:assert/strict";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { makeInstanceRecord } from "../../lib/sim/fake_vast_api.ts";
import { parseInstances } from "../../lib/vast/schema.ts";

Deno.test("parseInstances() keeps the fixture and its unknown fields", () => {
  const logger = new MemoryLogger();
  const { records, skipped } = parseInstances([makeInstanceRecord()], logger);
  assert.equal(records.length, 1);
  assert.deepEqual(skipped, []);
  assert.equal(records[0].machine_id, 43973);
  assert.equal(logger.records.length, 0);
});

Deno.test("parseInstances() treats null as an empty listing", () => {
  assert.deepEqual(parseInstances(null, new MemoryLogger()), { records: [], skipped: [] });
});

Deno.test("parseInstances() skips bad records naming the instance and field path", () => {
  const logger = new MemoryLogger();
  const raw = [
    makeInstanceRecord({ id: 1 }),
    makeInstanceRecord({ id: 2, ports: { "22/tcp": [{ HostIp: "0.0.0.0" }] } }),
    makeInstanceRecord({ id: 3, ssh_host: null }),
    { actual_status: "running" },
    "not a record",
    makeInstanceRecord({ id: 6, actual_status: "loading", ssh_host: null, ssh_port: null }),
  ];
  const { records, skipped } = parseInstances(raw, logger);
  assert.deepEqual(records.map((r) => r.id), [1, 6]);
  assert.deepEqual(skipped.map((s) => [s.ref, s.field]), [
    ["2", "ports.22/tcp.0.HostPort"],
    ["3", "ssh_host"],
    ["#3", "id"],
    ["#4", "(record)"],
  ]);
  const lines = logger.text().split("\n");
  assert.equal(lines.length, 4);
  assert.match(lines[0], /^warn skipping vast.ai instance 2: field ports\.22\/tcp\.0\.HostPort/);
  assert.match(
    lines[1],
    /instance 3: field ssh_host is invalid \(required on a running instance\)/,
  );
});

Deno.test("parseInstances() accepts nullable fields vast leaves empty", () => {
  const { records } = parseInstances([
    makeInstanceRecord({
      id: 9,
      label: null,
      ports: null,
      onstart: null,
      extra_env: null,
      jupyter_token: null,
      dph_total: null,
      public_ipaddr: null,
    }),
  ], new MemoryLogger());
  assert.equal(records.length, 1);
});

Deno.test("parseInstances() keeps a record whose display-only fields have odd types", () => {
  const logger = new MemoryLogger();
  const { records, skipped } = parseInstances(
    [{ ...makeInstanceRecord(), num_gpus: 1.5, dph_total: "0.40", gpu_name: 4090, label: 7 }],
    logger,
  );
  assert.equal(skipped.length, 0);
  assert.equal(records.length, 1);
  assert.equal(records[0].num_gpus, null);
  assert.equal(records[0].dph_total, null);
  assert.equal(records[0].gpu_name, null);
  assert.equal(records[0].label, null);
  assert.equal(records[0].ssh_port, 19840);
});
