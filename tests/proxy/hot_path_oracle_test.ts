/**
 * The request path's routing helpers were rewritten for CPU per request
 * (issue #14, relay pass): fewer arrays, closures and regex runs, and
 * caches. Each is compared here with its implementation before that pass,
 * kept verbatim under `_before/`, on generated inputs and call sequences
 * (the caches make the order of calls matter).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import type { HeaderPairs } from "../../lib/http1/types.ts";
import { CacheAware, gpuPrior } from "../../lib/proxy/cache_aware_policy.ts";
import { CacheAware as OldCacheAware } from "./_before/cache_aware_policy.ts";
import { jsonObjectOf, mediaTypeOf, modelOf } from "../../lib/proxy/body_model.ts";
import { jsonObjectOf as oldJsonObjectOf, modelOf as oldModelOf } from "./_before/body_model.ts";
import { instanceAuthorization } from "../../lib/proxy/headers.ts";
import { instanceAuthorization as oldInstanceAuthorization } from "./_before/headers.ts";
import { llmObserverFor, withoutTrailingSlashes } from "../../lib/proxy/llm_stats.ts";
import { llmObserverFor as oldLlmObserverFor } from "./_before/llm_stats.ts";
import { LeastInFlight, pickTarget, Rendezvous, RoundRobin } from "../../lib/proxy/policies.ts";
import {
  LeastInFlight as OldLeastInFlight,
  pickTarget as oldPickTarget,
  Rendezvous as OldRendezvous,
  RoundRobin as OldRoundRobin,
} from "./_before/policies.ts";
import { promptText, routeInfoFor } from "../../lib/proxy/route_info.ts";
import {
  promptText as oldPromptText,
  routeInfoFor as oldRouteInfoFor,
} from "./_before/route_info.ts";
import { createHostCheck } from "../../lib/proxy/host_check.ts";
import { createHostCheck as oldCreateHostCheck } from "./_before/host_check.ts";
import type { RouteTarget } from "../../lib/proxy/pool.ts";

const RUNS = { numRuns: 300 };

/** A routing target with only what policies read. */
function target(t: {
  id: number;
  inFlight: number;
  models?: string[];
  gpu?: { name: string; count: number };
  load?: { running: number | null; waiting: number | null; stale?: boolean } | null;
}): RouteTarget {
  const never = () => {
    throw new Error("not used");
  };
  return {
    id: t.id,
    inFlight: t.inFlight,
    models: t.models ?? [],
    engine: "vllm" as RouteTarget["engine"],
    ...(t.gpu ? { gpu: t.gpu } : {}),
    ...(t.load !== undefined
      ? {
        engineLoad: t.load === null ? null : { kvCacheUsage: null, prefixHitRate: null, ...t.load },
      }
      : {}),
    upstreamAuth: () => null,
    send: never,
    upgrade: never,
    acquire: never,
  };
}

const GPU_NAMES = [
  "RTX 4090",
  "H100 SXM",
  "A100 PCIE",
  "L4",
  "L40S",
  "RTX 6000 Ada",
  "MI300X",
  "x",
];
const arbGpu = fc.option(
  fc.record({
    name: fc.oneof(fc.constantFrom(...GPU_NAMES), fc.string({ maxLength: 8 })),
    // Whole counts only: where a count was NaN the old code picked nobody
    // and threw (see the test of non-numbers below), so it is no oracle there.
    count: fc.integer({ min: -1, max: 8 }),
  }),
  { nil: undefined },
);
const arbLoad = fc.option(
  fc.record({
    running: fc.option(fc.integer({ min: 0, max: 80 }), { nil: null }),
    waiting: fc.option(fc.integer({ min: 0, max: 20 }), { nil: null }),
  }),
  { nil: undefined },
);
const arbTargetSpec = fc.record({
  id: fc.integer({ min: 1, max: 12 }),
  inFlight: fc.integer({ min: 0, max: 6 }),
  gpu: arbGpu,
  load: arbLoad,
  models: fc.subarray(["a", "b", "c"]),
});
/** Distinct ids, as a pool has. */
const arbTargets = fc.uniqueArray(arbTargetSpec, { selector: (t) => t.id, maxLength: 6 });
/** Prefixes from a small pool of block hashes, so requests share prefixes and matches happen. */
const arbPrefix = fc.option(
  fc.array(fc.constantFrom(1, 2, 3, 2 ** 52 + 5, 0x1fffff, 77), { maxLength: 6 }),
  { nil: undefined },
);

Deno.test("gpuPrior: the same slots as matching the patterns each time, over repeated names", () => {
  const old = (gpu: RouteTarget["gpu"]): number => {
    if (!gpu) return 16;
    const table: [RegExp, number][] = [
      [/B200|H200|H100|GH200/i, 64],
      [/A100|H800|A800|L40|6000 Ada|MI300/i, 48],
      [/4090|3090|A6000|A5000|L4\b|5090|A40/i, 16],
    ];
    const slots = table.find(([re]) => re.test(gpu.name))?.[1] ?? 16;
    return slots * Math.max(1, gpu.count);
  };
  fc.assert(
    fc.property(fc.array(arbGpu, { maxLength: 20 }), (gpus) => {
      for (const g of gpus) assert.ok(Object.is(gpuPrior(g), old(g)), JSON.stringify(g));
    }),
    RUNS,
  );
  // Past the cache's bound it starts over and still answers right.
  for (let i = 0; i < 600; i++) {
    const g = { name: `${GPU_NAMES[i % GPU_NAMES.length]} #${i}`, count: 1 + (i % 3) };
    assert.equal(gpuPrior(g), old(g));
    assert.equal(gpuPrior(g), old(g));
  }
  assert.equal(gpuPrior({ name: "NVIDIA H100 80GB", count: 2 }), 128);
  assert.equal(gpuPrior({ name: "RTX 4090", count: 0 }), 16);
  assert.equal(gpuPrior(undefined), 16);
});

Deno.test("CacheAware.select: the same pick and state as before over request sequences", () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(arbTargets, arbPrefix), { minLength: 1, maxLength: 25 }),
      fc.record({
        maxEntries: fc.integer({ min: 1, max: 30 }),
        balanceThreshold: fc.constantFrom(0, 0.25, 1),
        loadWeight: fc.constantFrom(0, 1, 2),
      }),
      (steps, opts) => {
        const now = new CacheAware(opts);
        const before = new OldCacheAware(opts);
        for (const [specs, prefix] of steps) {
          const cands = specs.map(target);
          const route = prefix ? { prefix } : {};
          const a = now.select(cands, route);
          const b = before.select(cands, route);
          assert.equal(a?.id, b?.id);
          assert.equal(now.entries, before.entries);
          for (const c of cands) {
            assert.ok(Object.is(now.capacity(c), before.capacity(c)));
            assert.equal(now.saturated(c), before.saturated(c));
            if (prefix) assert.equal(now.matched(c.id, prefix), before.matched(c.id, prefix));
          }
        }
      },
    ),
    RUNS,
  );
});

Deno.test("CacheAware.select: equal scores rotate through the tied candidates in id order", () => {
  const policy = new CacheAware();
  const cands = [3, 1, 2].map((id) => target({ id, inFlight: id === 2 ? 1 : 0 }));
  const picks = Array.from({ length: 4 }, () => policy.select(cands, {})!.id);
  assert.deepEqual(picks, [1, 3, 1, 3]);
  assert.equal(policy.select([], {}), undefined);
  assert.equal(policy.select([cands[1]], { prefix: [9] })!.id, 1);
  assert.equal(policy.matched(1, [9]), 1);
});

Deno.test("pickTarget: the same decisions as before, with and without tried backends", () => {
  const policyPairs = () =>
    [
      [new RoundRobin(), new OldRoundRobin()],
      [new LeastInFlight(), new OldLeastInFlight()],
      [new CacheAware(), new OldCacheAware()],
    ] as const;
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          targets: arbTargets,
          model: fc.option(fc.constantFrom("a", "b", "c", "z"), { nil: undefined }),
          known: fc.option(fc.subarray(["a", "b", "c", "z"]), { nil: undefined }),
          pinnedId: fc.option(fc.integer({ min: 0, max: 13 }), { nil: undefined }),
          stickyKey: fc.option(fc.string({ maxLength: 4 }), { nil: undefined }),
          tried: fc.option(fc.uniqueArray(fc.integer({ min: 1, max: 12 }), { maxLength: 4 }), {
            nil: undefined,
          }),
        }),
        { minLength: 1, maxLength: 15 },
      ),
      fc.integer({ min: 0, max: 2 }),
      (steps, which) => {
        const [now, before] = policyPairs()[which];
        const nowSticky = new Rendezvous();
        const beforeSticky = new OldRendezvous();
        for (const s of steps) {
          const routable = s.targets.map(target);
          const route = {
            ...(s.model !== undefined ? { model: s.model } : {}),
            ...(s.known !== undefined ? { knownModels: new Set(s.known) } : {}),
            ...(s.pinnedId !== undefined ? { pinnedId: s.pinnedId } : {}),
            ...(s.stickyKey !== undefined ? { stickyKey: s.stickyKey } : {}),
          };
          const tried = s.tried === undefined ? undefined : new Set(s.tried);
          const a = pickTarget(routable, route, { policy: now, sticky: nowSticky }, tried);
          const b = oldPickTarget(routable, route, { policy: before, sticky: beforeSticky }, tried);
          assert.deepEqual(
            a.ok ? { ok: true, id: a.target.id } : a,
            b.ok ? { ok: true, id: b.target.id } : b,
          );
        }
      },
    ),
    RUNS,
  );
});

const arbPart = fc.oneof(
  fc.record({ type: fc.constant("text"), text: fc.string({ maxLength: 40 }) }),
  fc.record({ type: fc.constant("image_url"), image_url: fc.string({ maxLength: 5 }) }),
  fc.constant(null),
  fc.string({ maxLength: 5 }),
);
const arbMessage = fc.oneof(
  fc.record({
    role: fc.oneof(fc.constantFrom("system", "user", "assistant"), fc.integer()),
    content: fc.oneof(
      fc.string({ maxLength: 90 }),
      fc.array(arbPart, { maxLength: 3 }),
      fc.constant(null),
    ),
  }, { requiredKeys: [] }),
  fc.constant(null),
  fc.integer(),
);
const arbPromptJson = fc.oneof(
  fc.record({ messages: fc.array(arbMessage, { maxLength: 6 }) }),
  fc.record({ prompt: fc.oneof(fc.string({ maxLength: 200 }), fc.array(fc.string())) }),
  fc.record({ prompt: fc.array(fc.integer(), { maxLength: 3 }) }),
  // Long enough for one to a few full prefix blocks (64 chars each).
  fc.record({ prompt: fc.string({ minLength: 60, maxLength: 300 }) }),
  fc.record({ messages: fc.string(), prompt: fc.string() }),
  fc.constant({}),
);

Deno.test("promptText: the same text as before, under any cap", () => {
  fc.assert(
    fc.property(arbPromptJson, fc.integer({ min: 0, max: 300 }), (json, cap) => {
      const j = json as Record<string, unknown>;
      assert.equal(promptText(j, cap), oldPromptText(j, cap));
      assert.equal(promptText(j), oldPromptText(j));
    }),
    RUNS,
  );
});

Deno.test("routeInfoFor: the same fields, in the same order, as before", () => {
  const enc = new TextEncoder();
  fc.assert(
    fc.property(
      fc.record({
        json: fc.option(
          arbPromptJson.chain((j) =>
            fc.record({ model: fc.oneof(fc.string({ maxLength: 4 }), fc.integer()) }, {
              requiredKeys: [],
            }).map((m) => ({ ...j, ...m }))
          ),
          { nil: undefined },
        ),
        raw: fc.string({ maxLength: 30 }),
        contentType: fc.option(
          fc.constantFrom(
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/vnd.x+json ;a=b",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
            ";",
          ),
          { nil: null },
        ),
        sticky: fc.option(fc.constantFrom("X-Session", "x-user"), { nil: null }),
        headers: fc.dictionary(
          fc.constantFrom("x-session", "x-user", "x-vastproxy-instance"),
          fc.constantFrom("", "7", " 12 ", "abc", "0"),
        ),
        known: fc.option(fc.subarray(["m1", "m2"]), { nil: undefined }),
        prefix: fc.boolean(),
      }),
      (c) => {
        const body = c.json !== undefined
          ? enc.encode(JSON.stringify(c.json))
          : c.raw === ""
          ? null
          : enc.encode(c.raw);
        const get = (name: string) => c.headers[name] ?? null;
        const all: Record<string, string | null> = { "content-type": c.contentType };
        const headers = (name: string) => name in all ? all[name] : get(name);
        const known = c.known === undefined ? undefined : new Set(c.known);
        const a = routeInfoFor(headers, body, c.sticky, known, { prefix: c.prefix });
        const b = oldRouteInfoFor(headers, body, c.sticky, known, { prefix: c.prefix });
        // The prefix is made on first read and is not an own enumerable key.
        const { prefix: oldPrefix, ...oldRest } = b;
        assert.deepEqual(Object.keys(a), Object.keys(oldRest));
        assert.deepEqual({ ...a }, oldRest); // own fields; a lazy route's prototype aside
        assert.deepEqual(a.prefix, oldPrefix);
        assert.equal(a.knownModels, b.knownModels);
        assert.equal(mediaTypeOf(c.contentType), oldMediaType(c.contentType));
        assert.deepEqual(jsonObjectOf(c.contentType, body), oldJsonObjectOf(c.contentType, body));
        assert.equal(modelOf(c.contentType, body), oldModelOf(c.contentType, body));
      },
    ),
    RUNS,
  );
});

function oldMediaType(contentType: string | null): string {
  return (contentType ?? "").split(";", 1)[0].trim().toLowerCase();
}

Deno.test("mediaTypeOf: the media type as split(';', 1) gave it", () => {
  fc.assert(
    fc.property(
      fc.option(fc.stringMatching(/^[ \tA-Za-z/+;=.-]{0,20}$/), { nil: null }),
      (ct) => assert.equal(mediaTypeOf(ct), oldMediaType(ct)),
    ),
    RUNS,
  );
});

Deno.test("instanceAuthorization: the same value as before over any sequence of tokens", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.option(
          fc.oneof(
            fc.constantFrom("tok", "Bearer tok", "bearer\ttok", "BEARER x", "Bearerx", ""),
            fc.string({ maxLength: 10 }),
          ),
          { nil: null },
        ),
        { maxLength: 12 },
      ),
      (tokens) => {
        for (const t of tokens) assert.equal(instanceAuthorization(t), oldInstanceAuthorization(t));
      },
    ),
    RUNS,
  );
});

Deno.test("withoutTrailingSlashes: what replace(/\\/+$/, '') gives", () => {
  fc.assert(
    fc.property(fc.stringMatching(/^[/av1.]{0,12}$/), (p) => {
      assert.equal(withoutTrailingSlashes(p), p.replace(/\/+$/, ""));
    }),
    RUNS,
  );
});

Deno.test("llmObserverFor: observes the same responses, and they report the same, as before", () => {
  const enc = new TextEncoder();
  const bodies = [
    '{"choices":[{"message":{"content":"hi"}}],"usage":{"completion_tokens":7}}',
    'data: {"choices":[{"delta":{"content":"a"}}]}\n\ndata: {"usage":{"completion_tokens":3}}\n\n',
    "not json",
  ];
  fc.assert(
    fc.property(
      fc.constantFrom("POST", "GET", "post"),
      fc.constantFrom(
        "/v1/chat/completions",
        "/v1/chat/completions///",
        "/v1/completions/",
        "/v1/embeddings",
        "/",
        "",
      ),
      fc.constantFrom(200, 204, 299, 300, 199, 500),
      fc.array(
        fc.tuple(
          fc.constantFrom("content-type", "Content-Type", "x-other"),
          fc.constantFrom(
            "application/json",
            "text/event-stream; charset=utf-8",
            " Application/JSON ;x",
            "text/plain",
            "",
          ),
        ),
        { maxLength: 3 },
      ),
      fc.constantFrom(0, 1, 2),
      fc.integer({ min: 1, max: 3 }),
      (method, path, status, headers, which, pieces) => {
        // A clock of its own for each, so both see the same times.
        let ta = 0;
        let tb = 0;
        const req = { method, path, model: "m" };
        const res = { status, headers: headers as HeaderPairs };
        const a = llmObserverFor(req, res, { startedAt: 0, now: () => ++ta });
        const b = oldLlmObserverFor(req, res, { startedAt: 0, now: () => ++tb });
        assert.equal(a === null, b === null);
        if (!a || !b) return;
        // The body in one chunk (as small answers come) or in several.
        const bytes = enc.encode(bodies[which]);
        const step = Math.ceil(bytes.length / pieces);
        for (let i = 0; i < bytes.length; i += step) {
          const chunk = bytes.slice(i, i + step);
          a.chunk(chunk);
          b.chunk(chunk);
        }
        assert.deepEqual(a.finish(), b.finish());
      },
    ),
    RUNS,
  );
});

Deno.test("createHostCheck: the remembered verdict is the one a fresh check gives", () => {
  const optsArb = fc.record({
    listenHostname: fc.constantFrom("127.0.0.1", "0.0.0.0", "mybox.lan", "::"),
    allowedHosts: fc.subarray(["mybox.lan:8080", ".example.com", "other", "x.y"]),
  });
  const hostArb = fc.option(
    fc.constantFrom(
      "localhost:8080",
      "evil.com",
      "a.example.com",
      "example.com",
      "mybox.lan",
      "mybox.lan:8080",
      "mybox.lan:9",
      "[::1]:80",
      "10.0.0.1",
      "other.",
      "",
      " x.y ",
    ),
    { nil: null },
  );
  fc.assert(
    fc.property(optsArb, fc.array(hostArb, { maxLength: 12 }), (opts, hosts) => {
      const check = createHostCheck(opts);
      for (const h of hosts) assert.equal(check(h), oldCreateHostCheck(opts)(h), String(h));
    }),
    RUNS,
  );
});

Deno.test("CacheAware.select always picks a candidate, whatever the GPU counts, loads and in-flight numbers", () => {
  const odd = fc.constantFrom(Number.NaN, Infinity, -Infinity, -1, 0, 3);
  const spec = fc.record({
    id: fc.integer({ min: 1, max: 12 }),
    inFlight: fc.oneof(fc.integer({ min: 0, max: 6 }), odd),
    gpu: fc.option(fc.record({ name: fc.constantFrom(...GPU_NAMES), count: odd }), {
      nil: undefined,
    }),
    load: fc.option(
      fc.record({ running: fc.option(odd, { nil: null }), waiting: fc.option(odd, { nil: null }) }),
      { nil: undefined },
    ),
    models: fc.constant([] as string[]),
  });
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.uniqueArray(spec, { selector: (t) => t.id, minLength: 1, maxLength: 6 }),
          arbPrefix,
        ),
        { minLength: 1, maxLength: 20 },
      ),
      (steps) => {
        const policy = new CacheAware({ maxEntries: 4 });
        for (const [specs, prefix] of steps) {
          const cands = specs.map(target);
          const pick = policy.select(cands, prefix ? { prefix } : {});
          assert.ok(pick !== undefined && cands.includes(pick));
          for (const c of cands) {
            assert.ok(Number.isFinite(policy.capacity(c)) && policy.capacity(c) > 0);
          }
        }
      },
    ),
    RUNS,
  );
  assert.equal(gpuPrior({ name: "RTX 4090", count: Number.NaN }), 16);
  assert.equal(gpuPrior({ name: "NVIDIA H100 80GB", count: Infinity }), 64);
});
