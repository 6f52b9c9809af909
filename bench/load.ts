/**
 * The load generator: a separate process so its CPU use never shares an
 * event loop with the proxy. It reads one JSON job per stdin line and
 * answers one JSON result per stdout line, so bench.ts starts it once and
 * reuses it for every round. Traffic is plain `fetch` with HTTP/1.1
 * keep-alive (each job's own pool opens one connection per concurrent
 * request and reuses it), the same client code for every path.
 *
 * Every job is bounded: by count, by duration, and by a per-request timeout.
 */
import { quantile } from "./_stats.ts";

/** Closed-loop request/response load. */
export interface RequestsJob {
  kind: "requests";
  /** Base URLs; worker k uses targets[k % targets.length]. */
  targets: string[];
  method: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
  concurrency: number;
  /** Measured requests stop after this many ms or `maxRequests`, whichever first. */
  durationMs: number;
  maxRequests: number;
  /** Unmeasured requests per worker first (fills connection pools). */
  warmupPerWorker: number;
}

/** Many concurrent SSE streams from the fake engine's `/sse` route. */
export interface SseJob {
  kind: "sse";
  targets: string[];
  streams: number;
  events: number;
  intervalMs: number;
  /** Whole-job bound, ms. */
  timeoutMs: number;
}

/** One big download. */
export interface BulkJob {
  kind: "bulk";
  target: string;
  bytes: number;
  timeoutMs: number;
}

export type Job = RequestsJob | SseJob | BulkJob;

export interface RequestsResult {
  ok: number;
  errors: number;
  firstError: string | null;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
}

export interface SseResult {
  streams: number;
  completed: number;
  errors: number;
  firstError: string | null;
  events: number;
  expectedEvents: number;
  /** Reads that carried more than one event (an event held and merged with the next). */
  merged: number;
  /** Events out of order or missing inside a completed stream. */
  gaps: number;
  delayP50Ms: number;
  delayP99Ms: number;
  delayMaxMs: number;
  ttfbP50Ms: number;
  ttfbP99Ms: number;
}

export interface BulkResult {
  bytes: number;
  seconds: number;
  mbPerSec: number;
  error: string | null;
}

const errText = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

async function runRequests(job: RequestsJob, client: Deno.HttpClient): Promise<RequestsResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  const init = (): RequestInit & { client: Deno.HttpClient } => ({
    client,
    method: job.method,
    headers: job.headers,
    body: job.body,
    signal: AbortSignal.timeout(30_000),
  });
  const one = async (url: string): Promise<boolean> => {
    try {
      const res = await fetch(url, init());
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      return true;
    } catch (err) {
      errors++;
      firstError ??= errText(err);
      return false;
    }
  };
  const urls = Array.from(
    { length: job.concurrency },
    (_, k) => `${job.targets[k % job.targets.length]}${job.path}`,
  );
  await Promise.all(urls.map(async (url) => {
    for (let i = 0; i < job.warmupPerWorker; i++) await one(url);
  }));
  errors = 0;
  firstError = null;
  const start = performance.now();
  const stopAt = start + job.durationMs;
  let issued = 0;
  await Promise.all(urls.map(async (url) => {
    while (performance.now() < stopAt && issued < job.maxRequests) {
      issued++;
      const t0 = performance.now();
      if (await one(url)) latencies.push(performance.now() - t0);
    }
  }));
  const seconds = (performance.now() - start) / 1000;
  return {
    ok: latencies.length,
    errors,
    firstError,
    seconds,
    rps: latencies.length / seconds,
    p50Ms: quantile(latencies, 0.5),
    p99Ms: quantile(latencies, 0.99),
  };
}

/** Wall-clock ms with sub-ms resolution, comparable with the engine's `Date.now()`. */
const wallNow = () => performance.timeOrigin + performance.now();

async function runSse(job: SseJob, client: Deno.HttpClient): Promise<SseResult> {
  const delays: number[] = [];
  const ttfbs: number[] = [];
  let completed = 0;
  let errors = 0;
  let firstError: string | null = null;
  let events = 0;
  let merged = 0;
  let gaps = 0;
  const deadline = AbortSignal.timeout(job.timeoutMs);
  const decoder = new TextDecoder();
  const one = async (url: string) => {
    const t0 = performance.now();
    try {
      const res = await fetch(url, { signal: deadline, client });
      if (res.status !== 200 || !res.body) throw new Error(`HTTP ${res.status}`);
      let buf = "";
      let next = 0;
      let first = true;
      let done = false;
      for await (const chunk of res.body) {
        const now = wallNow();
        if (first) {
          ttfbs.push(performance.now() - t0);
          first = false;
        }
        buf += decoder.decode(chunk, { stream: true });
        let inThisRead = 0;
        for (let end = buf.indexOf("\n\n"); end >= 0; end = buf.indexOf("\n\n")) {
          const ev = buf.slice(0, end);
          buf = buf.slice(end + 2);
          inThisRead++;
          const data = ev.startsWith("data: ") ? ev.slice(6) : ev;
          if (data === "[DONE]") {
            done = true;
            continue;
          }
          const { i, t } = JSON.parse(data) as { i: number; t: number };
          if (i !== next) gaps++;
          next = i + 1;
          events++;
          delays.push(now - t);
        }
        if (inThisRead > 1) merged++;
      }
      if (!done || next !== job.events) throw new Error(`stream ended after ${next} events`);
      completed++;
    } catch (err) {
      errors++;
      firstError ??= errText(err);
    }
  };
  const q = `/sse?n=${job.events}&interval=${job.intervalMs}`;
  await Promise.all(
    Array.from(
      { length: job.streams },
      (_, k) => one(`${job.targets[k % job.targets.length]}${q}`),
    ),
  );
  return {
    streams: job.streams,
    completed,
    errors,
    firstError,
    events,
    expectedEvents: job.streams * job.events,
    merged,
    gaps,
    delayP50Ms: quantile(delays, 0.5),
    delayP99Ms: quantile(delays, 0.99),
    delayMaxMs: quantile(delays, 1),
    ttfbP50Ms: quantile(ttfbs, 0.5),
    ttfbP99Ms: quantile(ttfbs, 0.99),
  };
}

async function runBulk(job: BulkJob, client: Deno.HttpClient): Promise<BulkResult> {
  const t0 = performance.now();
  let bytes = 0;
  let error: string | null = null;
  try {
    const res = await fetch(`${job.target}/bytes?n=${job.bytes}`, {
      signal: AbortSignal.timeout(job.timeoutMs),
      client,
    });
    for await (const chunk of res.body!) bytes += chunk.byteLength;
    if (bytes !== job.bytes) error = `got ${bytes} of ${job.bytes} bytes`;
  } catch (err) {
    error = errText(err);
  }
  const seconds = (performance.now() - t0) / 1000;
  return { bytes, seconds, mbPerSec: bytes / 1e6 / seconds, error };
}

/**
 * Runs one job on a connection pool of its own, closed when the job ends,
 * so no job inherits another's idle connections. That matters for (b):
 * OpenSSH's client polls the socket of every open channel on each turn of
 * its loop (poll() over 37 descriptors with 32 idle connections), and the
 * idle connections left by earlier jobs (32 from each warm-up burst) slowed
 * its concurrency-1 p50 from ~0.5 ms to 0.6–0.9 ms, which S1 is not meant
 * to measure.
 */
async function runJob(job: Job): Promise<unknown> {
  const client = Deno.createHttpClient({});
  try {
    switch (job.kind) {
      case "requests":
        return await runRequests(job, client);
      case "sse":
        return await runSse(job, client);
      case "bulk":
        return await runBulk(job, client);
    }
  } finally {
    client.close();
  }
}

if (import.meta.main) {
  const out = new TextEncoder();
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let pending = "";
  for await (const text of lines) {
    pending += text;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (!line.trim()) continue;
      const result = await runJob(JSON.parse(line) as Job);
      await Deno.stdout.write(out.encode(JSON.stringify(result) + "\n"));
    }
  }
}
