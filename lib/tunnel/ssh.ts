/**
 * The self-healing SSH tunnel to one instance (DESIGN.md §5), and the factory
 * that opens them. `SshTunnel` is the one owner of its state: a single loop
 * connects, waits while up, upgrades proxy → direct, and backs off; ssh2
 * callbacks only report a loss and poke the loop.
 */
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import { backoffDelay } from "../core/backoff.ts";
import type { BackendSpec } from "../core/backend_spec.ts";
import { connectAny, type Connection, type ConnectOptions, endClient } from "./connect.ts";
import { HostKeyMismatchError, SshConnectError, TunnelNotUpError } from "./errors.ts";
import { ChannelHttpClient, ChannelHttpError, type ChannelRequest } from "../http1/client.ts";
import { type Forward, type ForwardOutClient, startForward } from "./forward.ts";
import { execCommand } from "./gpu.ts";
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
  /** How long a replaced connection may finish its in-flight sockets. */
  drainTimeoutMs: number;
  /** Quiet time after which a draining keep-alive socket counts as idle. */
  drainIdleMs: number;
}

/** A connection in use: its forward, HTTP client, when it came up, whether it is gone. */
interface Live extends Connection {
  forward: Forward;
  /** The relay's fast path: HTTP over this connection's channels. */
  http: ChannelHttpClient;
  upAt: number;
  gone: boolean;
}

/** An SSH connection plus local forward to one instance; see `Tunnel`. */
export class SshTunnel implements Tunnel {
  /** vast.ai instance id. */
  readonly instanceId: number;
  #spec: BackendSpec;
  #s: TunnelSettings;
  #verify: (baseUrl: string) => Promise<boolean>;
  #status: TunnelStatus;
  #listeners = new Set<(event: TunnelEvent) => void>();
  #queue: TunnelEvent[] = [];
  #emitting = false;
  #live: Live | null = null;
  #attempt = 0;
  #skipBackoff = false;
  #directDisabled = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  // Aborts in-flight connects when the tunnel closes.
  #abort = new AbortController();
  // Aborted (and replaced) whenever the loop must re-evaluate: loss,
  // reconnect(), close(). Every wait in the loop listens to it.
  #wake = new AbortController();
  // Forwards still closing: retired ones draining after a proxy → direct
  // swap, and lost ones being cut. close() waits for all of them.
  #drains = new Set<Promise<void>>();
  #retired = new Set<Forward>();
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
      localPort: null,
      reason: null,
      since: settings.clock.now(),
    });
    this.#loop = this.#runSafely();
  }

  /** Current state (a frozen value). */
  status(): TunnelStatus {
    return this.#status;
  }

  /** `http://127.0.0.1:<port>` while up. */
  baseUrl(): string | undefined {
    const port = this.#status.state === "up" ? this.#status.localPort : null;
    return port === null ? undefined : `http://127.0.0.1:${port}`;
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
  request(req: ChannelRequest): Promise<Response> {
    const live = this.#live;
    if (!live || live.gone) {
      return Promise.reject(
        new ChannelHttpError(`tunnel to instance ${this.instanceId} is ${this.#status.state}`),
      );
    }
    return live.http.request(req);
  }

  /** Drops the current connection and reconnects now, resetting backoff. */
  reconnect(): void {
    if (this.#closed) return;
    this.#attempt = 0;
    if (this.#status.state === "hostkey-mismatch") {
      // The loop stopped at the mismatch; the user may have deleted the pin
      // since, so an explicit reconnect starts it again (once).
      this.#loop = this.#loop.then(() => this.#closed ? undefined : this.#runSafely());
      return;
    }
    this.#skipBackoff = true;
    if (this.#live) this.#lose(this.#live, "reconnect requested");
    else this.#poke();
  }

  /** Adds a listener; events arrive in order, each listener called synchronously. */
  subscribe(listener: (event: TunnelEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops every loop and closes the forward(s) and connection(s). */
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
      if (!graceful) live.http.close();
      await Promise.all([
        live.forward.close({ graceful, timeoutMs }),
        graceful ? live.http.drain(timeoutMs) : undefined,
      ]);
      endClient(live.client);
    }
    await this.#loop;
    // Retired connections: a graceful close lets them finish too; otherwise
    // their forwards are cut now (close() on a draining forward escalates).
    if (!graceful) { for (const f of this.#retired) void f.close({ graceful: false }); }
    await Promise.all([...this.#drains]);
    this.#set({ state: "closed", path: null, localPort: null, reason: null });
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
    let delayNext = false;
    while (!this.#closed) {
      if (this.#live) {
        await this.#whileUp(this.#live);
        delayNext = true;
        continue;
      }
      if (delayNext && !this.#skipBackoff) {
        const delay = backoffDelay(this.#attempt++, {
          baseMs: this.#s.backoffBaseMs,
          maxMs: this.#s.backoffMaxMs,
          random: this.#s.random,
        });
        this.#log("debug", "SSH reconnect scheduled", { delayMs: delay });
        await this.#nap(delay);
        if (this.#closed) break;
      }
      this.#skipBackoff = false;
      delayNext = true;
      if (await this.#connect() === "mismatch") return;
    }
  }

  /** One attempt over all endpoints; on success the tunnel is up. */
  async #connect(): Promise<"up" | "failed" | "mismatch" | "closed"> {
    this.#set({ state: "connecting", path: null, localPort: null });
    let conn: Connection;
    try {
      conn = await connectAny(this.#spec.endpoints, this.#connectOptions());
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
    const forward = await this.#openForward(conn);
    // Adopting is synchronous from this check on, so a close can no longer
    // slip between the check and the tunnel's own 'close' listener.
    if (this.#closed || !forward || conn.isClosed()) {
      await forward?.close({ graceful: false });
      endClient(conn.client);
      if (this.#closed) return "closed";
      const reason = forward
        ? `SSH connection to instance ${this.instanceId} at ${conn.address} closed during setup`
        : `Cannot open a local forward for instance ${this.instanceId}`;
      this.#set({ state: "down", reason });
      this.#emit({ type: "down", reason });
      return "failed";
    }
    this.#adopt(conn, forward);
    return "up";
  }

  async #openForward(conn: Connection): Promise<Forward | undefined> {
    try {
      return await startForward(conn.client, this.#spec.remotePort, {
        logger: this.#s.logger,
        instanceId: this.instanceId,
        drainIdleMs: this.#s.drainIdleMs,
      });
    } catch (err) {
      this.#log("error", "cannot open a local forward", { error: String(err) });
      return undefined;
    }
  }

  /** Makes `conn` the live connection and announces it. */
  #adopt(conn: Connection, forward: Forward): void {
    const http = new ChannelHttpClient(openChannel(conn.client, this.#spec.remotePort), {
      host: `127.0.0.1:${this.#spec.remotePort}`,
    });
    const live: Live = { ...conn, forward, http, upAt: this.#s.clock.now(), gone: false };
    conn.client.on("error", (err: Error & { code?: string }) => {
      this.#lose(live, lossReason(err));
    });
    conn.client.on("close", () => this.#lose(live, "SSH connection closed"));
    this.#live = live;
    this.#set({
      state: "up",
      path: conn.endpoint.path,
      endpoint: conn.address,
      localPort: forward.port,
      reason: null,
    });
    this.#log("info", "SSH tunnel up", {
      path: conn.endpoint.path,
      endpoint: conn.address,
      localPort: forward.port,
    });
    this.#emit({
      type: "up",
      path: conn.endpoint.path,
      endpoint: conn.address,
      localPort: forward.port,
    });
  }

  /** Waits while `live` serves; on a proxy path, tries direct every `directRetryMs`. */
  async #whileUp(live: Live): Promise<void> {
    while (!this.#closed && this.#live === live) {
      const direct = this.#spec.endpoints.filter((e) => e.path === "direct");
      if (live.endpoint.path !== "proxy" || direct.length === 0 || this.#directDisabled) {
        await this.#nap(Infinity);
        continue;
      }
      if (!await this.#nap(this.#s.directRetryMs)) continue;
      await this.#tryDirect(live);
    }
  }

  /** Opens, verifies and swaps in a direct connection; keeps `live` otherwise. */
  async #tryDirect(live: Live): Promise<void> {
    const direct = this.#spec.endpoints.filter((e) => e.path === "direct");
    let conn: Connection;
    try {
      conn = await connectAny(direct, this.#connectOptions());
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
    const forward = await this.#openForward(conn);
    const verified = forward !== undefined &&
      await this.#verify(`http://127.0.0.1:${forward.port}`).catch(() => false);
    if (!forward || !verified || this.#closed || conn.isClosed()) {
      if (forward && !verified) {
        this.#log("info", "direct SSH path failed its check; keeping proxy", {});
      }
      await forward?.close({ graceful: false });
      endClient(conn.client);
      return;
    }
    // Adopt first so new requests go direct, then let the old path drain.
    if (this.#live === live) this.#retire(live);
    this.#adopt(conn, forward);
  }

  /** Takes `old` out of service; its forward drains, then its connection ends. */
  #retire(old: Live): void {
    old.gone = true;
    this.#live = null;
    // Requests already on the old connection finish there; its idle
    // channels close at once, since new requests go to the new connection.
    const drain = Promise.all([
      old.forward.close({ graceful: true, timeoutMs: this.#s.drainTimeoutMs }),
      old.http.drain(this.#s.drainTimeoutMs),
    ]).then(() => endClient(old.client));
    this.#retired.add(old.forward);
    this.#drains.add(drain);
    drain.finally(() => {
      this.#drains.delete(drain);
      this.#retired.delete(old.forward);
    });
  }

  /** Called from ssh2 callbacks: the live connection is gone (or dropped). */
  #lose(live: Live, reason: string): void {
    if (live.gone) return;
    live.gone = true;
    if (this.#live !== live) return;
    this.#live = null;
    // Sockets and channels through a dead connection cannot finish; cut them now.
    live.http.close();
    const closing = live.forward.close({ graceful: false });
    this.#drains.add(closing);
    closing.finally(() => this.#drains.delete(closing));
    endClient(live.client);
    if (this.#s.clock.now() - live.upAt >= this.#s.healthyResetMs) this.#attempt = 0;
    if (!this.#closed) {
      this.#set({ state: "down", path: null, localPort: null, reason });
      this.#log("warn", "SSH tunnel down", { endpoint: live.address, reason });
      this.#emit({ type: "down", reason });
    }
    this.#poke();
  }

  // ---- helpers -----------------------------------------------------------

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

/** Opens `direct-tcpip` channels to the instance's HTTP port, for `ChannelHttpClient`. */
function openChannel(client: ForwardOutClient, remotePort: number) {
  return () =>
    new Promise<ClientChannel>((resolve, reject) => {
      try {
        client.forwardOut("127.0.0.1", 0, "127.0.0.1", remotePort, (err, ch) => {
          if (err) reject(err);
          else resolve(ch);
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
