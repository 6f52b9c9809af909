/**
 * A running proxy: the watcher feeds the fleet, the fleet owns backends, the
 * relay answers clients from the fleet's routable backends through our own
 * HTTP/1.1 listener (lib/http1/server.ts, for its timeouts and connection cap). `serve`,
 * `demo`, the end-to-end tests and the benchmark all start it through
 * `startProxy()`, so they exercise the same wiring.
 */
import { type Clock, realClock } from "../core/clock.ts";
import type { ServeConfig } from "./serve_config.ts";
import type { Logger } from "../core/logger.ts";
import { VERSION } from "../core/version.ts";
import { VastClient } from "../vast/client.ts";
import { VastApiError } from "../vast/errors.ts";
import type { FleetDiff } from "../core/fleet_diff.ts";
import { Watcher } from "../vast/watcher.ts";
import type { TunnelFactory } from "../tunnel/tunnel.ts";
import { SshTunnelFactory } from "../tunnel/factory.ts";
import { installPacketCipher, uninstallPacketCipher } from "../tunnel/packet_cipher.ts";
import { queryGpus } from "../tunnel/gpu.ts";
import { abortAll } from "./abort_all.ts";
import { createAdminHandler } from "../proxy/admin.ts";
import { BodyBudget, BodyReader } from "../proxy/body.ts";
import { guardBrowsers } from "../proxy/browser_guard.ts";
import type { BackendEvent } from "../proxy/backend.ts";
import { Fleet } from "../proxy/fleet.ts";
import { Marks } from "./marks.ts";
import { exposedGc, IDLE_GC_CHECK_MS, IdleGc } from "./idle_gc.ts";
import { createPolicy } from "../proxy/policies.ts";
import { Admission } from "../proxy/admission.ts";
import { guardResponse } from "../proxy/guard.ts";
import { createHandler } from "../proxy/relay.ts";
import { logRequest, type RequestLogLine } from "../core/request_log.ts";
import type { QueueStatus, StatusSnapshot } from "../proxy/snapshot.ts";
import { errorText } from "../core/errors.ts";
import { type Http1Server, serveHttp1 } from "../http1/server.ts";
import { connectionCapFor, readOpenFilesLimit } from "./fd_limit.ts";

/** What the wiring may take from outside (tests inject fakes). */
export interface ProxyDeps {
  logger: Logger;
  /** SSH tunnels [SshTunnelFactory from the config]. */
  tunnelFactory?: TunnelFactory;
  clock?: Clock;
  /** Fetch used for the vast.ai API [global fetch]. */
  vastFetch?: typeof fetch;
  /** Receives one line per proxied request [logged at info]. */
  onRequestLog?: (line: RequestLogLine) => void;
  /** Receives backend state/path events after they are logged. */
  onBackendEvent?: (event: BackendEvent) => void;
  /** Passphrase for encrypted SSH keys [none]. */
  sshPassphrase?: string | null;
  /** ssh-agent socket [none]. */
  sshAgentSocket?: string | null;
  /** Default key files [the tunnel layer's defaults]. */
  sshDefaultKeyFiles?: string[];
  /** SSH user [root]. */
  sshUsername?: string;
  /**
   * A full collection, run after a quiet spell (idle_gc.ts) [V8's `gc` when
   * the runtime exposes it, as `RUNTIME_V8_FLAGS` does; else none].
   */
  gc?: (() => void) | null;
}

/** Actions the UI's keys trigger; each logs its outcome. */
export interface ProxyActions {
  drainToggle(id: number): void;
  reconnect(id: number): void;
  abortAll(id: number): Promise<void>;
  destroy(id: number): Promise<void>;
}

/** A started proxy. */
export interface RunningProxy {
  /** `http://host:port` the proxy listens on. */
  url: string;
  /** `host:port`, as shown in status. */
  listen: string;
  fleet: Fleet;
  /** A fresh status snapshot. */
  status(): StatusSnapshot;
  actions: ProxyActions;
  /**
   * Stops accepting, lets in-flight requests finish up to `drainTimeoutMs`,
   * clears marks, closes tunnels. Idempotent.
   */
  shutdown(drainTimeoutMs?: number): Promise<void>;
  /** Resolves when the HTTP server has stopped. */
  finished: Promise<void>;
  /** Request-body bytes buffered now, the most ever at once, and `--max-buffered`. */
  bufferedBodies(): { used: number; peak: number; max: number };
}

/** The API rejected the key at start-up: a configuration error (exit 2). */
export class ApiKeyRejectedError extends Error {
  constructor(cause: unknown) {
    super(
      "vast.ai API key rejected: check --api-key / VAST_API_KEY " +
        "(keys are managed at https://cloud.vast.ai/manage-keys/)",
      { cause },
    );
    this.name = "ApiKeyRejectedError";
  }
}

/** After the drain, how long stalled client connections may hold the listener. */
const SHUTDOWN_GRACE_MS = 1_000;
/** How long clearing --mark-label marks may take on exit (the vast API may be down). */
const MARKS_CLEAR_TIMEOUT_MS = 10_000;

/** The queue's counters for status (the wait histogram goes to metrics only). */
function queueStatus(s: { depth: number; rejected: number; timedOut: number }): QueueStatus {
  return { depth: s.depth, rejected: s.rejected, timedOut: s.timedOut };
}

/** Resolves true when `p` settles within `ms`, false otherwise; never rejects. */
async function raceTimeout(p: Promise<unknown>, ms: number, clock: Clock): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([
      p.then(() => true, () => true),
      clock.sleep(ms, timer.signal).then(() => false, () => false),
    ]);
  } finally {
    timer.abort();
  }
}

function describeDiff(diff: FleetDiff, logger: Logger): void {
  for (const s of diff.added) {
    logger.log("info", "instance added", {
      id: s.id,
      status: s.status,
      gpu: s.gpuLabel,
      engine: s.engine,
      port: s.remotePort,
      proxied: s.eligible,
    });
  }
  for (const c of diff.changed) {
    logger.log("info", "instance changed", {
      id: c.after.id,
      status: c.after.status,
      rebuild: c.rebuild,
      proxied: c.after.eligible,
    });
  }
  for (const s of diff.removed) logger.log("info", "instance removed", { id: s.id });
}

/**
 * Starts the proxy: binds the listener, reads the fleet once, then keeps
 * polling. Rejects with `ApiKeyRejectedError` when the first listing says the
 * key is bad (later auth errors only get reported: the known fleet keeps
 * serving).
 */
export async function startProxy(config: ServeConfig, deps: ProxyDeps): Promise<RunningProxy> {
  const clock = deps.clock ?? realClock;
  const logger = deps.logger;
  const life = new AbortController();
  const startedAt = clock.now();

  const client = new VastClient({
    apiKey: config.apiKey,
    apiUrl: config.apiUrl,
    fetch: deps.vastFetch,
    clock,
    logger,
  });
  // Process-wide (ssh2's cipher classes are shared): the flag decides it
  // here, once per proxy, and the default re-installs it.
  if (config.sshNativeCrypto) uninstallPacketCipher();
  else installPacketCipher();
  const tunnelFactory = deps.tunnelFactory ?? new SshTunnelFactory({
    sshKeys: config.sshKeys,
    knownHostsPath: config.knownHosts,
    insecureHostKeys: config.insecureHostKeys,
    passphrase: deps.sshPassphrase ?? null,
    agentSocket: deps.sshAgentSocket ?? null,
    defaultKeyFiles: deps.sshDefaultKeyFiles,
    username: deps.sshUsername,
    clock,
    logger,
  });

  let marks: Marks | undefined;
  const fleet: Fleet = new Fleet({
    tunnelFactory,
    clock,
    logger,
    healthIntervalMs: config.healthIntervalMs,
    gpuProbe: queryGpus,
    drainTimeoutMs: config.drainTimeoutMs,
    onEvent: (e) => {
      // Backends log their own state changes; path changes are logged here.
      if (e.type === "path") {
        logger.log("info", "backend ssh path", { id: e.id, from: e.from, to: e.to });
      }
      marks?.onEvent(e);
      deps.onBackendEvent?.(e);
    },
  });
  if (config.markLabel) {
    marks = new Marks(config.markLabel, { client, labelOf: (id) => fleet.labelOf(id), logger });
  }

  const watcher = new Watcher({
    client,
    clock,
    pollIntervalMs: config.pollIntervalMs,
    filters: { label: config.label, instances: config.instances },
    remotePort: config.remotePort,
    logger,
  });

  // Each client connection costs a descriptor (Deno already raised the soft
  // limit to the hard one): keep the connection cap below it, so shedding
  // (503) comes before EMFILE.
  const fdLimit = readOpenFilesLimit();
  const maxConnections = connectionCapFor(config.maxConnections, fdLimit);
  if (maxConnections < config.maxConnections) {
    logger.log("warn", "--max-connections lowered to fit the open-file limit", {
      asked: config.maxConnections,
      using: maxConnections,
      openFiles: fdLimit.soft,
    });
  }

  let server: Http1Server | undefined;
  let listen = `${config.listen.hostname}:${config.listen.port}`;
  const status = () =>
    fleet.status({
      version: VERSION,
      listen,
      policy: config.policy,
      startedAt,
      apiError: watcher.lastError(),
      limits: {
        openFiles: fdLimit.soft,
        connections: server?.connections ?? 0,
        maxConnections,
      },
      queue: admission ? queueStatus(admission.stats()) : undefined,
    });

  const bodyBudget = new BodyBudget({
    maxBytes: config.maxBufferedBytes,
    maxBodyBytes: config.maxBodyBytes,
  });
  // The headless writer formats request lines itself (`LineLogger.request`).
  const onRequestLog = deps.onRequestLog ?? ((l: RequestLogLine) => logRequest(logger, l));
  const policy = createPolicy(config.policy);
  // A policy that can tell saturation enables the admission queue.
  const admission = policy.saturated
    ? new Admission({ saturated: (t, extra) => policy.saturated!(t, extra), clock })
    : undefined;
  const relay = createHandler({
    pool: fleet,
    policy,
    admission,
    stickyHeader: config.stickyHeader,
    authToken: config.authToken,
    maxBodyBytes: config.maxBodyBytes,
    bodies: new BodyReader({
      maxBodyBytes: config.maxBodyBytes,
      budget: bodyBudget,
      timeoutMs: config.bodyTimeoutMs,
      clock,
    }),
    admin: createAdminHandler({
      status,
      histograms: () => fleet.histograms(),
      llm: () => fleet.llmData(),
      ...(admission ? { queue: () => admission.stats() } : {}),
    }),
    clock,
    logger,
    onRequestLog,
  });
  // Host check and CORS sit outside the relay: preflights are answered
  // before authentication, and proxy-made answers get the same CORS headers.
  const handler = guardBrowsers(relay, {
    authToken: config.authToken,
    listenHostname: config.listen.hostname,
    allowedHosts: config.allowedHosts,
    corsOrigins: config.corsOrigins,
    onRequestLog,
    clock,
  });
  if (config.corsOrigins.includes("*") && !config.authToken) {
    logger.log("warn", "--cors-origin * without --auth-token: any web page can use this proxy");
  }

  // Every response leaves through guardResponse: a header the proxy cannot
  // write is dropped (and logged) on every path, never a failed response.
  const onUnsendableHeader = (name: string) =>
    logger.log("warn", "dropped a response header the proxy cannot send", { header: name });

  // Requests inside the handler, for the idle collector.
  let handling = 0;
  try {
    server = serveHttp1({
      hostname: config.listen.hostname,
      port: config.listen.port,
      headerTimeoutMs: config.headerTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      maxConnections,
      logger,
      // A handler bug must cost one request, never the proxy.
      onError: (err) => {
        logger.log("error", "request handler failed", { error: errorText(err) });
        return Response.json(
          { error: { message: "internal proxy error", type: "server_error", code: "internal" } },
          { status: 500 },
        );
      },
    }, async (req, info) => {
      // Until the handler returns (body read, admission, engine's answer);
      // a streamed answer then counts in the backend's in-flight.
      handling++;
      try {
        return guardResponse(await handler(req, info), onUnsendableHeader);
      } finally {
        handling--;
      }
    });
  } catch (err) {
    if (err instanceof Deno.errors.AddrInUse) {
      throw new Error(
        `Cannot listen on ${listen}: address in use; stop the other process or pick --listen HOST:PORT`,
      );
    }
    throw err;
  }
  const http = server;
  const addr = http.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  listen = `${host}:${addr.port}`;
  const url = `http://${listen}`;
  logger.log("info", "listening", {
    url,
    policy: config.policy,
    maxConnections,
    openFiles: fdLimit.soft ?? "unknown",
  });

  // The first listing decides whether the key works at all.
  try {
    const diff = await watcher.pollOnce(life.signal);
    if (diff) {
      describeDiff(diff, logger);
      await fleet.apply(diff);
    }
  } catch (err) {
    if (err instanceof VastApiError && err.kind === "auth") {
      life.abort();
      await http.closeAll();
      await fleet.drainAll(0);
      throw new ApiKeyRejectedError(err);
    }
    logger.log("warn", "vast.ai listing failed at start; retrying", { error: errorText(err) });
  }

  const pollLoop = (async () => {
    try {
      await clock.sleep(config.pollIntervalMs, life.signal);
    } catch {
      return;
    }
    await watcher.start(life.signal, async (diff) => {
      describeDiff(diff, logger);
      await fleet.apply(diff);
      // Retries failed label calls; not awaited, so a slow vast API never
      // holds up the next poll.
      void marks?.flush();
    });
  })();

  const gc = deps.gc === undefined ? exposedGc() : deps.gc;
  const idleGc = gc
    ? new IdleGc({
      traffic: () => {
        const { finished, inFlight } = fleet.traffic();
        return { finished, busy: handling + inFlight };
      },
      memory: () => Deno.memoryUsage(),
      gc,
      logger,
    })
    : null;
  const idleLoop = (async () => {
    while (idleGc) {
      try {
        await clock.sleep(IDLE_GC_CHECK_MS, life.signal);
      } catch {
        return;
      }
      try {
        idleGc.tick();
      } catch (err) {
        logger.log("warn", "idle memory collection failed", { error: errorText(err) });
      }
    }
  })();

  const actions: ProxyActions = {
    drainToggle(id) {
      const b = fleet.backend(id);
      if (!b) return;
      const drained = !b.snapshot().drained;
      b.setDrained(drained);
      logger.log("info", drained ? "backend drained by user" : "backend undrained by user", { id });
    },
    reconnect(id) {
      const b = fleet.backend(id);
      if (!b) return;
      b.reconnect();
      logger.log("info", "backend reconnect requested", { id });
    },
    async abortAll(id) {
      const b = fleet.backend(id);
      if (!b) return;
      try {
        const r = await abortAll(b);
        logger.log("info", "abort all sent", { id, status: r.status });
      } catch (err) {
        logger.log("warn", "abort all failed", { id, error: errorText(err) });
      }
    },
    async destroy(id) {
      try {
        await client.destroy(id);
        logger.log("warn", "instance destroyed by user", { id });
      } catch (err) {
        logger.log("error", "destroy failed", { id, error: errorText(err) });
      }
    },
  };

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (drainTimeoutMs = config.drainTimeoutMs) => {
    shuttingDown ??= (async () => {
      logger.log("info", "shutting down", {
        inFlight: status().counts.inFlight,
        drainTimeoutMs,
      });
      life.abort(); // stops polling and health loops
      // Stops accepting and closes idle client connections; requests in
      // flight finish (their connections close after the response).
      const drained = http.shutdown();
      const deadline = clock.now() + drainTimeoutMs;
      await raceTimeout(drained, drainTimeoutMs, clock);
      // Closing the tunnels ends whatever is still streaming after the timeout,
      // which lets `shutdown()` complete.
      await fleet.drainAll(Math.max(0, deadline - clock.now()));
      // With tunnels closed, relayed streams end on their own; a client that
      // stalled mid-upload or stopped reading would still hold shutdown() open
      // forever, so give it a moment and then close what is left.
      if (!(await raceTimeout(drained, SHUTDOWN_GRACE_MS, clock))) await http.closeAll();
      await pollLoop;
      await idleLoop;
      if (marks && !(await raceTimeout(marks.clearAll(), MARKS_CLEAR_TIMEOUT_MS, clock))) {
        logger.log("warn", "could not clear --mark-label marks in time; some may remain", {});
      }
      const left = status().counts.inFlight;
      if (left > 0) logger.log("warn", "drain timeout: closing with requests in flight", { left });
      logger.log("info", "stopped");
    })();
    return shuttingDown;
  };

  return {
    url,
    listen,
    fleet,
    status,
    actions,
    shutdown,
    finished: http.finished,
    bufferedBodies: () => ({
      used: bodyBudget.used,
      peak: bodyBudget.peak,
      max: bodyBudget.maxBytes,
    }),
  };
}
