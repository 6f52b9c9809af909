/**
 * What routing knows about one request, gathered once by the relay and
 * handed to eligibility filters and policies. One object, so a new input
 * (say, a prefix hash for cache-aware routing) changes no policy signature.
 */
import { INSTANCE_HEADER, parsePin } from "./headers.ts";

/** Routing inputs of one request. */
export interface RouteInfo {
  /** `model` from a JSON request body, when present. */
  readonly model?: string;
  /** Value of the `--sticky-header` header, when configured and sent. */
  readonly stickyKey?: string;
  /** Instance id from `X-VastProxy-Instance`, when valid. */
  readonly pinnedId?: number;
  /** Models the whole fleet serves, healthy or not (see `Pool.knownModels`). */
  readonly knownModels?: ReadonlySet<string>;
}

/** Bodies larger than this are not parsed for `model` (they are still proxied). */
const MAX_PARSE_BYTES = 8 * 1024 * 1024;

/**
 * The `model` field of a JSON body, or undefined. Only bodies that look like
 * JSON objects are parsed; anything else (multipart audio uploads, invalid
 * JSON) is simply routed without model awareness, and the engine answers it.
 */
export function modelFromBody(
  body: Uint8Array | null,
  contentType: string | null,
): string | undefined {
  if (!body || body.length === 0 || body.length > MAX_PARSE_BYTES) return undefined;
  if (contentType && !/json/i.test(contentType)) return undefined;
  // Skip leading whitespace and require an object, so we never JSON.parse
  // megabytes of something that cannot carry a model field.
  let i = 0;
  while (
    i < body.length &&
    (body[i] === 0x20 || body[i] === 0x0a || body[i] === 0x0d || body[i] === 0x09)
  ) i++;
  if (body[i] !== 0x7b /* { */) return undefined;
  try {
    const parsed: unknown = JSON.parse(new TextDecoder().decode(body));
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      const model = (parsed as Record<string, unknown>).model;
      if (typeof model === "string" && model.length > 0) return model;
    }
  } catch { /* not JSON: route without a model */ }
  return undefined;
}

/** Builds the route info from request headers and the buffered body. */
export function routeInfoFor(
  headers: Headers,
  body: Uint8Array | null,
  stickyHeader: string | null,
  knownModels?: ReadonlySet<string>,
): RouteInfo {
  // The model only changes routing when the fleet serves several; skip
  // parsing (up to 8 MiB of JSON on the event loop) when it cannot matter.
  const model = knownModels && knownModels.size <= 1
    ? undefined
    : modelFromBody(body, headers.get("content-type"));
  const sticky = stickyHeader ? headers.get(stickyHeader) : null;
  const pinnedId = parsePin(headers.get(INSTANCE_HEADER));
  return {
    ...(model !== undefined ? { model } : {}),
    ...(sticky ? { stickyKey: sticky } : {}),
    ...(pinnedId !== undefined ? { pinnedId } : {}),
    ...(knownModels ? { knownModels } : {}),
  };
}
