/**
 * REST client for the vast.ai API (DESIGN §3): lists instances with v1
 * pagination (v0 fallback), sets labels, destroys. Transient failures (429,
 * 5xx, network, timeouts) are retried with backoff + jitter on the injected
 * clock; every failure surfaces as a `VastApiError` whose message never
 * contains the API key.
 */
import { type Clock, realClock } from "../core/clock.ts";
import { type Logger, nullLogger, redact } from "../core/logger.ts";
import { backoffDelay } from "../core/backoff.ts";
import { kindForStatus, VastApiError } from "./errors.ts";
import { parseInstances, type VastInstanceRecord } from "./schema.ts";

/** Construction options; defaults in brackets. */
export interface VastClientOptions {
  /** vast.ai API key, sent only as `Authorization: Bearer`. */
  apiKey: string;
  /** API base, e.g. `https://console.vast.ai` (no trailing path needed). */
  apiUrl: string;
  /** [globalThis.fetch] */
  fetch?: typeof fetch;
  /** Used for retry sleeps [realClock]. */
  clock?: Clock;
  /** Jitter source [Math.random]. */
  random?: () => number;
  /** [nullLogger] */
  logger?: Logger;
  /** Per-request timeout, headers and body included [15000]. */
  timeoutMs?: number;
  /** Retries after the first attempt for retryable failures [4]. */
  maxRetries?: number;
  /** First retry delay [1000]; doubles per retry up to `retryMaxMs` [30000]. */
  retryBaseMs?: number;
  /** [30000] */
  retryMaxMs?: number;
  /**
   * Pause between v1 pages [1000]: vast rate-limits the listing endpoint to
   * about one call a second per key, so back-to-back pages would earn a 429.
   */
  pageIntervalMs?: number;
}

/** vast's page size limit for the v1 listing. */
const PAGE_SIZE = 25;
/** A listing this long means a pagination bug, not an account. */
const MAX_PAGES = 1000;

/** What one API call carries besides its method and path. */
interface RequestOptions {
  query?: Record<string, unknown>;
  body?: unknown;
  signal?: AbortSignal;
  /** The instance the call is about, for error messages. */
  instanceId?: number;
}

interface ApiAnswer {
  status: number;
  body: unknown;
}

/** Talks to the vast.ai REST API. Stateless apart from remembering a missing v1. */
export class VastClient {
  #apiKey: string;
  #base: string;
  #fetch: typeof fetch;
  #clock: Clock;
  #random: () => number;
  #logger: Logger;
  #timeoutMs: number;
  #maxRetries: number;
  #retryBaseMs: number;
  #retryMaxMs: number;
  #pageIntervalMs: number;
  /** Set once v1 answered 404, so later listings go straight to v0. */
  #v1Missing = false;

  /** See `VastClientOptions` for defaults. */
  constructor(opts: VastClientOptions) {
    this.#apiKey = opts.apiKey;
    this.#base = opts.apiUrl.replace(/\/+$/, "");
    this.#fetch = opts.fetch ?? globalThis.fetch.bind(globalThis);
    this.#clock = opts.clock ?? realClock;
    this.#random = opts.random ?? Math.random;
    this.#logger = opts.logger ?? nullLogger;
    this.#timeoutMs = opts.timeoutMs ?? 15_000;
    this.#maxRetries = opts.maxRetries ?? 4;
    this.#retryBaseMs = opts.retryBaseMs ?? 1_000;
    this.#retryMaxMs = opts.retryMaxMs ?? 30_000;
    this.#pageIntervalMs = opts.pageIntervalMs ?? 1_000;
  }

  /**
   * Every instance of the account, validated; malformed records are skipped
   * (and logged by `parseInstances`). Follows v1 `next_token` pages; falls back
   * to v0 when v1 answers 404.
   */
  async listInstances(signal?: AbortSignal): Promise<VastInstanceRecord[]> {
    if (!this.#v1Missing) {
      try {
        return await this.#listV1(signal);
      } catch (err) {
        if (!(err instanceof VastApiError && err.kind === "not-found")) throw err;
        this.#v1Missing = true;
        this.#logger.log("info", "vast.ai API has no v1 instance listing; using v0 from now on");
      }
    }
    const answer = await this.#request("GET", "/api/v0/instances/", {
      query: { owner: "me" },
      signal,
    });
    return parseInstances(instancesOf(answer.body, "/api/v0/instances/"), this.#logger).records;
  }

  async #listV1(signal?: AbortSignal): Promise<VastInstanceRecord[]> {
    const path = "/api/v1/instances/";
    const raw: unknown[] = [];
    const seen = new Set<string>();
    let token: string | null = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query: Record<string, unknown> = { limit: PAGE_SIZE };
      if (token !== null) query.after_token = token;
      const answer = await this.#request("GET", path, { query, signal });
      raw.push(...instancesOf(answer.body, path));
      const next = (answer.body as { next_token?: unknown }).next_token;
      if (next === null || next === undefined || next === "") {
        return parseInstances(raw, this.#logger).records;
      }
      if (typeof next !== "string") {
        throw new VastApiError("bad-response", badShape(path, "next_token is not a string"));
      }
      // A token we already followed would loop forever.
      if (seen.has(next)) {
        throw new VastApiError("bad-response", badShape(path, "pagination repeated a next_token"));
      }
      seen.add(next);
      token = next;
      if (this.#pageIntervalMs > 0) await this.#clock.sleep(this.#pageIntervalMs, signal);
    }
    throw new VastApiError("bad-response", badShape(path, `more than ${MAX_PAGES} pages`));
  }

  /** Sets (or with null, clears) an instance's vast label. */
  async setLabel(id: number, label: string | null, signal?: AbortSignal): Promise<void> {
    await this.#request("PUT", `/api/v0/instances/${id}/`, {
      body: { label: label ?? "" },
      signal,
      instanceId: id,
    });
  }

  /** Destroys an instance (irreversible; its storage is deleted). */
  async destroy(id: number, signal?: AbortSignal): Promise<void> {
    await this.#request("DELETE", `/api/v0/instances/${id}/`, { signal, instanceId: id });
  }

  /** One request with retries; resolves only with a 2xx JSON answer. */
  async #request(
    method: string,
    path: string,
    opts: RequestOptions,
  ): Promise<ApiAnswer> {
    for (let attempt = 0;; attempt++) {
      try {
        return await this.#attempt(method, path, opts);
      } catch (err) {
        // The caller stopping is not a vast.ai failure: pass its reason through.
        if (opts.signal?.aborted) throw opts.signal.reason;
        if (!(err instanceof VastApiError) || !err.retryable || attempt >= this.#maxRetries) {
          throw err;
        }
        const delay = backoffDelay(attempt, {
          baseMs: this.#retryBaseMs,
          maxMs: this.#retryMaxMs,
          random: this.#random,
        });
        this.#logger.log("warn", `vast.ai API call failed, retrying in ${delay} ms`, {
          method,
          path,
          kind: err.kind,
          status: err.status ?? null,
          attempt: attempt + 1,
          maxRetries: this.#maxRetries,
        });
        await this.#clock.sleep(delay, opts.signal);
      }
    }
  }

  /** One HTTP exchange under the timeout; classifies every outcome. */
  async #attempt(
    method: string,
    path: string,
    opts: RequestOptions,
  ): Promise<ApiAnswer> {
    const url = new URL(this.#base + path);
    // vast's own CLI (apiurl in vast.py) JSON-encodes non-string values
    // (numbers, filters) and sends strings as they are, then URL-encodes.
    // An opaque after_token must go raw: JSON quotes would change the token.
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      url.searchParams.set(k, typeof v === "string" ? v : JSON.stringify(v));
    }
    const headers: Record<string, string> = {
      Authorization: `Bearer ${this.#apiKey}`,
      Accept: "application/json",
    };
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";

    // A real timer, not the injected clock: the timeout must fire while a test
    // drives FakeClock only for backoff sleeps. timeoutMs is small in tests.
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new DOMException("vast.ai API request timed out", "TimeoutError"));
    }, this.#timeoutMs);
    const onAbort = () => controller.abort(opts.signal?.reason);
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });

    let status: number;
    let text: string;
    try {
      const res = await this.#fetch(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: controller.signal,
      });
      status = res.status;
      text = await res.text();
    } catch (err) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const what = `${method} ${path}`;
      if (timedOut) {
        throw new VastApiError(
          "network",
          `vast.ai API did not answer within ${this.#timeoutMs} ms (${what}): check your network or --api-url`,
          { cause: err },
        );
      }
      const reason = this.#clean(err instanceof Error ? err.message : String(err));
      throw new VastApiError(
        "network",
        `Cannot reach the vast.ai API at ${url.origin} (${what}): ${reason}; check your network or --api-url`,
        { cause: err },
      );
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    }

    let body: unknown = undefined;
    let parsed = true;
    try {
      body = text === "" ? null : JSON.parse(text);
    } catch {
      parsed = false;
    }
    if (status >= 200 && status < 300) {
      if (!parsed || typeof body !== "object" || body === null) {
        throw new VastApiError(
          "bad-response",
          `vast.ai API sent an unreadable answer (HTTP ${status}, ${method} ${path}): expected a JSON object; will retry on the next poll`,
          { status },
        );
      }
      return { status, body };
    }
    throw this.#httpError(status, method, path, parsed ? body : text, opts.instanceId);
  }

  /** Builds the error for a non-2xx answer, with what the user should do. */
  #httpError(
    status: number,
    method: string,
    path: string,
    body: unknown,
    instanceId?: number,
  ): VastApiError {
    const kind = kindForStatus(status);
    const detail = this.#clean(serverDetail(body));
    const said = detail ? ` (vast.ai said: ${detail})` : "";
    const what = `${method} ${path}`;
    switch (kind) {
      case "auth":
        return new VastApiError(
          kind,
          `vast.ai API key rejected (HTTP ${status})${said}: check --api-key / VAST_API_KEY`,
          { status },
        );
      case "not-found":
        return new VastApiError(
          kind,
          instanceId !== undefined
            ? `vast.ai instance ${instanceId} not found (HTTP 404)${said}: it may have been destroyed`
            : `vast.ai API has no ${what} (HTTP 404)${said}: check --api-url`,
          { status },
        );
      case "rate-limited":
        return new VastApiError(
          kind,
          `vast.ai API rate limit hit (HTTP 429, ${what})${said}: backing off; a longer --poll-interval avoids it`,
          { status },
        );
      case "server":
        return new VastApiError(
          kind,
          `vast.ai API failed (HTTP ${status}, ${what})${said}: a vast.ai-side problem; retrying with backoff`,
          { status },
        );
      default:
        return new VastApiError(
          kind,
          `vast.ai API refused ${what} (HTTP ${status})${said}: this is likely a vastproxy bug; please report it`,
          { status },
        );
    }
  }

  /** Shortens server text and strips the key, should a server ever echo it. */
  #clean(text: string): string {
    // Proxies in front of vast answer 5xx with HTML; keep only its text.
    const plain = text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim();
    return redact(plain, [this.#apiKey]).slice(0, 200);
  }
}

/** `instances` of a listing body: an array, or null meaning empty. */
function instancesOf(body: unknown, path: string): unknown[] {
  const list = (body as { instances?: unknown }).instances;
  if (list === null || list === undefined) return [];
  if (!Array.isArray(list)) {
    throw new VastApiError("bad-response", badShape(path, "instances is not a list"));
  }
  return list;
}

function badShape(path: string, what: string): string {
  return `vast.ai API sent an unexpected listing (GET ${path}): ${what}; will retry on the next poll`;
}

/** The human part of a vast error body: `msg`, `message`, `detail`, `error`, or plain text. */
function serverDetail(body: unknown): string {
  if (typeof body === "string") return body;
  if (typeof body !== "object" || body === null) return "";
  const b = body as Record<string, unknown>;
  for (const key of ["msg", "message", "detail", "error"]) {
    if (typeof b[key] === "string" && b[key]) return b[key] as string;
  }
  return "";
}
