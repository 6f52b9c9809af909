/**
 * A proxy started with the real wiring (`startProxy`: watcher, fleet,
 * backends, relay, admin, `Deno.serve` on 127.0.0.1) against a fake vast.ai
 * API, but with scripted tunnels instead of SSH: each instance's tunnel is up
 * at once and points either at a real fake engine (`engines: true`) or at an
 * address that only the injected upstream `fetch` answers. For faults and bad
 * input that are about HTTP or the vast API, where a real sshd adds nothing
 * but seconds.
 */
import type { Clock } from "../../lib/core/clock.ts";
import type { RequestHandler } from "../_helpers/fake_tunnel.ts";
import type { RequestLogLine } from "../../lib/proxy/relay.ts";
import { MemoryLogger } from "../../lib/core/logger.ts";
import { type RunningProxy, startProxy } from "../../lib/app/proxy_app.ts";
import { type FakeEngine, startFakeEngine } from "../../lib/sim/fake_engine.ts";
import {
  type FakeVastApi,
  makeInstanceRecord,
  startFakeVastApi,
} from "../../lib/sim/fake_vast_api.ts";
import type { TunnelFactory, TunnelOptions } from "../../lib/tunnel/tunnel.ts";
import type { BackendSpec } from "../../lib/core/backend_spec.ts";
import { type FakeTunnel, FakeTunnelFactory } from "../_helpers/fake_tunnel.ts";
import { testServeConfig } from "../_helpers/config.ts";
import type { ServeConfig } from "../../lib/app/serve_config.ts";

/** The vast API key of every local proxy (tests grep output for it). */
export const LOCAL_API_KEY = "local-vast-key-5e1b0c2a9d";
/** First instance id; instance i has id FIRST_ID + i. */
export const FIRST_ID = 4_200_001;

/** Options of `startLocalProxy`. */
export interface LocalProxyOptions {
  /** Number of instances (default 2). */
  instances?: number;
  /** Start a real fake engine per instance and point its tunnel there (default true). */
  engines?: boolean;
  /** Engine token delay for streams, ms. */
  tokenDelayMs?: number;
  /** Model id every engine serves (default `m`). */
  model?: string;
  /** Fields merged into every instance's vast record (e.g. a hostile `label`). */
  record?: Record<string, unknown>;
  authToken?: string | null;
  maxBodyBytes?: number;
  pollIntervalMs?: number;
  healthIntervalMs?: number;
  drainTimeoutMs?: number;
  headerTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  clock?: Clock;
  /** Answers the tunnels' requests when no engines run (`engines: false`). */
  handler?: RequestHandler;
  /** Fetch for the vast API [global fetch]. */
  vastFetch?: typeof fetch;
  /** Any other serve option (upload limits, Host and CORS policy, …). */
  config?: Partial<ServeConfig>;
  /** Receives each request's log line [logged]. */
  onRequestLog?: (line: RequestLogLine) => void;
}

/** A running local proxy and what it talks to. */
export interface LocalProxy {
  proxy: RunningProxy;
  api: FakeVastApi;
  /** Per instance, when `engines` is on. */
  engines: FakeEngine[];
  ids: number[];
  /** Instance tokens (jupyter_token), in id order. */
  tokens: string[];
  /** Every tunnel opened, in order (a rebuild opens a new one). */
  tunnels: FakeTunnelFactory;
  logger: MemoryLogger;
  /** Base URL the tunnel of instance `id` reports. */
  baseUrlOf(id: number): string;
  close(): Promise<void>;
}

/** Address the tunnel of instance index `i` reports when no engine runs behind it. */
export function virtualBaseUrl(i: number): string {
  return `http://127.0.0.1:${41_000 + i}`;
}

/** A 64-hex-char token like vast's jupyter_token. */
export function randomToken(): string {
  return crypto.randomUUID().replaceAll("-", "") + crypto.randomUUID().replaceAll("-", "");
}

/** Starts the proxy; `close()` stops everything it started. */
export async function startLocalProxy(opts: LocalProxyOptions = {}): Promise<LocalProxy> {
  const n = opts.instances ?? 2;
  const useEngines = opts.engines ?? true;
  const cleanups: (() => Promise<void>)[] = [];
  const close = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
    cleanups.length = 0;
  };
  try {
    const ids: number[] = [];
    const tokens: string[] = [];
    const engines: FakeEngine[] = [];
    const urls = new Map<number, string>();
    for (let i = 0; i < n; i++) {
      const id = FIRST_ID + i;
      const token = randomToken();
      ids.push(id);
      tokens.push(token);
      if (useEngines) {
        const engine = await startFakeEngine({
          model: opts.model ?? "m",
          token,
          tokenDelayMs: opts.tokenDelayMs ?? 0,
        });
        cleanups.push(() => engine.close());
        engines.push(engine);
        urls.set(id, engine.url);
      } else {
        urls.set(id, virtualBaseUrl(i));
      }
    }
    const api = startFakeVastApi({
      apiKey: LOCAL_API_KEY,
      instances: ids.map((id, i) =>
        makeInstanceRecord({ id, label: "faults", ...opts.record, jupyter_token: tokens[i] })
      ),
    });
    cleanups.push(() => api.close());
    const logger = new MemoryLogger();
    const tunnels = new FakeTunnelFactory({
      now: () => (opts.clock ?? { now: Date.now }).now(),
      handler: opts.handler,
    });
    // Every tunnel comes up at once, at its instance's address.
    const tunnelFactory: TunnelFactory = {
      open(spec: BackendSpec, o?: TunnelOptions): FakeTunnel {
        const t = tunnels.open(spec, o);
        t.up({ baseUrl: urls.get(spec.id) ?? virtualBaseUrl(99) });
        return t;
      },
    };
    const config = testServeConfig({
      apiKey: LOCAL_API_KEY,
      apiUrl: api.url,
      authToken: opts.authToken ?? null,
      pollIntervalMs: opts.pollIntervalMs ?? 60_000,
      healthIntervalMs: opts.healthIntervalMs ?? 60_000,
      maxBodyBytes: opts.maxBodyBytes ?? 1024 * 1024,
      drainTimeoutMs: opts.drainTimeoutMs ?? 1_000,
      headerTimeoutMs: opts.headerTimeoutMs ?? 10_000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
      maxConnections: opts.maxConnections ?? 1000,
      ...opts.config,
    });
    const proxy = await startProxy(config, {
      logger,
      tunnelFactory,
      clock: opts.clock,
      vastFetch: opts.vastFetch,
      onRequestLog: opts.onRequestLog,
    });
    cleanups.push(() => proxy.shutdown(200));
    return {
      proxy,
      api,
      engines,
      ids,
      tokens,
      tunnels,
      logger,
      baseUrlOf: (id) => urls.get(id)!,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Polls `check` every 10 ms (real time) until true, or throws naming `what`. */
export async function until(what: string, check: () => boolean, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * One raw exchange over TCP: writes `request`, reads until the server
 * closes or `timeoutMs`. `halfClose` shuts the write side after the request,
 * as a client that has said everything does.
 */
export async function rawExchange(
  port: number,
  request: string | Uint8Array,
  opts: { timeoutMs?: number; readUntil?: (text: string) => boolean; halfClose?: boolean } = {},
): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* already closed */ }
  }, opts.timeoutMs ?? 3_000);
  let text = "";
  try {
    const bytes = typeof request === "string" ? new TextEncoder().encode(request) : request;
    await conn.write(bytes);
    if (opts.halfClose) await conn.closeWrite();
    const buf = new Uint8Array(64 * 1024);
    const decoder = new TextDecoder();
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        break;
      }
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
      if (opts.readUntil?.(text)) break;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer or the server */ }
  }
  return text;
}
