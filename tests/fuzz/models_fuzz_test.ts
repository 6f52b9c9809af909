/**
 * Property tests (fast-check) for what the proxy reads from engines and
 * clients about models: `/v1/models` bodies and request bodies naming a
 * model. Whatever arrives, the parsers return a value or a clean "no", never
 * throw, and stay within their bounds.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { modelOf } from "../../lib/proxy/body_model.ts";
import { mergeModels, parseModelList } from "../../lib/proxy/models.ts";

const RUNS = { numRuns: 300 };

const entry = fc.oneof(
  fc.record({ id: fc.oneof(fc.string(), fc.constantFrom("a", "b", "__proto__")) }, {
    requiredKeys: [],
  }),
  fc.record({
    id: fc.constantFrom("a", "b", "c"),
    max_model_len: fc.oneof(fc.integer(), fc.double(), fc.string(), fc.constant(null)),
    extra: fc.jsonValue({ maxDepth: 6 }),
  }),
  fc.jsonValue({ maxDepth: 3 }),
);

Deno.test("parseModelList() never throws; ids are unique, non-empty and within the cap", () => {
  fc.assert(
    fc.property(fc.oneof(fc.record({ data: fc.array(entry) }), fc.jsonValue()), fc.nat(5), (
      body,
      maxModels,
    ) => {
      const list = parseModelList(body, { maxModels });
      if (list === null) return;
      assert.ok(list.models.length <= maxModels);
      assert.equal(new Set(list.models).size, list.models.length);
      assert.deepEqual(list.entries.map((e) => e.id), list.models);
      for (const id of list.models) assert.ok(typeof id === "string" && id.length > 0);
      const merged = mergeModels([{ id: 1, models: list.models, modelEntries: list.entries }], 0);
      assert.deepEqual(merged.map((m) => m.id), list.models);
      JSON.stringify(merged);
    }),
    RUNS,
  );
});

Deno.test("modelOf() never throws on any content type and body", () => {
  const contentType = fc.oneof(
    fc.constant(null),
    fc.string(),
    fc.constantFrom(
      "application/json",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=B",
      "multipart/form-data",
      'multipart/form-data; boundary=""',
    ),
  );
  const multipartish = fc.array(
    fc.oneof(
      fc.string(),
      fc.constantFrom("--B\r\n", "--B--", "\r\n", 'Content-Disposition: form-data; name="model"'),
    ),
  ).map((parts) => new TextEncoder().encode(parts.join("")));
  fc.assert(
    fc.property(contentType, fc.oneof(fc.uint8Array(), multipartish), (ct, body) => {
      const model = modelOf(ct, body);
      assert.ok(model === undefined || (typeof model === "string" && model.length > 0));
    }),
    RUNS,
  );
});
