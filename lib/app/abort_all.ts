/**
 * SGLang's "abort all": `POST /abort_request {"abort_all": true}` stops every
 * running generation on an instance (the UI's `a` key). vLLM and llama.cpp
 * have no such endpoint; they abort a request when its connection closes,
 * which the relay already does on client disconnect.
 */
import { instanceAuthorization } from "../proxy/headers.ts";
import type { RouteTarget } from "../proxy/pool.ts";

/** Why `abortAll` could not send its request. */
export class AbortAllError extends Error {
  /** The instance concerned. */
  readonly instanceId: number;

  /** `instanceId` names the backend; the message carries no secret. */
  constructor(instanceId: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AbortAllError";
    this.instanceId = instanceId;
  }
}

/** Options of `abortAll`. */
export interface AbortAllOptions {
  /** Gives up after this many ms (default 5000). */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}

/**
 * Asks an SGLang instance to abort all running requests. Resolves with the
 * HTTP status the engine answered (200 on success); rejects with
 * `AbortAllError` when the engine is known not to be SGLang, the tunnel is
 * down, or the request failed in transport. `unknown` engines are tried,
 * since detection from env vars can miss a custom image.
 */
export async function abortAll(
  target: RouteTarget,
  fetchFn: typeof fetch = fetch,
  opts: AbortAllOptions = {},
): Promise<{ status: number }> {
  if (target.engine !== "sglang" && target.engine !== "unknown") {
    throw new AbortAllError(
      target.id,
      `Cannot abort requests on instance ${target.id}: engine ${target.engine} has no abort-all endpoint; only SGLang does`,
    );
  }
  const base = target.baseUrl();
  if (!base) {
    throw new AbortAllError(
      target.id,
      `Cannot abort requests on instance ${target.id}: tunnel is down; retry once it reconnects`,
    );
  }
  const headers = new Headers({ "content-type": "application/json" });
  const auth = instanceAuthorization(target.upstreamAuth());
  if (auth) headers.set("authorization", auth);
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 5000);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  try {
    const res = await fetchFn(new URL("/abort_request", base), {
      method: "POST",
      headers,
      body: JSON.stringify({ abort_all: true }),
      signal,
    });
    // The body is a short acknowledgement; drain it so the connection is reused.
    await res.body?.cancel();
    return { status: res.status };
  } catch (err) {
    throw new AbortAllError(
      target.id,
      `Cannot abort requests on instance ${target.id}: ${
        err instanceof Error ? err.message : String(err)
      }`,
      { cause: err },
    );
  }
}
