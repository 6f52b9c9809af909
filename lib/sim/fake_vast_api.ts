/**
 * A faithful, small test double of the vast.ai REST API on 127.0.0.1: v1
 * listing with opaque `next_token` pages, v0 listing, one instance, label and
 * state PUT, DELETE, the real error bodies, and scripted faults. Tests, the
 * `demo` command and e2e tests share it, so its API stays small: start it,
 * mutate `state`, read `state.requests`, `close()`.
 */
/** A raw instance record as the API serves it (only `id` is required here). */
export type FakeInstanceRecord = { id: number } & Record<string, unknown>;

/**
 * Scripted faults. Numbers answer with that HTTP status; `429-text` and
 * `429-json` are vast's two rate-limit bodies; `garbage` is a non-JSON 200;
 * `hang` never answers (until the client gives up or the fake closes);
 * `nullInstances` / `emptyPage` are odd-but-successful listings and only
 * apply to listing requests.
 */
export type FaultKind =
  | 500
  | 502
  | 503
  | 504
  | "429-text"
  | "429-json"
  | "garbage"
  | "hang"
  | "nullInstances"
  | "emptyPage";

/** One request the fake received. */
export interface RecordedRequest {
  method: string;
  /** Full URL as received (tests assert the API key is never in it). */
  url: string;
  /** Path only. */
  path: string;
  headers: Headers;
  /** Raw body text ("" when none). */
  body: string;
}

const LIST_ONLY: ReadonlySet<FaultKind> = new Set(["nullInstances", "emptyPage"]);

/** Mutable state of a running fake; tests change it between calls. */
export class FakeVastState {
  /** The key requests must carry as `Authorization: Bearer`. */
  apiKey: string;
  /** The account's instances; mutate freely (served as deep copies). */
  instances: FakeInstanceRecord[];
  /** Records per v1 page (vast allows at most 25). */
  pageSize: number;
  /** False makes `/api/v1/instances/` answer 404, as an API without v1 would. */
  v1: boolean;
  /** Every request received, oldest first. */
  readonly requests: RecordedRequest[] = [];
  #faults: FaultKind[] = [];

  /** Use `startFakeVastApi`. */
  constructor(
    opts: { apiKey: string; instances: FakeInstanceRecord[]; pageSize: number; v1: boolean },
  ) {
    this.apiKey = opts.apiKey;
    this.instances = opts.instances;
    this.pageSize = opts.pageSize;
    this.v1 = opts.v1;
  }

  /** Makes the next `n` requests (listings only, for list-only kinds) fail with `kind`. */
  failNext(n: number, kind: FaultKind): void {
    for (let i = 0; i < n; i++) this.#faults.push(kind);
  }

  /** Faults scripted but not yet served. */
  get pendingFaults(): number {
    return this.#faults.length;
  }

  /** Number of requests received so far. */
  get requestCount(): number {
    return this.requests.length;
  }

  /** The live record with `id`, or undefined. */
  find(id: number): FakeInstanceRecord | undefined {
    return this.instances.find((r) => r.id === id);
  }

  /** Shallow-merges `patch` into the record with `id`; throws if absent. */
  update(id: number, patch: Record<string, unknown>): void {
    const rec = this.find(id);
    if (!rec) throw new Error(`fake vast API: no instance ${id}`);
    Object.assign(rec, patch);
  }

  /** Takes the next fault that applies to this request, if any. */
  takeFault(isListing: boolean): FaultKind | undefined {
    const next = this.#faults[0];
    if (next === undefined || (LIST_ONLY.has(next) && !isListing)) return undefined;
    return this.#faults.shift();
  }
}

/** A running fake. */
export interface FakeVastApi {
  /** Base URL, e.g. `http://127.0.0.1:41234` (pass as `--api-url`). */
  url: string;
  state: FakeVastState;
  /** Answers hanging requests and stops the server; safe to call twice. */
  close(): Promise<void>;
}

/** Options of `startFakeVastApi`. */
export interface FakeVastApiOptions {
  apiKey: string;
  /** Initial records [none]. */
  instances?: FakeInstanceRecord[];
  /** [25] */
  pageSize?: number;
  /** Serve the v1 listing [true]. */
  v1?: boolean;
}

/** Starts the fake on an ephemeral 127.0.0.1 port. */
export function startFakeVastApi(opts: FakeVastApiOptions): FakeVastApi {
  const state = new FakeVastState({
    apiKey: opts.apiKey,
    instances: opts.instances ?? [],
    pageSize: opts.pageSize ?? 25,
    v1: opts.v1 ?? true,
  });
  // Tokens are opaque to clients; the fake maps each to the offset it resumes at.
  const tokens = new Map<string, number>();
  let tokenSeq = 0;
  const closing = Promise.withResolvers<void>();

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const body = await req.text();
    state.requests.push({
      method: req.method,
      url: req.url,
      path: url.pathname,
      headers: req.headers,
      body,
    });

    const auth = req.headers.get("authorization");
    if (!auth) {
      return json(403, { success: false, error: "forbidden", msg: "Authentication required." });
    }
    if (auth !== `Bearer ${state.apiKey}`) {
      return json(401, { success: false, error: "auth_error", msg: "Invalid user key" });
    }

    const path = url.pathname.replace(/\/?$/, "/");
    const isListing = req.method === "GET" &&
      ((path === "/api/v1/instances/" && state.v1) || path === "/api/v0/instances/");
    const fault = state.takeFault(isListing);
    if (fault === "hang") {
      // Answer only when the client gives up or the fake closes, so no op leaks.
      await Promise.race([closing.promise, aborted(req.signal)]);
      return json(503, { success: false, error: "closing", msg: "fake vast API closing" });
    }
    if (typeof fault === "number") {
      return json(fault, { success: false, error: "server_error", msg: `Internal error ${fault}` });
    }
    if (fault === "429-text") return new Response("API requests too frequent", { status: 429 });
    if (fault === "429-json") {
      return json(429, { detail: "API requests too frequent endpoint threshold=1.0" });
    }
    if (fault === "garbage") {
      return new Response("<html>502 Bad Gateway</html>", {
        status: 200,
        headers: { "content-type": "text/html" },
      });
    }

    if (isListing) {
      // Ordered by id like vast; a deliberately malformed (non-numeric) id sorts last.
      const sortKey = (r: FakeInstanceRecord) =>
        typeof r.id === "number" ? r.id : Number.MAX_SAFE_INTEGER;
      const sorted = [...state.instances].sort((a, b) => sortKey(a) - sortKey(b));
      if (path === "/api/v0/instances/") {
        const list = fault === "nullInstances" ? null : fault === "emptyPage" ? [] : sorted;
        return json(200, { instances_found: list?.length ?? 0, instances: structuredClone(list) });
      }
      let offset = 0;
      const rawToken = url.searchParams.get("after_token");
      if (rawToken !== null) {
        const known = tokens.get(unquote(rawToken));
        if (known === undefined) {
          return json(400, { success: false, error: "invalid_token", msg: "Invalid after_token." });
        }
        offset = known;
      }
      const asked = Number(unquote(url.searchParams.get("limit") ?? "25")) || 25;
      const limit = Math.min(asked, state.pageSize, 25);
      let page = sorted.slice(offset, offset + limit);
      let next: string | null = null;
      if (sorted.length > offset + limit) {
        next = `tok_${++tokenSeq}_${crypto.randomUUID().slice(0, 8)}`;
        tokens.set(next, offset + limit);
      }
      if (fault === "nullInstances" || fault === "emptyPage") {
        page = [];
        next = null;
      }
      return json(200, {
        success: true,
        instances_found: page.length,
        total_instances: sorted.length,
        label_counts: labelCounts(sorted),
        next_token: next,
        instances: fault === "nullInstances" ? null : structuredClone(page),
      });
    }

    const one = /^\/api\/v0\/instances\/(\d+)\/$/.exec(path);
    if (one) {
      const id = Number(one[1]);
      const rec = state.find(id);
      if (req.method === "GET") return json(200, { instances: rec ? structuredClone(rec) : null });
      if (!rec) {
        return json(404, {
          success: false,
          error: "no_such_instance",
          msg: `Instance ${id} not found.`,
        });
      }
      if (req.method === "DELETE") {
        state.instances = state.instances.filter((r) => r !== rec);
        return json(200, { success: true, msg: `destroying instance ${id}.` });
      }
      if (req.method === "PUT") return putInstance(rec, body);
    }
    if (req.method === "GET" && path === "/api/v0/users/current/") {
      return json(200, { id: 1, email: "user@example.com", credit: 42.5 });
    }
    return json(404, {
      success: false,
      error: "not_found",
      msg: `No route ${req.method} ${url.pathname}`,
    });
  };

  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  let closed: Promise<void> | null = null;
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    state,
    close() {
      closed ??= (async () => {
        closing.resolve();
        await server.shutdown();
      })();
      return closed;
    },
  };
}

/** PUT /api/v0/instances/{id}/: `label` and/or `state` (running|stopped). */
function putInstance(rec: FakeInstanceRecord, body: string): Response {
  let payload: Record<string, unknown>;
  try {
    payload = JSON.parse(body || "{}");
  } catch {
    return json(400, { success: false, error: "invalid_request", msg: "Malformed JSON body." });
  }
  if ("label" in payload) {
    if (typeof payload.label !== "string" || payload.label.length > 1024) {
      return json(400, { success: false, error: "invalid_request", msg: "Invalid label." });
    }
    rec.label = payload.label;
  }
  if ("state" in payload) {
    if (payload.state !== "running" && payload.state !== "stopped") {
      return json(400, { success: false, error: "invalid_request", msg: "Invalid state." });
    }
    rec.intended_status = payload.state;
    rec.actual_status = payload.state;
    rec.cur_state = payload.state;
  }
  return json(200, { success: true, msg: "Instance updated." });
}

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Accepts a value sent raw or JSON-encoded (`"abc"`), as vast's server does. */
function unquote(value: string): string {
  try {
    const v = JSON.parse(value);
    return typeof v === "string" || typeof v === "number" ? String(v) : value;
  } catch {
    return value;
  }
}

function labelCounts(records: FakeInstanceRecord[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of records) {
    if (typeof r.label === "string" && r.label) counts[r.label] = (counts[r.label] ?? 0) + 1;
  }
  return counts;
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

/**
 * A realistic record (the fixture of a running vLLM instance) with
 * `overrides` shallow-merged on top; a deep copy every call.
 */
export function makeInstanceRecord(overrides: Record<string, unknown> = {}): FakeInstanceRecord {
  return {
    ...structuredClone(VAST_INSTANCE_FIXTURE),
    ...structuredClone(overrides),
  } as FakeInstanceRecord;
}

/**
 * The shared fixture (fixtures/vast-instance.json), copied so tests and the
 * demo never read files outside the package at runtime. Values illustrative;
 * field names and types real.
 */
export const VAST_INSTANCE_FIXTURE: Readonly<FakeInstanceRecord> = Object.freeze(
  {
    "id": 25078234,
    "machine_id": 43973,
    "host_id": 307092,
    "actual_status": "running",
    "cur_state": "running",
    "next_state": "running",
    "intended_status": "running",
    "status_msg": "success, running vastai/vllm_v0.25.1-cuda-12.9/jupyter",
    "label": "llm-pool-a",
    "template_id": 271032,
    "template_hash_id": "abcde12345",
    "template_name": "vLLM",
    "image_uuid": "vastai/vllm:v0.25.1-cuda-12.9",
    "image_args": [],
    "image_runtype": "jupyter_direc ssh_direc ssh_proxy",
    "extra_env": [
      ["-p 1111:1111", "1"],
      ["-p 8080:8080", "1"],
      ["-p 8000:8000", "1"],
      ["-p 8265:8265", "1"],
      ["OPEN_BUTTON_PORT", "1111"],
      ["OPEN_BUTTON_TOKEN", "1"],
      ["JUPYTER_DIR", "/"],
      ["DATA_DIRECTORY", "/workspace/"],
      [
        "PORTAL_CONFIG",
        "localhost:1111:11111:/:Instance Portal|localhost:8000:18000:/docs:vLLM API|localhost:8265:28265:/:Ray Dashboard|localhost:8080:18080:/:Jupyter|localhost:8080:8080:/terminals/1:Jupyter Terminal",
      ],
      ["VLLM_MODEL", "Qwen/Qwen3-8B"],
      [
        "VLLM_ARGS",
        "--max-model-len 32000 --download-dir /workspace/models --host 127.0.0.1 --port 18000",
      ],
      ["AUTO_PARALLEL", "true"],
      ["RAY_ADDRESS", "127.0.0.1"],
    ],
    "onstart": "entrypoint.sh",
    "jupyter_token": "ebc1e4b9922bd49aacfb54bba36259c801f5c4d9edaace7576f9b1ecd067559d",
    "public_ipaddr": "151.237.25.16\n",
    "local_ipaddrs": "10.2.202.31 172.17.0.1 \n",
    "static_ip": false,
    "ssh_host": "ssh6.vast.ai",
    "ssh_idx": "6",
    "ssh_port": 19840,
    "machine_dir_ssh_port": 51199,
    "direct_port_count": 100,
    "direct_port_start": 29000,
    "direct_port_end": 29099,
    "ports": {
      "1111/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "29011" }],
      "22/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "29283" }, {
        "HostIp": "::",
        "HostPort": "29283",
      }],
      "8000/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "29044" }],
      "8080/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "29061" }],
      "8265/tcp": [{ "HostIp": "0.0.0.0", "HostPort": "29072" }],
    },
    "gpu_name": "RTX 4090",
    "num_gpus": 1,
    "gpu_ram": 24564,
    "gpu_totalram": 24564,
    "gpu_util": 0.0,
    "gpu_temp": 38.0,
    "driver_version": "570.124.06",
    "cpu_name": "AMD EPYC 7543 32-Core Processor",
    "cpu_cores_effective": 16.0,
    "cpu_ram": 128576,
    "disk_space": 50.0,
    "dph_base": 0.4,
    "dph_total": 0.4021,
    "inet_up": 512.0,
    "inet_down": 903.0,
    "reliability2": 0.9912,
    "verification": "verified",
    "geolocation": "Bulgaria, BG",
    "start_date": 1767225600.123,
    "end_date": 1769904000.0,
    "uptime_mins": 42.5,
    "volume_info": [],
  },
);
