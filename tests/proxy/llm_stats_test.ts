import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ITL_BUCKETS_MS,
  LlmObserver,
  llmObserverFor,
  LlmStats,
  MAX_MODEL_LABELS,
  usageTokens,
} from "../../lib/proxy/llm_stats.ts";
import { LlmObserver as OldLlmObserver } from "./_before/llm_stats.ts";
import { LatencyHistogram } from "../../lib/proxy/histogram.ts";

const enc = new TextEncoder();
const chunk = (delta: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  `data: ${
    JSON.stringify({
      id: "chatcmpl-1",
      object: "chat.completion.chunk",
      model: "m",
      choices: Object.keys(delta).length || !extra.usage
        ? [{ index: 0, delta, finish_reason: null }]
        : [],
      ...extra,
    })
  }\n\n`;

/** A vLLM-shaped chat stream: role chunk, three content chunks, finish, usage, [DONE]. */
const STREAM = chunk({ role: "assistant", content: "" }) +
  chunk({ content: "Hello" }) +
  chunk({ content: " wor" }) +
  chunk({ content: 'ld \\"content\\": \\"x' }) + // escaped key inside text: still one event
  chunk({}) +
  chunk({}, { usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 } }) +
  "data: [DONE]\n\n";

function observer(now: () => number) {
  return new LlmObserver({ mode: "sse", model: "m", startedAt: 0, now });
}

Deno.test("LlmObserver: one SSE stream split at every byte boundary gives the same numbers", () => {
  const bytes = enc.encode(STREAM);
  // The first content event is complete once its closing blank line arrived.
  const firstContentEnd = STREAM.indexOf("\n\n", STREAM.indexOf("Hello")) + 2;
  for (let k = 0; k <= bytes.length; k++) {
    let t = 10;
    const o = observer(() => t);
    o.chunk(bytes.subarray(0, k));
    t = 20;
    o.chunk(bytes.subarray(k));
    const s = o.finish();
    assert.ok(s, `split at ${k}`);
    assert.equal(s.outputTokens, 7, `usage wins at split ${k}`);
    assert.equal(s.ttftMs, k >= firstContentEnd ? 10 : 20, `ttft at split ${k}`);
    assert.equal(s.itl?.count, 2, `three content events at split ${k}`);
    assert.equal(s.model, "m");
  }
});

Deno.test("LlmObserver: byte-at-a-time feed, ITL gaps and tokens/s from the clock", () => {
  const bytes = enc.encode(STREAM);
  let t = 0;
  const o = observer(() => t);
  for (let i = 0; i < bytes.length; i++) {
    // Each event boundary arrives 25 ms after the previous one.
    if (bytes[i] === 10 && bytes[i - 1] === 10) t += 25;
    o.chunk(bytes.subarray(i, i + 1));
  }
  const s = o.finish()!;
  // Events end at 25 (role), 50, 75, 100 (content): first content at 50.
  assert.equal(s.ttftMs, 50);
  const itl = new LatencyHistogram(ITL_BUCKETS_MS);
  itl.observe(25);
  itl.observe(25);
  assert.deepEqual(s.itl, itl.data());
  assert.equal(s.tokensPerSec, 6 / 0.05); // 6 tokens after the first over 50 ms
});

Deno.test("LlmObserver: without usage the content events are the tokens; CRLF events parse", () => {
  const crlf = STREAM.split("\n").join("\r\n").replace(/data: \{[^\r]*usage[^\r]*\r\n\r\n/, "");
  const o = observer(() => 1);
  o.chunk(enc.encode(crlf));
  const s = o.finish()!;
  assert.equal(s.outputTokens, 3);
  assert.equal(s.tokensPerSec, null, "no time passed between events");
});

Deno.test("LlmObserver: text completions and multi-line data count too", () => {
  const o = observer(() => 5);
  o.chunk(enc.encode('data: {"choices":[{"text":" a"}]}\n\n'));
  o.chunk(enc.encode('data: {"choices":\ndata: [{"text":" b"}]}\n\n'));
  o.chunk(enc.encode('data: {"choices":[{"text":""}]}\n\n'));
  assert.equal(o.finish()?.outputTokens, 2);
});

Deno.test("LlmObserver: garbage, huge events and broken usage never throw", () => {
  const o = observer(() => 1);
  o.chunk(new Uint8Array([0xff, 0xfe, 10, 10, 0, 1, 2]));
  o.chunk(enc.encode(`data: {"choices":[{"delta":{"content":"${"x".repeat(70_000)}"}}]}\n\n`));
  o.chunk(enc.encode('data: {"usage": {"completion_tokens": "many"}}\n\n'));
  o.chunk(enc.encode("data: {not json\n\n: comment\n\nevent: ping\n\n"));
  const s = o.finish()!;
  assert.equal(s.outputTokens, 1, "the oversized event counted as content, bad usage ignored");
  assert.equal(observer(() => 1).finish(), null, "nothing seen: no sample");
});

Deno.test("llmObserverFor() picks completions by route, status and media type", () => {
  const clock = { startedAt: 0, now: () => 0 };
  const sse: [string, string][] = [["Content-Type", "text/event-stream; charset=utf-8"]];
  const json: [string, string][] = [["content-type", "application/json"]];
  const req = { method: "POST", path: "/v1/chat/completions", model: null };
  assert.ok(llmObserverFor(req, { status: 200, headers: sse }, clock));
  assert.ok(
    llmObserverFor({ ...req, path: "/v1/completions/" }, { status: 200, headers: json }, clock),
  );
  assert.equal(llmObserverFor(req, { status: 500, headers: json }, clock), null);
  assert.equal(
    llmObserverFor({ ...req, path: "/v1/embeddings" }, { status: 200, headers: json }, clock),
    null,
  );
  assert.equal(
    llmObserverFor({ ...req, method: "GET" }, { status: 200, headers: sse }, clock),
    null,
  );
  assert.equal(llmObserverFor(req, { status: 200, headers: [] }, clock), null);

  const o = llmObserverFor(req, { status: 200, headers: json }, clock)!;
  const body = JSON.stringify({ choices: [], usage: { completion_tokens: 42 } });
  o.chunk(enc.encode(body.slice(0, 10)));
  o.chunk(enc.encode(body.slice(10)));
  assert.deepEqual(o.finish(), {
    model: null,
    ttftMs: null,
    itl: null,
    outputTokens: 42,
    tokensPerSec: null,
  });
});

Deno.test("LlmStats: per-model data, moving tokens/s, bounded labels", () => {
  const stats = new LlmStats();
  const itl = new LatencyHistogram(ITL_BUCKETS_MS);
  itl.observe(20);
  const s = { model: null, ttftMs: 200, itl: itl.data(), outputTokens: 10, tokensPerSec: 100 };
  stats.record("a", s);
  stats.record("a", { ...s, tokensPerSec: 50 });
  assert.equal(stats.snapshot().tokensPerSec, 90);
  assert.equal(stats.snapshot().outputTokens, 20);
  assert.equal(stats.data().get("a")?.itl.count, 2);
  for (let i = 0; i < MAX_MODEL_LABELS + 5; i++) stats.record(`m${i}`, s);
  assert.equal(stats.data().size, MAX_MODEL_LABELS + 1);
  assert.equal(stats.data().get("other")?.outputTokens, 60);
});

/** What usageTokens() must return: the full parse. */
function usageByFullParse(text: string): number | null {
  try {
    const v = JSON.parse(text)?.usage?.completion_tokens;
    return typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null;
  } catch {
    return null;
  }
}

Deno.test("usageTokens() reads only the usage object yet agrees with a full parse", () => {
  const usage = fc.record({
    prompt_tokens: fc.nat(),
    completion_tokens: fc.oneof(
      fc.nat(),
      fc.double(),
      fc.constant(-1),
      fc.string(),
      fc.constant(null),
    ),
    prompt_tokens_details: fc.option(fc.dictionary(fc.string(), fc.jsonValue())),
  }, { requiredKeys: ["prompt_tokens"] });
  // Bodies with usage first, last, nested in choices, repeated, and strings
  // that spell "usage" or braces inside values.
  const body = fc.record({
    id: fc.string(),
    choices: fc.array(
      fc.record({
        message: fc.record({
          content: fc.oneof(fc.string(), fc.constantFrom('"usage":{', "usage", "}{")),
        }),
        usage: fc.option(usage),
      }),
      { maxLength: 2 },
    ),
    extra: fc.jsonValue(),
  });
  fc.assert(
    fc.property(
      body,
      fc.option(usage),
      fc.boolean(),
      fc.constantFrom(undefined, 0, 1, 2, "\t"),
      (b, u, usageFirst, indent) => {
        const obj = u === null ? b : usageFirst ? { usage: u, ...b } : { ...b, usage: u };
        const text = JSON.stringify(obj, null, indent);
        assert.equal(usageTokens(text), usageByFullParse(text));
      },
    ),
    { numRuns: 3000 },
  );
  for (
    const text of [
      '{"usage":{"completion_tokens":7}}',
      '{"a":"usage","usage" : { "completion_tokens" : 3 } }\n',
      '{"x":{"usage":{"completion_tokens":9}}}',
      '{"usage":{"completion_tokens":1},"usage":{"completion_tokens":2}}',
      '{"choices":[{"usage":{"completion_tokens":5}}]}',
      '{"usage":{"completion_tokens":4,"s":"}\\"{"}}',
      '{"usage":{"completion_tokens":4}',
      '{"usage":"x"}',
      "not json",
      // Keys that end in `"usage` (escaped quote): `"usage"` appears with
      // its closing quote bare but its opening quote escaped.
      '{"\\"usage":{"completion_tokens":3}}',
      '{"a":1,"say \\"usage" : {"completion_tokens":8}}',
      // An escaped backslash before the quote: that quote is bare again.
      '{"a":"\\\\","usage":{"completion_tokens":6}}',
    ]
  ) {
    assert.equal(usageTokens(text), usageByFullParse(text), text);
  }
});

Deno.test("LlmObserver.whole() reports what chunk() and the observer before it did", () => {
  const bytes = fc.oneof(
    fc.uint8Array({ maxLength: 80 }),
    fc.tuple(fc.jsonValue(), fc.jsonValue(), fc.boolean()).map(([a, u, last]) =>
      enc.encode(JSON.stringify(last ? { a, usage: { completion_tokens: u } } : { usage: u, a }))
    ),
    fc.tuple(fc.string(), fc.nat(), fc.constantFrom(0, 1, 2, 3)).map(([text, n, cut]) => {
      // A usual body, then cut inside a multi-byte character or given a BOM.
      const b = enc.encode(`{"c":"${text}é😀","usage":{"completion_tokens":${n}}}`);
      if (cut === 1) return b.subarray(0, b.length - 40);
      if (cut === 2) return Uint8Array.from([0xef, 0xbb, 0xbf, ...b]);
      if (cut === 3) return enc.encode(`{"usage":{"completion_tokens":${n}},"c":"${text}"}`);
      return b;
    }),
  );
  fc.assert(
    fc.property(bytes, fc.constantFrom("json" as const, "sse" as const), (b, mode) => {
      const opts = { mode, model: "m", startedAt: 0, now: () => 1 };
      const viaWhole = new LlmObserver(opts);
      const viaChunk = new LlmObserver(opts);
      const before = new OldLlmObserver(opts);
      viaWhole.whole(b);
      viaChunk.chunk(b);
      before.chunk(b);
      const got = viaWhole.finish();
      assert.deepEqual(got, viaChunk.finish());
      assert.deepEqual(got, before.finish());
    }),
    { numRuns: 3000 },
  );
  // The bytes are not kept: changing them afterwards changes nothing.
  const b = enc.encode('{"usage":{"completion_tokens":42}}');
  const o = new LlmObserver({ mode: "json", model: null, startedAt: 0, now: () => 1 });
  o.whole(b);
  b.fill(0x20);
  assert.equal(o.finish()?.outputTokens, 42);
});
