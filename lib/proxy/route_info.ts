/**
 * What routing knows about one request, gathered once by the relay and
 * handed to eligibility filters and policies. One object, so a new input
 * (say, a prefix hash for cache-aware routing) changes no policy signature.
 */
import { modelOf } from "./body_model.ts";
import { INSTANCE_HEADER, parsePin } from "./headers.ts";

/** Routing inputs of one request. */
export interface RouteInfo {
  /** `model` of the request body (JSON, multipart or urlencoded form), when present. */
  readonly model?: string;
  /** Value of the `--sticky-header` header, when configured and sent. */
  readonly stickyKey?: string;
  /** Instance id from `X-VastProxy-Instance`, when valid. */
  readonly pinnedId?: number;
  /** Models the whole fleet serves, healthy or not (see `Pool.knownModels`). */
  readonly knownModels?: ReadonlySet<string>;
}

/** Builds the route info from request headers and the buffered body. */
export function routeInfoFor(
  headers: Headers | ((name: string) => string | null),
  body: Uint8Array | null,
  stickyHeader: string | null,
  knownModels?: ReadonlySet<string>,
): RouteInfo {
  const get = typeof headers === "function" ? headers : (name: string) => headers.get(name);
  // The model only changes routing when the fleet serves several; skip
  // parsing (up to 8 MiB of JSON, or a whole multipart upload, on the event
  // loop) when it cannot matter.
  const model = knownModels && knownModels.size <= 1
    ? undefined
    : modelOf(get("content-type"), body);
  const sticky = stickyHeader ? get(stickyHeader.toLowerCase()) : null;
  const pinnedId = parsePin(get(INSTANCE_HEADER));
  return {
    ...(model !== undefined ? { model } : {}),
    ...(sticky ? { stickyKey: sticky } : {}),
    ...(pinnedId !== undefined ? { pinnedId } : {}),
    ...(knownModels ? { knownModels } : {}),
  };
}
