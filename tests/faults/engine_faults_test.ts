/**
 * Engine faults end to end (real sshd, fake engines, real wiring): an engine
 * dies under 50 concurrent streams, then every engine dies. No request that
 * could have been served is lost, nothing hangs, and the fleet heals itself.
 */
import assert from "node:assert/strict";
import { sshdAvailable } from "../_helpers/sshd.ts";
import { eventually, startE2eFleet } from "../_helpers/e2e_fleet.ts";

const ignore = !sshdAvailable();

/** How one streamed request ended. */
interface StreamEnd {
  instance: number;
  /** Saw `data: [DONE]`. */
  complete: boolean;
  /** The body failed (truncated stream) rather than ending. */
  errored: boolean;
}

async function stream(url: string, ready: () => void): Promise<StreamEnd> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }], stream: true }),
  });
  assert.equal(res.status, 200);
  const instance = Number(res.headers.get("x-vastproxy-instance"));
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let first = true;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += value;
      if (first) {
        first = false;
        ready();
      }
    }
  } catch {
    if (first) ready();
    return { instance, complete: false, errored: true };
  }
  if (first) ready();
  return { instance, complete: text.includes("data: [DONE]"), errored: false };
}

Deno.test({
  name:
    "faults e2e: an engine killed under 50 streams; then all engines down → 503, healthz 503, recovery",
  ignore,
  async fn(t) {
    const fleet = await startE2eFleet({
      models: ["m", "m", "m", "m"],
      tokenDelayMs: 25,
      tokens: 60,
      healthIntervalMs: 200,
    });
    try {
      await fleet.waitHealthy(4);
      const url = fleet.proxy.url;

      await t.step("50 streams across 4 backends survive one engine dying", async () => {
        let started = 0;
        const allStarted = Promise.withResolvers<void>();
        const streams = Array.from({ length: 50 }, () =>
          stream(url, () => {
            if (++started === 50) allStarted.resolve();
          }));
        await allStarted.promise;
        const victim = fleet.ids[1];
        await fleet.engines[1].close();

        // New requests while the dead backend is still being found out: all served elsewhere.
        for (let i = 0; i < 12; i++) {
          const res = await fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ model: "m", messages: [] }),
          });
          const body = await res.json();
          assert.equal(res.status, 200, JSON.stringify(body));
          assert.notEqual(Number(res.headers.get("x-vastproxy-instance")), victim);
        }

        // Every stream ends (bounded), none hangs.
        let timer: ReturnType<typeof setTimeout> | undefined;
        const ends = await Promise.race([
          Promise.all(streams),
          new Promise<never>((_, reject) =>
            timer = setTimeout(() => reject(new Error("a stream hung")), 15_000)
          ),
        ]).finally(() => clearTimeout(timer));
        const onVictim = ends.filter((e) => e.instance === victim);
        const onOthers = ends.filter((e) => e.instance !== victim);
        assert.ok(onVictim.length > 0, "least-inflight spread streams to every backend");
        // Every stream on the dead engine ends with an error, never a clean
        // close a client could take for a finished answer, nor a fake [DONE].
        for (const e of onVictim) {
          assert.ok(
            e.errored && !e.complete,
            `a truncated stream is an error: ${JSON.stringify(e)}`,
          );
        }
        // Streams elsewhere were untouched.
        assert.ok(onOthers.length > 0, "least-inflight spread streams to the other backends");
        for (const e of onOthers) assert.ok(e.complete && !e.errored, JSON.stringify(e));

        await eventually(
          "victim unhealthy",
          () => fleet.proxy.status().backends.find((b) => b.id === victim)?.state === "unhealthy",
        );
        await fleet.engines[1].restart();
        await fleet.waitHealthy(4);
        await eventually("in-flight 0", () => fleet.proxy.status().counts.inFlight === 0);
      });

      await t.step(
        "every engine down: a quick 503 JSON, healthz 503, then automatic recovery",
        async () => {
          for (const e of fleet.engines) await e.close();
          await eventually("all unhealthy", () => fleet.proxy.status().counts.healthy === 0, 5_000);
          for (const path of ["/v1/chat/completions", "/v1/models"]) {
            const started = Date.now();
            const res = await fetch(`${url}${path}`, {
              method: path === "/v1/models" ? "GET" : "POST",
              body: path === "/v1/models" ? undefined : '{"model":"m","messages":[]}',
            });
            assert.equal(res.status, 503);
            assert.equal(res.headers.get("content-type"), "application/json");
            assert.equal((await res.json()).error.code, "no_healthy_backend");
            assert.ok(Date.now() - started < 500, "503 must not wait for anything");
          }
          const hz = await fetch(`${url}/vastproxy/healthz`);
          assert.equal(hz.status, 503);
          assert.equal((await hz.json()).status, "unavailable");

          for (const e of fleet.engines) await e.restart();
          await fleet.waitHealthy(4);
          const ok = await fetch(`${url}/vastproxy/healthz`);
          assert.equal(ok.status, 200);
          await ok.body?.cancel();
          const res = await fetch(`${url}/v1/chat/completions`, {
            method: "POST",
            body: '{"model":"m","messages":[]}',
          });
          assert.equal(res.status, 200);
          await res.body?.cancel();
        },
      );
    } finally {
      await fleet.close();
    }
  },
});
