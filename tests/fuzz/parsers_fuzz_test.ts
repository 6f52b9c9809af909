/**
 * Property tests (fast-check) for everything that parses text or records from
 * outside: vast.ai instance records, nvidia-smi output, durations and sizes.
 * Whatever arrives, the parsers return a value or a clean "no" — they never
 * throw, and what they return is well-formed.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { nullLogger } from "../../lib/core/logger.ts";
import { makeInstanceRecord } from "../../lib/sim/fake_vast_api.ts";
import { parseNvidiaSmi } from "../../lib/tunnel/gpu.ts";
import { formatDuration, parseDuration, parseSize } from "../../lib/cli/units.ts";
import { resolveInstance } from "../../lib/vast/instance.ts";
import { parseInstances } from "../../lib/vast/schema.ts";

const RUNS = { numRuns: 300 };

/** Values of the kinds JSON can carry, biased towards the shapes vast uses. */
const jsonish = fc.oneof(
  { depthSize: "small" },
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double(),
  fc.string(),
  fc.constantFrom("running", "22/tcp", " 1.2.3.4\n", "--port 8000", "jupyter_direc ssh_proxy"),
  fc.array(fc.oneof(fc.string(), fc.integer(), fc.constant(null)), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string(), fc.integer()), {
    maxKeys: 3,
  }),
);

/** A realistic record with random fields replaced, deleted or added. */
const mutatedRecord = fc.record({
  replace: fc.dictionary(
    fc.constantFrom(
      "id",
      "actual_status",
      "label",
      "public_ipaddr",
      "ports",
      "ssh_host",
      "ssh_port",
      "image_runtype",
      "extra_env",
      "onstart",
      "jupyter_token",
      "gpu_name",
      "num_gpus",
      "dph_total",
      "start_date",
    ),
    jsonish,
    { maxKeys: 4 },
  ),
  extraEnv: fc.array(
    fc.oneof(
      fc.tuple(fc.constantFrom("VLLM_ARGS", "SGLANG_ARGS", "PORTAL_CONFIG", "X"), fc.string()),
      fc.array(jsonish, { maxLength: 3 }),
    ),
    { maxLength: 4 },
  ),
  portEntry: fc.oneof(fc.string(), fc.integer(), fc.constant(null)),
}).map(({ replace, extraEnv, portEntry }) => {
  const rec: Record<string, unknown> = makeInstanceRecord({
    extra_env: extraEnv,
    ports: { "22/tcp": [{ HostIp: "0.0.0.0", HostPort: portEntry }] },
  });
  for (const [k, v] of Object.entries(replace)) {
    if (v === undefined) delete rec[k];
    else rec[k] = v;
  }
  return rec;
});

Deno.test("fuzz: parseInstances + resolveInstance never throw and produce sane specs", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(mutatedRecord, jsonish), { maxLength: 5 }),
      fc.option(fc.integer({ min: 1, max: 65535 })),
      (raw, remotePort) => {
        const { records, skipped } = parseInstances(raw, nullLogger);
        assert.equal(records.length + skipped.length, raw.length);
        for (const r of records) {
          const spec = resolveInstance(r, { remotePort, label: null, instances: [] });
          assert.ok(Number.isSafeInteger(spec.id) && spec.id > 0);
          assert.ok(Number.isInteger(spec.remotePort));
          assert.ok(spec.remotePort >= 1 && spec.remotePort <= 65535, `${spec.remotePort}`);
          for (const e of spec.endpoints) {
            assert.ok(e.host.length > 0 && e.host === e.host.trim());
            assert.ok(Number.isInteger(e.port) && e.port >= 1 && e.port <= 65535);
          }
          assert.ok(spec.eligible === false || spec.status === "running");
          assert.ok(spec.dph === null || Number.isFinite(spec.dph));
          // Specs are diffed as JSON text: no value may be lost on the way (NaN, Infinity).
          const text = JSON.stringify(spec);
          assert.equal(JSON.stringify(JSON.parse(text)), text);
          assert.ok(spec.startedAt === null || Number.isFinite(spec.startedAt));
        }
      },
    ),
    RUNS,
  );
  // Shapes the fuzzer may not reach: a null list, a non-object, a huge id.
  assert.deepEqual(parseInstances(null, nullLogger).records, []);
  assert.equal(parseInstances([42, "x", [], { id: 2 ** 60 }], nullLogger).skipped.length, 4);
});

Deno.test("fuzz: parseNvidiaSmi never throws; every GPU it returns is well-formed", () => {
  const field = fc.oneof(
    fc.integer({ min: -5, max: 100_000 }).map(String),
    fc.double({ min: 0, max: 1e6, noNaN: true }).map((d) => d.toFixed(2)),
    fc.constantFrom("[N/A]", "[Not Supported]", "", " ", "NVIDIA H100 80GB HBM3", "1e400"),
    fc.constant("9".repeat(400)),
    fc.string({ maxLength: 12 }),
  );
  const line = fc.array(field, { minLength: 0, maxLength: 9 }).map((f) => f.join(", "));
  fc.assert(
    fc.property(fc.array(line, { maxLength: 6 }), fc.constantFrom("\n", "\r\n"), (lines, nl) => {
      const gpus = parseNvidiaSmi(lines.join(nl));
      assert.ok(gpus.length <= lines.length);
      for (const g of gpus) {
        assert.ok(Number.isSafeInteger(g.index) && g.index >= 0, `index ${g.index}`);
        for (const v of [g.utilization, g.memoryUsed, g.memoryTotal, g.temperature, g.powerDraw]) {
          assert.ok(v === null || Number.isFinite(v), `value ${v}`);
        }
        assert.equal(typeof g.name, "string");
      }
    }),
    RUNS,
  );
});

Deno.test("fuzz: parseDuration and parseSize return a finite non-negative integer or undefined", () => {
  const durationish = fc.oneof(
    fc.string({ maxLength: 12 }),
    fc.array(
      fc.tuple(
        fc.oneof(fc.nat({ max: 10_000 }).map(String), fc.constant("9".repeat(400))),
        fc.constantFrom("ms", "s", "m", "h", "", "d", "M", "S", "constructor"),
      ).map(([n, u]) => n + u),
      { minLength: 1, maxLength: 4 },
    ).map((parts) => parts.join("")),
  );
  fc.assert(
    fc.property(durationish, (text) => {
      for (const v of [parseDuration(text), parseSize(text)]) {
        if (v === undefined) continue;
        assert.ok(Number.isSafeInteger(v) && v >= 0, `${JSON.stringify(text)} → ${v}`);
      }
    }),
    RUNS,
  );
  // Round trip below a day: a formatted duration parses back (to the unit shown).
  fc.assert(
    fc.property(fc.nat({ max: 23 * 3_600_000 }), (ms) => {
      const parsed = parseDuration(formatDuration(ms).replace(/(\d+h)(\d+)m$/, "$1$2m"));
      assert.ok(parsed !== undefined && parsed <= ms && ms - parsed < 60_000, `${ms}`);
    }),
    RUNS,
  );
  assert.equal(parseDuration("9".repeat(400)), undefined);
  assert.equal(parseSize("1constructor"), undefined);
});

Deno.test("resolveInstance(): a start_date that overflows in milliseconds gives no start time", () => {
  const base = parseInstances([makeInstanceRecord({ id: 7 })], nullLogger).records[0];
  const spec = resolveInstance({ ...base, start_date: 1.797693134862316e305 }, {
    remotePort: null,
    label: null,
    instances: [],
  });
  assert.equal(spec.startedAt, null);
  const ok = resolveInstance({ ...base, start_date: 1_769_904_000 }, {
    remotePort: null,
    label: null,
    instances: [],
  });
  assert.equal(ok.startedAt, 1_769_904_000_000);
});
