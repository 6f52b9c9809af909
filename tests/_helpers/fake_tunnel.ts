/**
 * Scriptable stand-ins for lib/tunnel/tunnel.ts. A test opens backends with a
 * `FakeTunnelFactory`, then drives each `FakeTunnel` by hand: `up()` with any
 * base URL (a Deno.serve fake, or a URL an injected fetch answers), `down()`,
 * `hostkeyMismatch()`, and scripted `exec` results. Calls to `reconnect()` and
 * `close()` are recorded for assertions.
 */
import type {
  ExecResult,
  Tunnel,
  TunnelEvent,
  TunnelFactory,
  TunnelOptions,
  TunnelStatus,
} from "../../lib/tunnel/tunnel.ts";
import type { BackendSpec, SshPath } from "../../lib/core/backend_spec.ts";

/** How `FakeTunnel.up()` presents the connection. */
export interface FakeUpOptions {
  /** Base URL the tunnel reports (default `http://127.0.0.1:9`, which nobody serves). */
  baseUrl?: string;
  /** SSH path (default `direct`). */
  path?: SshPath;
  /** `host:port` shown as the endpoint (default `ssh.example:22`). */
  endpoint?: string;
}

/** Answers `exec`: a result, or a thrown error for a failing command. */
export type ExecHandler = (command: string, opts?: { timeoutMs?: number }) => Promise<ExecResult>;

/** A tunnel whose every state change comes from the test. */
export class FakeTunnel implements Tunnel {
  /** The instance this tunnel was opened for. */
  readonly instanceId: number;
  /** The spec it was opened with. */
  readonly spec: BackendSpec;
  /** Options its owner passed (e.g. `verify`). */
  readonly options: TunnelOptions;
  /** Every `exec` command, in order. */
  readonly execCalls: string[] = [];
  /** Every `close()` call's options, in order. */
  readonly closeCalls: { graceful?: boolean; timeoutMs?: number }[] = [];
  /** How many times `reconnect()` was called. */
  reconnects = 0;
  /** Answers `exec`; default: exit code 0 and empty output. */
  execHandler: ExecHandler = () => Promise.resolve({ stdout: "", stderr: "", code: 0 });
  #status: TunnelStatus;
  #baseUrl: string | undefined;
  #listeners = new Set<(e: TunnelEvent) => void>();
  #now: () => number;

  /** A tunnel in state `connecting`. */
  constructor(spec: BackendSpec, options: TunnelOptions = {}, now: () => number = Date.now) {
    this.instanceId = spec.id;
    this.spec = spec;
    this.options = options;
    this.#now = now;
    this.#status = {
      state: "connecting",
      path: null,
      endpoint: null,
      localPort: null,
      reason: null,
      since: now(),
    };
  }

  /** Number of current subscribers (to check owners unsubscribe). */
  get listenerCount(): number {
    return this.#listeners.size;
  }

  /** Current state. */
  status(): TunnelStatus {
    return { ...this.#status };
  }

  /** The scripted base URL while up. */
  baseUrl(): string | undefined {
    return this.#status.state === "up" ? this.#baseUrl : undefined;
  }

  /** Records the command and answers with `execHandler`. */
  exec(command: string, opts?: { timeoutMs?: number }): Promise<ExecResult> {
    this.execCalls.push(command);
    return this.execHandler(command, opts);
  }

  /** Records the call; the test decides what happens next. */
  reconnect(): void {
    this.reconnects++;
  }

  /** Registers a listener; returns its unsubscribe. */
  subscribe(listener: (event: TunnelEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Records the call and moves to `closed` (emitting `closed`). */
  close(opts: { graceful?: boolean; timeoutMs?: number } = {}): Promise<void> {
    this.closeCalls.push(opts);
    if (this.#status.state !== "closed") {
      this.#set({ state: "closed", path: null, localPort: null, reason: "closed" });
      this.#emit({ type: "closed" });
    }
    return Promise.resolve();
  }

  /** Connection established (or path switched): state `up`, emits `up`. */
  up(opts: FakeUpOptions = {}): void {
    this.#baseUrl = opts.baseUrl ?? "http://127.0.0.1:9";
    const path = opts.path ?? "direct";
    const endpoint = opts.endpoint ?? "ssh.example:22";
    const localPort = Number(new URL(this.#baseUrl).port) || 0;
    this.#set({ state: "up", path, endpoint, localPort, reason: null });
    this.#emit({ type: "up", path, endpoint, localPort });
  }

  /** Connection lost: state `down`, emits `down`. */
  down(reason = "connection reset"): void {
    this.#set({ state: "down", path: null, localPort: null, reason });
    this.#emit({ type: "down", reason });
  }

  /** Host key refused: state `hostkey-mismatch`, emits it. */
  hostkeyMismatch(reason = "host key changed"): void {
    this.#set({ state: "hostkey-mismatch", path: null, localPort: null, reason });
    this.#emit({ type: "hostkey-mismatch", reason });
  }

  #set(patch: Partial<TunnelStatus>): void {
    this.#status = { ...this.#status, ...patch, since: this.#now() };
  }

  #emit(event: TunnelEvent): void {
    for (const l of [...this.#listeners]) l(event);
  }
}

/** Opens `FakeTunnel`s and remembers them for the test. */
export class FakeTunnelFactory implements TunnelFactory {
  /** Every tunnel opened, in order. */
  readonly opened: FakeTunnel[] = [];
  /** When set, every new tunnel comes up at once with these options. */
  autoUp: FakeUpOptions | undefined;
  #now: () => number;

  /** `now` stamps tunnel statuses (pass a FakeClock's `now`). */
  constructor(opts: { now?: () => number; autoUp?: FakeUpOptions } = {}) {
    this.#now = opts.now ?? Date.now;
    this.autoUp = opts.autoUp;
  }

  /** A new `connecting` tunnel (or `up`, with `autoUp`). */
  open(spec: BackendSpec, opts?: TunnelOptions): FakeTunnel {
    const t = new FakeTunnel(spec, opts, this.#now);
    this.opened.push(t);
    if (this.autoUp) t.up(this.autoUp);
    return t;
  }

  /** The most recent tunnel opened for instance `id`. */
  last(id: number): FakeTunnel {
    const t = this.opened.findLast((x) => x.instanceId === id);
    if (!t) throw new Error(`no tunnel opened for instance ${id}`);
    return t;
  }
}

/** A plausible eligible spec for instance `id` (token `tok-<id>-secret`), with overrides. */
export function testSpec(id: number, overrides: Partial<BackendSpec> = {}): BackendSpec {
  return {
    id,
    status: "running",
    eligible: true,
    label: null,
    displayName: `${id} RTX 4090`,
    gpuName: "RTX 4090",
    numGpus: 1,
    gpuLabel: "RTX 4090",
    dph: 0.5,
    startedAt: null,
    endpoints: [
      { host: "203.0.113.7", port: 40022, path: "direct" },
      { host: "ssh5.vast.ai", port: 12345, path: "proxy" },
    ],
    remotePort: 18000,
    engine: "vllm",
    token: `tok-${id}-secret`,
    modelHint: null,
    ...overrides,
  };
}
