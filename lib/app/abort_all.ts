/**
 * SGLang's "abort all": `POST /abort_request {"abort_all": true}` stops every
 * running generation on an instance (the UI's `a` key). vLLM and llama.cpp
 * have no such endpoint; they abort a request when its connection closes,
 * which the relay already does on client disconnect.
 */
import { errorText } from "../core/errors.ts";
import { type HeaderPairs, Http1Error, readAll } from "../http1/types.ts";
import { instanceAuthorization } from "../proxy/headers.ts";
import { OWN_AFFINITY } from "../proxy/health.ts";
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

const ABORT_ALL_BODY = new TextEncoder().encode(JSON.stringify({ abort_all: true }));

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
  opts: AbortAllOptions = {},
): Promise<{ status: number }> {
  if (target.engine !== "sglang" && target.engine !== "unknown") {
    throw new AbortAllError(
      target.id,
      `Cannot abort requests on instance ${target.id}: engine ${target.engine} has no abort-all endpoint; only SGLang does`,
    );
  }
  const headers: HeaderPairs = [["content-type", "application/json"]];
  const auth = instanceAuthorization(target.upstreamAuth());
  if (auth) headers.push(["authorization", auth]);
  const timeout = AbortSignal.timeout(opts.timeoutMs ?? 5000);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  try {
    const res = await target.send({
      method: "POST",
      target: "/abort_request",
      headers,
      body: ABORT_ALL_BODY,
      signal,
      affinity: OWN_AFFINITY,
    });
    // The body is a short acknowledgement; read it so the channel is reused.
    await readAll(res, 64 * 1024).catch(() => {});
    return { status: res.status };
  } catch (err) {
    const why = err instanceof Http1Error && !err.sent
      ? "tunnel is down; retry once it reconnects"
      : errorText(err);
    throw new AbortAllError(target.id, `Cannot abort requests on instance ${target.id}: ${why}`, {
      cause: err,
    });
  }
}
