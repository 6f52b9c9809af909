/**
 * Scriptable stand-ins for lib/tunnel/tunnel.ts. A test opens backends with a
 * `FakeTunnelFactory`, then drives each `FakeTunnel` by hand: `up()` with the
 * base URL of a local engine double (requests then go through the production
 * HTTP/1.1 client over TCP) or with a scripted `handler`, `down()`,
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
import type { Http1Client } from "../../lib/http1/client.ts";
import { Http1Error, type Http1Request, type Http1Response } from "../../lib/http1/types.ts";
import type { Upgraded } from "../../lib/http1/upgrade.ts";
import { portOf, tcpHttp1Client } from "./tcp_client.ts";

/** Answers a tunnel's requests in place of an engine. */
export type RequestHandler = (
  req: Http1Request,
  tunnel: FakeTunnel,
) => Http1Response | Promise<Http1Response>;

/** A web Response as the `Http1Response` an engine would have sent (the body streams). */
export function fromWebResponse(res: Response): Http1Response {
  return {
    status: res.status,
    statusText: res.statusText,
    headers: [...res.headers],
    body: res.body,
  };
}

/** A scripted response: JSON (or text) body with a status. */
export function fakeResponse(
  status: number,
  body: unknown = "",
  headers: [string, string][] = [],
): Http1Response {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  const bytes = new TextEncoder().encode(text);
  return {
    status,
    statusText: "",
    headers: [["content-length", String(bytes.byteLength)], ...headers],
    body: new Response(bytes).body,
  };
}

/** How `FakeTunnel.up()` presents the connection. */
export interface FakeUpOptions {
  /** Engine double the requests go to over TCP (default `http://127.0.0.1:9`, which nobody serves). */
  baseUrl?: string;
  /** Scripted answers instead of an engine (wins over `baseUrl`). */
  handler?: RequestHandler;
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
  /** Every request sent through the tunnel, in order. */
  readonly requests: Http1Request[] = [];
  /** Answers `exec`; default: exit code 0 and empty output. */
  execHandler: ExecHandler = () => Promise.resolve({ stdout: "", stderr: "", code: 0 });
  #status: TunnelStatus;
  #baseUrl: string | undefined;
  #handler: RequestHandler | undefined;
  #client: Http1Client | undefined;
  #listeners = new Set<(e: TunnelEvent) => void>();
  #now: () => number;

  /** A tunnel in state `connecting`. */
  constructor(
    spec: BackendSpec,
    options: TunnelOptions = {},
    now: () => number = Date.now,
    handler?: RequestHandler,
  ) {
    this.#handler = handler;
    this.instanceId = spec.id;
    this.spec = spec;
    this.options = options;
    this.#now = now;
    this.#status = {
      state: "connecting",
      path: null,
      endpoint: null,
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

  /** The engine double's base URL while up. */
  baseUrl(): string | undefined {
    return this.#status.state === "up" ? this.#baseUrl : undefined;
  }

  /** Records the request; answers with the handler, or the engine double over TCP. */
  request(req: Http1Request): Promise<Http1Response> {
    if (this.#status.state !== "up") {
      return Promise.reject(
        new Http1Error(`tunnel is ${this.#status.state}`, { sent: false }),
      );
    }
    this.requests.push(req);
    const handler = this.#handler;
    if (handler) return Promise.resolve().then(() => handler(req, this));
    this.#client ??= tcpHttp1Client(portOf(this.#baseUrl ?? "http://127.0.0.1:9"));
    return this.#client.request(req);
  }

  /** Upgrade requests go to the engine double over TCP (handlers cannot switch protocols). */
  upgrade(req: Http1Request): Promise<Upgraded | Http1Response> {
    if (this.#status.state !== "up") {
      return Promise.reject(new Http1Error(`tunnel is ${this.#status.state}`, { sent: false }));
    }
    this.requests.push(req);
    this.#client ??= tcpHttp1Client(portOf(this.#baseUrl ?? "http://127.0.0.1:9"));
    return this.#client.upgrade(req);
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
    this.#client?.close();
    this.#client = undefined;
    if (this.#status.state !== "closed") {
      this.#set({ state: "closed", path: null, reason: "closed" });
      this.#emit({ type: "closed" });
    }
    return Promise.resolve();
  }

  /** Connection established (or path switched): state `up`, emits `up`. */
  up(opts: FakeUpOptions = {}): void {
    this.#baseUrl = opts.baseUrl ?? "http://127.0.0.1:9";
    this.#handler = opts.handler ?? this.#handler;
    // A new connection: channels of the old one are gone.
    this.#client?.close();
    this.#client = undefined;
    const path = opts.path ?? "direct";
    const endpoint = opts.endpoint ?? "ssh.example:22";
    this.#set({ state: "up", path, endpoint, reason: null });
    this.#emit({ type: "up", path, endpoint });
  }

  /** Connection lost: state `down`, emits `down`. */
  down(reason = "connection reset"): void {
    this.#client?.close();
    this.#client = undefined;
    this.#set({ state: "down", path: null, reason });
    this.#emit({ type: "down", reason });
  }

  /** Host key refused: state `hostkey-mismatch`, emits it. */
  hostkeyMismatch(reason = "host key changed"): void {
    this.#set({ state: "hostkey-mismatch", path: null, reason });
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
  /** When set, answers every new tunnel's requests. */
  handler: RequestHandler | undefined;
  #now: () => number;

  /** `now` stamps tunnel statuses (pass a FakeClock's `now`). */
  constructor(
    opts: { now?: () => number; autoUp?: FakeUpOptions; handler?: RequestHandler } = {},
  ) {
    this.#now = opts.now ?? Date.now;
    this.autoUp = opts.autoUp;
    this.handler = opts.handler;
  }

  /** A new `connecting` tunnel (or `up`, with `autoUp`). */
  open(spec: BackendSpec, opts?: TunnelOptions): FakeTunnel {
    const t = new FakeTunnel(spec, opts, this.#now, this.handler);
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
