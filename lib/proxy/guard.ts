/**
 * The last check before a `Response` leaves the process. `Deno.serve` panics
 * and exits the whole process on a header value it cannot write (a control
 * byte, DEL), so whatever path built a response — the relay, admin, an error,
 * a future route — it passes through `guardResponse` on its way out. The
 * relay already drops such headers (and logs them with the instance id); this
 * guard is the backstop that makes the rule hold for every path.
 */
import { isEmittableValue } from "./headers.ts";
import { headersOrder, responsePairsOf } from "../http1/raw.ts";
import type { HeaderPairs } from "../http1/types.ts";

/** Leading and trailing HTTP whitespace, which `Headers` strips from a value it takes. */
const HTTP_WS_EDGES = /^[\t\n\r ]+|[\t\n\r ]+$/g;

/** `res` unchanged when every header can be sent, else a copy without the ones that cannot. */
export function guardResponse(res: Response, onDropped?: (name: string) => void): Response {
  const pairs = responsePairsOf(res);
  if (pairs !== undefined) {
    // Fields still beside the response (raw.ts): check and edit them in place.
    let badNames: Set<string> | null = null;
    for (const [name, value] of pairs) {
      if (!isEmittableValue(value)) (badNames ??= new Set()).add(name);
    }
    if (badNames === null) return res;
    // As the copy below: the fields as Headers lists them, re-added (which
    // trims the joined values), without the bad names.
    const kept: HeaderPairs = [];
    for (const [name, value] of headersOrder(pairs)) {
      if (!badNames.has(name)) kept.push([name, value.replace(HTTP_WS_EDGES, "")]);
    }
    pairs.length = 0;
    pairs.push(...kept);
    for (const name of [...badNames].sort()) onDropped?.(name);
    return res;
  }
  let bad: string[] | null = null;
  for (const [name, value] of res.headers) {
    if (!isEmittableValue(value)) (bad ??= []).push(name);
  }
  if (bad === null) return res;
  const headers = new Headers();
  for (const [name, value] of res.headers) {
    if (isEmittableValue(value)) headers.append(name, value);
  }
  for (const name of bad) onDropped?.(name);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}
