/**
 * Test conveniences over the HTTP/1.1 client interface: send a request
 * through anything with `request()` (a tunnel, a client, a backend's `send`)
 * and read the answer as a web `Response`.
 */
import type { HeaderPairs, Http1Request, Http1Response } from "../../lib/http1/types.ts";

/** Anything that sends `Http1Request`s. */
export type Sends = { request(req: Http1Request): Promise<Http1Response> };

/** Options of `send`. */
export interface SendInit {
  method?: string;
  headers?: HeaderPairs;
  body?: string | Uint8Array | null;
  signal?: AbortSignal;
  affinity?: string;
}

/** Sends `target` through `via` and returns the answer as a web Response. */
export async function send(via: Sends, target: string, init: SendInit = {}): Promise<Response> {
  const body = typeof init.body === "string" ? new TextEncoder().encode(init.body) : init.body;
  const res = await via.request({
    method: init.method ?? "GET",
    target,
    headers: init.headers ?? [],
    body: body ?? null,
    signal: init.signal,
    affinity: init.affinity,
  });
  return toResponse(res);
}

/** An `Http1Response` as a web Response (fields Headers cannot hold are skipped). */
export function toResponse(res: Http1Response): Response {
  const headers = new Headers();
  for (const [n, v] of res.headers) {
    try {
      headers.append(n, v);
    } catch { /* not representable: skipped */ }
  }
  const nullBody = [204, 205, 304].includes(res.status);
  const statusText = /^[\t\x20-\x7e\x80-\xff]*$/.test(res.statusText) ? res.statusText : "";
  return new Response(nullBody ? null : res.body, { status: res.status, statusText, headers });
}
