/**
 * Property tests for the relay's header rewriting (lib/proxy/headers.ts):
 * whatever a client or an instance sends, hop-by-hop headers (the fixed list
 * and those named in `Connection`) never cross, the instance always gets its
 * own `Authorization` and never the client's, `X-VastProxy-Instance` never
 * goes upstream, and every other header passes unchanged.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  downstreamResponseHeaders,
  HOP_BY_HOP,
  INSTANCE_HEADER,
  parsePin,
  upstreamRequestHeaders,
} from "../../lib/proxy/headers.ts";

const RUNS = { numRuns: 300 };
const TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_".split("");

/** Valid header names, biased towards the ones that matter. */
const headerName = fc.oneof(
  fc.constantFrom(
    ...HOP_BY_HOP,
    "authorization",
    "Authorization",
    INSTANCE_HEADER,
    "X-VastProxy-Instance",
    "host",
    "content-length",
    "content-type",
    "x-session-id",
    "accept-encoding",
  ),
  fc.array(fc.constantFrom(...TOKEN_CHARS), { minLength: 1, maxLength: 12 }).map((c) => c.join("")),
);
/**
 * Valid, non-empty header values (visible ASCII and inner spaces). Empty ones
 * are left out: `Headers` itself trims a combined "v, " to "v,".
 */
const headerValue = fc.string({ minLength: 1, maxLength: 30 }).map((s) =>
  s.replace(/[^\x21-\x7e ]/g, "x").trim() || "v"
);
const headerList = fc.array(fc.tuple(headerName, headerValue), { maxLength: 12 });
/** A `Connection` value naming some headers, possibly with junk. */
const connection = fc.array(fc.oneof(headerName, fc.constantFrom("", " ", "close", "bad name!")), {
  maxLength: 4,
}).map((names) => names.join(", "));

function build(list: [string, string][], conn: string | null): Headers {
  const h = new Headers();
  for (const [k, v] of list) h.append(k, v);
  if (conn !== null) h.set("connection", conn);
  return h;
}

function namedByConnection(conn: string | null): string[] {
  return (conn ?? "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
}

Deno.test("fuzz: upstreamRequestHeaders() strips hop-by-hop, pins and client auth; adds the instance's", () => {
  fc.assert(
    fc.property(
      headerList,
      fc.option(connection),
      fc.option(fc.constantFrom("tok-abc", "Bearer tok-def", "bearer tok-ghi")),
      (list, conn, upstreamAuth) => {
        const incoming = build(list, conn);
        const out = new Headers(upstreamRequestHeaders(incoming, upstreamAuth));
        const dropped = new Set([...HOP_BY_HOP, ...namedByConnection(conn)]);
        for (const name of dropped) {
          if (name === "authorization") continue;
          try {
            assert.equal(out.has(name), false, `${name} forwarded`);
          } catch (err) {
            if (err instanceof TypeError) continue; // not a valid header name at all
            throw err;
          }
        }
        assert.equal(out.has(INSTANCE_HEADER), false);
        assert.equal(out.has("host"), false);
        const auth = out.get("authorization");
        if (upstreamAuth === null) assert.equal(auth, null);
        else {
          // The instance's token with a Bearer scheme (any case), never the client's value.
          const token = upstreamAuth.replace(/^bearer /i, "");
          assert.equal(auth?.toLowerCase(), `bearer ${token}`.toLowerCase());
          assert.ok(auth!.endsWith(token));
        }
        // Everything else passes unchanged.
        const special = new Set([
          ...dropped,
          INSTANCE_HEADER,
          "host",
          "content-length",
          "authorization",
        ]);
        for (const [name, value] of incoming) {
          if (special.has(name)) continue;
          assert.equal(out.get(name), value, name);
        }
      },
    ),
    RUNS,
  );
});

Deno.test("fuzz: downstreamResponseHeaders() strips hop-by-hop and always names the instance", () => {
  fc.assert(
    fc.property(headerList, fc.option(connection), fc.integer({ min: 1, max: 2 ** 40 }), (
      list,
      conn,
      id,
    ) => {
      const upstream = build(list, conn);
      const out = downstreamResponseHeaders([...upstream], id);
      for (const name of [...HOP_BY_HOP, ...namedByConnection(conn)]) {
        if (name === INSTANCE_HEADER) continue;
        try {
          assert.equal(out.has(name), false, `${name} passed back`);
        } catch (err) {
          if (err instanceof TypeError) continue;
          throw err;
        }
      }
      assert.equal(out.get(INSTANCE_HEADER), String(id));
    }),
    RUNS,
  );
});

Deno.test("fuzz: parsePin() accepts only positive decimal ids", () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 20 }), fc.integer().map(String)), (v) => {
      const pin = parsePin(v);
      if (pin === undefined) return;
      assert.ok(Number.isSafeInteger(pin) && pin > 0);
      assert.equal(String(pin), v.trim().replace(/^0+/, ""));
    }),
    RUNS,
  );
  assert.equal(parsePin(null), undefined);
});
