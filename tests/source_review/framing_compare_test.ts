/**
 * Hostile engine framings, source path vs stream path: same wire bytes,
 * same outcome (release once, transportError/clientCancelled), same log bytes,
 * and no channel reuse after junk.
 */
import assert from "node:assert/strict";
import { eventually } from "../_helpers/fake_pool.ts";
import { oneRequest, sleep, startEngine, startRig } from "../_helpers/source_rig.ts";

const H = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
const HL = (n: number) =>
  `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${n}\r\n\r\n`;

interface Case {
  name: string;
  parts: string[];
  cut?: boolean;
  gapMs?: number;
  expectTransportError: boolean;
  /** Bytes the source path forwards before the failure that the stream path drops (controller.error clears its queue). */
  srcExtra?: string;
}

const tiny = Array.from({ length: 50 }, (_, i) => `1\r\n${String.fromCharCode(97 + (i % 26))}\r\n`)
  .join("");

const CASES: Case[] = [
  {
    name: "many tiny chunks in one packet",
    parts: [H + tiny + "0\r\n\r\n"],
    expectTransportError: false,
  },
  {
    name: "many tiny chunks after head",
    parts: [H, tiny + "0\r\n\r\n"],
    expectTransportError: false,
  },
  {
    name: "split at every byte",
    parts: [H, ...("5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n".split(""))],
    gapMs: 2,
    expectTransportError: false,
  },
  {
    name: "zero-length body, terminator alone",
    parts: [H, "0\r\n\r\n"],
    expectTransportError: false,
  },
  {
    name: "zero-length body, terminator with head",
    parts: [H + "0\r\n\r\n"],
    expectTransportError: false,
  },
  {
    name: "bad framing mid-body",
    parts: [H, "5\r\nhello\r\n", "zz\r\nxx\r\n"],
    expectTransportError: true,
  },
  {
    name: "bad framing in same packet",
    parts: [H, "5\r\nhello\r\nzz\r\nxx\r\n"],
    expectTransportError: true,
    srcExtra: "5\r\nhello\r\n",
  },
  {
    name: "missing CRLF after data",
    parts: [H, "5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n"],
    expectTransportError: true,
    srcExtra: "5\r\nhello\r\n",
  },
  { name: "cut before first chunk", parts: [H], cut: true, expectTransportError: true },
  {
    name: "cut mid size line",
    parts: [H, "5\r\nhello\r\n", "1"],
    cut: true,
    expectTransportError: true,
  },
  {
    name: "cut mid data",
    parts: [H, "5\r\nhello\r\n", "a\r\n01234"],
    cut: true,
    expectTransportError: true,
  },
  {
    name: "cut after last data, before 0",
    parts: [H, "5\r\nhello\r\n"],
    cut: true,
    expectTransportError: true,
  },
  {
    name: "cut after 0 CRLF before final CRLF",
    parts: [H, "5\r\nhello\r\n0\r\n"],
    cut: true,
    expectTransportError: true,
  },
  {
    name: "junk after terminator same packet",
    parts: [H, "5\r\nhello\r\n0\r\n\r\nJUNK"],
    expectTransportError: false,
  },
  {
    name: "junk after terminator next packet",
    parts: [H, "5\r\nhello\r\n0\r\n\r\n", "HTTP/1.1 200 OK\r\n\r\n"],
    expectTransportError: false,
  },
  {
    name: "length: body across packets",
    parts: [HL(10), "01234", "56789"],
    expectTransportError: false,
  },
  { name: "length: cut mid body", parts: [HL(10), "01234"], cut: true, expectTransportError: true },
  {
    name: "length: extra bytes same packet",
    parts: [HL(5), "01234EXTRA"],
    expectTransportError: false,
  },
  {
    name: "length: 1 byte packets",
    parts: [HL(6), ..."abcdef".split("")],
    gapMs: 2,
    expectTransportError: false,
  },
  {
    name: "close-delimited",
    parts: ["HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n", "abc", "def"],
    cut: true,
    expectTransportError: false,
  },
  {
    name: "trailers after last chunk",
    parts: [H, "5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"],
    expectTransportError: false,
  },
  {
    name: "chunk extensions",
    parts: [H, "5;a=b\r\nhello\r\n0\r\n\r\n"],
    expectTransportError: false,
  },
];

async function run(c: Case, strip: boolean) {
  const engine = startEngine(async (side) => {
    await sleep(5);
    for (const p of c.parts) {
      await side.write(p);
      await sleep(c.gapMs ?? 5);
    }
    if (c.cut) side.close();
  });
  const rig = startRig(engine.port, { stripSource: strip });
  try {
    const r = await oneRequest(rig);
    await rig.target.released(1, 3000);
    await eventually(() => rig.lines.length === 1, 2000);
    // Second request: was the channel reused?
    const opened1 = rig.client.stats().opened;
    await sleep(20);
    const r2 = c.cut || c.expectTransportError ? null : await oneRequest(rig);
    const opened2 = rig.client.stats().opened;
    return {
      wire: r.wire,
      closed: r.closed,
      outcome: rig.target.outcomes[0],
      line: rig.lines[0],
      reused: r2 === null ? null : opened2 === opened1,
      r2,
      doubleReleases: rig.target.doubleReleases,
      sourceUsed: rig.sourceUsed(),
      engineSides: engine.sides.length,
    };
  } finally {
    await rig.close();
    await engine.close();
  }
}

for (const c of CASES) {
  Deno.test(`review framing: ${c.name}`, async () => {
    const src = await run(c, false);
    const str = await run(c, true);
    const info = JSON.stringify(
      { src: { ...src, r2: undefined }, str: { ...str, r2: undefined } },
      null,
      1,
    );
    assert.ok(src.sourceUsed, "source path taken");
    // Chunk boundaries are the proxy's own (it re-frames a chunked body, and
    // how many bytes one write takes depends on timing): the head, the
    // payload and whether the terminator came are what must agree.
    assert.equal(framed(src.wire), framed(str.wire + (c.srcExtra ?? "")), info);
    assert.equal(src.closed, str.closed, info);
    assert.equal(src.outcome.transportError, c.expectTransportError, info);
    assert.equal(src.outcome.transportError, str.outcome.transportError, info);
    assert.equal(src.outcome.clientCancelled, false, info);
    assert.equal(src.line.bytes, str.line.bytes, info);
    assert.equal(src.doubleReleases, 0);
    assert.equal(src.reused, str.reused, info);
    if (c.name.includes("junk") || c.name.includes("extra")) {
      assert.equal(src.reused, false, "channel reused after junk");
    }
    if (src.r2) assert.equal(framed(src.r2.wire), framed(src.wire), "second answer identical");
  });
}

/**
 * An answer as head, payload and end: a chunked body's chunks joined (a
 * cut or broken framing shows as "[cut]" after what was complete), any
 * other body as it is.
 */
function framed(wire: string): string {
  const at = wire.indexOf("\r\n\r\n");
  if (at === -1) return wire;
  const head = wire.slice(0, at + 4);
  let rest = wire.slice(at + 4);
  if (!/\r\ntransfer-encoding: chunked\r\n/i.test(head)) return `${head}[${rest}]`;
  let payload = "";
  for (;;) {
    const line = rest.indexOf("\r\n");
    if (line === -1) return `${head}[${payload}][cut]`;
    const size = parseInt(rest.slice(0, line), 16);
    if (!Number.isFinite(size)) return `${head}[${payload}][cut]`;
    if (size === 0) return `${head}[${payload}][end${rest.slice(line + 2) === "\r\n" ? "" : "+"}]`;
    const data = rest.slice(line + 2, line + 2 + size);
    if (data.length < size || rest.slice(line + 2 + size, line + 4 + size) !== "\r\n") {
      return `${head}[${payload}][cut]`;
    }
    payload += data;
    rest = rest.slice(line + 4 + size);
  }
}
