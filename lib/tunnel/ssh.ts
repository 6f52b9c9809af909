/**
 * The self-healing SSH tunnel to one instance (DESIGN.md §5), and the factory
 * that opens them. `SshTunnel` is the one owner of its state: a single loop
 * connects, waits while up, upgrades proxy → direct, and backs off; ssh2
 * callbacks only report a loss and poke the loop.
 */
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import type { BackendSpec } from "../core/backend_spec.ts";
import { connectAny, type Connection, type ConnectOptions, endClient } from "./connect.ts";
import { nextTunnelStep, type TunnelLoopState } from "./tunnel_step.ts";
import { HostKeyMismatchError, SshConnectError, TunnelNotUpError } from "./errors.ts";
import { Http1Client } from "../http1/client.ts";
import { Http1Error, type Http1Request, type Http1Response } from "../http1/types.ts";
import type { Upgraded } from "../http1/upgrade.ts";
import type { ForwardOutClient } from "./forward.ts";
import { execCommand } from "./gpu.ts";
import { attachReadDirect } from "./channel_read.ts";
import { attachTryWriteNow } from "./channel_write.ts";
// @ts-types="@types/ssh2"
import type { ClientChannel } from "ssh2";
import type { ExecResult, Tunnel, TunnelEvent, TunnelOptions, TunnelStatus } from "./tunnel.ts";

/** Timing and policy shared by every tunnel of a factory; all in ms. */
export interface TunnelSettings {
  /** Connect options minus the per-instance and per-attempt fields. */
  connect: Omit<ConnectOptions, "instanceId" | "signal">;
  clock: Clock;
  random: () => number;
  logger: Logger;
  /** How often a proxied tunnel tries its direct endpoint. */
  directRetryMs: number;
  /** A connection up this long resets the reconnect backoff. */
  healthyResetMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** How long a replaced connection may finish its in-flight requests. */
  drainTimeoutMs: number;
  /** How long an idle channel stays pooled (below the engines' keep-alive timeout). */
  idleChannelTtlMs?: number;
  /** Opens an SSH connection over the first endpoint that works [connectAny]; tests inject one. */
  connectAny?: typeof connectAny;
}

/** A connection in use: its HTTP client, when it came up, whether it is gone. */
interface Live extends Connection {
  /** Every HTTP exchange with the instance rides this client's channels. */
  http: Http1Client;
  upAt: number;
  gone: boolean;
}

/** The SSH connection to one instance; see `Tunnel`. */
export class SshTunnel implements Tunnel {
  /** vast.ai instance id. */
  readonly instanceId: number;
  #spec: BackendSpec;
  #s: TunnelSettings;
  #verify: NonNullable<TunnelOptions["verify"]>;
  #status: TunnelStatus;
  #listeners = new Set<(event: TunnelEvent) => void>();
  #queue: TunnelEvent[] = [];
  #emitting = false;
  #live: Live | null = null;
  #attempt = 0;
  // The first connect and reconnect() go at once; later ones back off.
  #immediate = true;
  #mismatch = false;
  #directDisabled = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  // Aborts in-flight connects when the tunnel closes.
  #abort = new AbortController();
  // Aborted (and replaced) whenever the loop must re-evaluate: loss,
  // reconnect(), close(). Every wait in the loop listens to it.
  #wake = new AbortController();
  // Connections still closing: retired ones draining after a proxy → direct
  // swap. close() waits for all of them (or cuts them, when not graceful).
  #drains = new Set<Promise<void>>();
  #retired = new Set<Live>();
  #loop: Promise<void>;

  /** Starts connecting at once; use `SshTunnelFactory.open()` rather than this. */
  constructor(spec: BackendSpec, settings: TunnelSettings, opts: TunnelOptions = {}) {
    this.instanceId = spec.id;
    this.#spec = spec;
    this.#s = settings;
    this.#verify = opts.verify ?? (() => Promise.resolve(true));
    this.#status = Object.freeze({
      state: "connecting",
      path: null,
      endpoint: null,
      reason: null,
      since: settings.clock.now(),
    });
    this.#loop = this.#runSafely();
  }

  /** Current state (a frozen value). */
  status(): TunnelStatus {
    return this.#status;
  }

  /** Runs `command` on the live connection (default timeout 10 s). */
  exec(command: string, opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    const live = this.#live;
    if (!live || live.gone) {
      return Promise.reject(new TunnelNotUpError(this.instanceId, this.#status.state));
    }
    return execCommand(live.client, command, {
      timeoutMs: opts.timeoutMs ?? 10_000,
      instanceId: this.instanceId,
    });
  }

  /**
   * Sends an HTTP request over a channel of the live connection. Looked up
   * per request, so after a proxy → direct swap new requests go direct while
   * those already running finish on the retired connection.
   */
  request(req: Http1Request): Promise<Http1Response> {
    const live = this.#live;
    if (!live || live.gone) {
      return Promise.reject(
        new Http1Error(`tunnel to instance ${this.instanceId} is ${this.#status.state}`, {
          sent: false,
        }),
      );
    }
    return live.http.request(req);
  }

  /** Sends an upgrade request over a fresh channel of the live connection. */
  upgrade(req: Http1Request): Promise<Upgraded | Http1Response> {
    const live = this.#live;
    if (!live || live.gone) {
      return Promise.reject(
        new Http1Error(`tunnel to instance ${this.instanceId} is ${this.#status.state}`, {
          sent: false,
        }),
      );
    }
    return live.http.upgrade(req);
  }

  /** Drops the current connection and reconnects now, resetting backoff. */
  reconnect(): void {
    if (this.#closed) return;
    this.#attempt = 0;
    this.#immediate = true;
    if (this.#mismatch) {
      // The loop stopped at the mismatch; the user may have deleted the pin
      // since, so an explicit reconnect starts it again (once).
      this.#mismatch = false;
      this.#loop = this.#loop.then(() => this.#closed ? undefined : this.#runSafely());
      return;
    }
    if (this.#live) this.#lose(this.#live, "reconnect requested");
    else this.#poke();
  }

  /** Adds a listener; events arrive in order, each listener called synchronously. */
  subscribe(listener: (event: TunnelEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops every loop and closes the connection(s). */
  close(opts: { graceful?: boolean; timeoutMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#shutdown(opts.graceful ?? false, opts.timeoutMs ?? 30_000);
    return this.#closing;
  }

  async #shutdown(graceful: boolean, timeoutMs: number): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    this.#poke();
    const live = this.#live;
    this.#live = null;
    if (live) {
      live.gone = true;
      if (graceful) await live.http.drain(timeoutMs);
      else live.http.close();
      endClient(live.client);
    }
    await this.#loop;
    // Retired connections: a graceful close lets them finish too; otherwise
    // they are cut now.
    if (!graceful) { for (const old of this.#retired) old.http.close(); }
    await Promise.all([...this.#drains]);
    this.#set({ state: "closed", path: null, reason: null });
    this.#emit({ type: "closed" });
  }

  // ---- the loop ----------------------------------------------------------

  #runSafely(): Promise<void> {
    return this.#run().catch((err) => {
      // The loop handles its own failures; reaching here is a bug, not a state.
      this.#log("error", "tunnel loop crashed", { error: String(err) });
    });
  }

  async #run(): Promise<void> {
    while (await this.stepOnce());
  }

  /** Where the loop stands, for `nextTunnelStep`. */
  #loopState(): TunnelLoopState {
    return {
      closed: this.#closed,
      mismatch: this.#mismatch,
      livePath: this.#live?.endpoint.path ?? null,
      hasDirect: this.#spec.endpoints.some((e) => e.path === "direct"),
      directDisabled: this.#directDisabled,
      attempt: this.#attempt,
      immediate: this.#immediate,
    };
  }

  /**
   * One step of the loop (see tunnel_step.ts): wait while up, try the direct
   * path when on the proxy one, or (re)connect after the backoff delay.
   * Every wait ends early when something changes (loss, reconnect(),
   * close()), and the next step is decided afresh. Resolves false once the
   * loop should end. Exposed for tests; the tunnel runs it itself.
   */
  async stepOnce(): Promise<boolean> {
    const step = nextTunnelStep(this.#loopState(), this.#s);
    switch (step.kind) {
      case "stop":
        return false;
      case "wait":
        await this.#nap(Infinity);
        return true;
      case "upgrade": {
        const live = this.#live;
        if (live && await this.#nap(step.delayMs)) await this.#tryDirect(live);
        return true;
      }
      case "connect":
        if (step.delayMs > 0) {
          this.#log("debug", "SSH reconnect scheduled", { delayMs: step.delayMs });
          this.#attempt++;
          // Woken early (reconnect(), close()): decide again.
          if (!await this.#nap(step.delayMs)) return !this.#closed;
        }
        this.#immediate = false;
        if (await this.#connect() === "mismatch") this.#mismatch = true;
        return true;
    }
  }

  /** One attempt over all endpoints; on success the tunnel is up. */
  async #connect(): Promise<"up" | "failed" | "mismatch" | "closed"> {
    this.#set({ state: "connecting", path: null });
    let conn: Connection;
    try {
      conn = await this.#connectAny(this.#spec.endpoints, this.#connectOptions());
    } catch (err) {
      if (this.#closed) return "closed";
      const reason = err instanceof Error ? err.message : String(err);
      if (err instanceof HostKeyMismatchError) {
        this.#set({ state: "hostkey-mismatch", endpoint: err.endpoint, reason });
        this.#log("error", reason, {});
        this.#emit({ type: "hostkey-mismatch", reason });
        return "mismatch";
      }
      const endpoint = err instanceof SshConnectError ? err.attempts.at(-1)?.endpoint : undefined;
      this.#set({ state: "down", reason, endpoint: endpoint ?? this.#status.endpoint });
      this.#log("warn", reason, {});
      this.#emit({ type: "down", reason });
      return "failed";
    }
    // Adopting is synchronous from this check on, so a close can no longer
    // slip between the check and the tunnel's own 'close' listener.
    if (this.#closed || conn.isClosed()) {
      endClient(conn.client);
      if (this.#closed) return "closed";
      const reason =
        `SSH connection to instance ${this.instanceId} at ${conn.address} closed during setup`;
      this.#set({ state: "down", reason });
      this.#emit({ type: "down", reason });
      return "failed";
    }
    this.#adopt(conn, this.#httpClient(conn));
    return "up";
  }

  /** The HTTP/1.1 client over `conn`'s `direct-tcpip` channels to the engine's port. */
  #httpClient(conn: Connection): Http1Client {
    return new Http1Client(openChannel(conn.client, this.#spec.remotePort), {
      host: `127.0.0.1:${this.#spec.remotePort}`,
      idleTtlMs: this.#s.idleChannelTtlMs,
      now: () => this.#s.clock.now(),
    });
  }

  /**
   * The one place a connection enters service: makes `conn` live, retiring
   * the connection it replaces (a proxy → direct upgrade) so requests
   * already on that one finish there, and announces the new path.
   */
  #adopt(conn: Connection, http: Http1Client): void {
    if (this.#live) this.#retire(this.#live);
    const live: Live = { ...conn, http, upAt: this.#s.clock.now(), gone: false };
    conn.client.on("error", (err: Error & { code?: string }) => {
      this.#lose(live, lossReason(err));
    });
    conn.client.on("close", () => this.#lose(live, "SSH connection closed"));
    this.#live = live;
    this.#set({ state: "up", path: conn.endpoint.path, endpoint: conn.address, reason: null });
    this.#log("info", "SSH tunnel up", { path: conn.endpoint.path, endpoint: conn.address });
    this.#emit({ type: "up", path: conn.endpoint.path, endpoint: conn.address });
  }

  /** Opens, verifies and swaps in a direct connection; keeps `live` otherwise. */
  async #tryDirect(live: Live): Promise<void> {
    const direct = this.#spec.endpoints.filter((e) => e.path === "direct");
    let conn: Connection;
    try {
      conn = await this.#connectAny(direct, this.#connectOptions());
    } catch (err) {
      if (err instanceof HostKeyMismatchError) {
        // The proxy path passed the same pin; a different key on the direct
        // address is suspicious, so stop trying it rather than switch.
        this.#directDisabled = true;
        this.#log("error", `${err.message}; staying on the proxy path`, {});
      } else {
        this.#log("debug", "direct SSH path still unavailable", { error: String(err) });
      }
      return;
    }
    // The check travels the very path traffic would take: the new connection's channels.
    const http = this.#httpClient(conn);
    const verified = await this.#verify((req) => http.request(req)).catch(() => false);
    if (!verified || this.#closed || conn.isClosed() || this.#live !== live) {
      if (!verified) this.#log("info", "direct SSH path failed its check; keeping proxy", {});
      http.close();
      endClient(conn.client);
      return;
    }
    // New requests go direct at once; those on the proxy path finish there.
    this.#adopt(conn, http);
  }

  /** Takes `old` out of service: its requests in flight finish, then its connection ends. */
  #retire(old: Live): void {
    old.gone = true;
    if (this.#live === old) this.#live = null;
    const drain = old.http.drain(this.#s.drainTimeoutMs).then(() => endClient(old.client));
    this.#retired.add(old);
    this.#drains.add(drain);
    drain.finally(() => {
      this.#drains.delete(drain);
      this.#retired.delete(old);
    });
  }

  /** Called from ssh2 callbacks: the live connection is gone (or dropped). */
  #lose(live: Live, reason: string): void {
    if (live.gone) return;
    live.gone = true;
    if (this.#live !== live) return;
    this.#live = null;
    // Channels through a dead connection cannot finish; cut them now.
    live.http.close();
    endClient(live.client);
    if (this.#s.clock.now() - live.upAt >= this.#s.healthyResetMs) this.#attempt = 0;
    if (!this.#closed) {
      this.#set({ state: "down", path: null, reason });
      this.#log("warn", "SSH tunnel down", { endpoint: live.address, reason });
      this.#emit({ type: "down", reason });
    }
    this.#poke();
  }

  // ---- helpers -----------------------------------------------------------

  get #connectAny(): typeof connectAny {
    return this.#s.connectAny ?? connectAny;
  }

  #connectOptions(): ConnectOptions {
    return { ...this.#s.connect, instanceId: this.instanceId, signal: this.#abort.signal };
  }

  /** Wakes the loop from whatever it waits on. */
  #poke(): void {
    const old = this.#wake;
    this.#wake = new AbortController();
    old.abort();
  }

  /** Sleeps `ms` (Infinity: until poked); true when it slept the full time. */
  async #nap(ms: number): Promise<boolean> {
    const signal = this.#wake.signal;
    if (signal.aborted || this.#closed) return false;
    if (ms === Infinity) {
      await new Promise((r) => signal.addEventListener("abort", r, { once: true }));
      return false;
    }
    try {
      await this.#s.clock.sleep(ms, signal);
      return true;
    } catch {
      return false;
    }
  }

  #set(patch: Partial<Omit<TunnelStatus, "since">>): void {
    const next = { ...this.#status, ...patch };
    const changed = next.state !== this.#status.state;
    this.#status = Object.freeze({ ...next, since: changed ? this.#s.clock.now() : next.since });
  }

  #emit(event: TunnelEvent): void {
    // Queue so a listener that triggers another event (say, calls close())
    // cannot deliver it to others before the current one.
    this.#queue.push(event);
    if (this.#emitting) return;
    this.#emitting = true;
    try {
      for (let e = this.#queue.shift(); e; e = this.#queue.shift()) {
        for (const listener of [...this.#listeners]) {
          try {
            listener(e);
          } catch (err) {
            this.#log("error", "tunnel listener threw", { error: String(err) });
          }
        }
      }
    } finally {
      this.#emitting = false;
    }
  }

  #log(
    level: "debug" | "info" | "warn" | "error",
    msg: string,
    fields: Record<string, string | number>,
  ) {
    this.#s.logger.log(level, msg, { instance: this.instanceId, ...fields });
  }
}

/**
 * Opens `direct-tcpip` channels to the instance's HTTP port, for the HTTP
 * client; each gets `tryWriteNow` (channel_write.ts), which `Conn.write`
 * uses to send a small request without the Writable machinery, and
 * `readDirect` (channel_read.ts), which `Conn` uses to receive responses
 * without the Readable machinery. Exported for tests.
 */
export function openChannel(client: ForwardOutClient, remotePort: number) {
  return () =>
    new Promise<ClientChannel>((resolve, reject) => {
      try {
        client.forwardOut("127.0.0.1", 0, "127.0.0.1", remotePort, (err, ch) => {
          if (err) reject(err);
          else resolve(attachReadDirect(attachTryWriteNow(ch)));
        });
      } catch (err) {
        // forwardOut throws synchronously when the connection is already gone.
        reject(err);
      }
    });
}

function lossReason(err: Error & { code?: string; level?: string }): string {
  if (err.message === "Keepalive timeout") return "SSH keepalive timed out";
  if (err.code) return `SSH connection lost (${err.code})`;
  return `SSH connection lost (${err.message})`;
}
