/**
 * What routing knows about one request, gathered once by the relay and
 * handed to eligibility filters and policies. One object, so a new input
 * (say, a prefix hash for cache-aware routing) changes no policy signature.
 */
import { jsonObjectOf, modelOf, nonEmpty } from "./body_model.ts";
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
  /**
   * The prompt's prefix as cumulative block hashes (see `prefixBlocks`):
   * element k identifies the whole prompt text up to the end of block k.
   * Only present when the policy asks for it (`Policy.usesPrefix`), and
   * computed on first read (for bodies up to `LAZY_PREFIX_BYTES`).
   */
  readonly prefix?: readonly number[];
}

/** Options of `routeInfoFor`. */
export interface RouteInfoOptions {
  /** Extract `prefix` from a JSON body (default false: cache-blind policies skip the work). */
  prefix?: boolean;
}

/** Builds the route info from request headers and the buffered body. */
export function routeInfoFor(
  headers: Headers | ((name: string) => string | null),
  body: Uint8Array | null,
  stickyHeader: string | null,
  knownModels?: ReadonlySet<string>,
  opts: RouteInfoOptions = {},
): RouteInfo {
  const get = typeof headers === "function" ? headers : (name: string) => headers.get(name);
  // The model only changes routing when the fleet serves several; skip
  // parsing (up to 8 MiB of JSON, or a whole multipart upload, on the event
  // loop) when it cannot matter.
  const wantModel = !(knownModels && knownModels.size <= 1);
  let model: string | undefined;
  const contentType = opts.prefix || wantModel ? get("content-type") : null;
  // The prompt text, when the parse for the model made it already (one
  // parse serves both); "" when the body is not a JSON object.
  let text: string | null = null;
  if (wantModel) {
    const json = opts.prefix ? jsonObjectOf(contentType, body) : undefined;
    if (opts.prefix) text = json ? promptText(json) : "";
    model = json ? nonEmpty(json.model) : modelOf(contentType, body);
  }
  const sticky = stickyHeader ? get(stickyHeader.toLowerCase()) : null;
  const pinnedId = parsePin(get(INSTANCE_HEADER));
  // Assigned in the order the spreads used to give, with no temporary objects.
  // With a prefix to make later, the route's getter comes from one shared
  // prototype: a getter defined on each route (a closure apiece) made every
  // route a dictionary-mode object, 2 µs to build and slow to read.
  const info: Mutable<RouteInfo> = opts.prefix ? Object.create(LAZY_ROUTE) : {};
  if (model !== undefined) info.model = model;
  if (sticky) info.stickyKey = sticky;
  if (pinnedId !== undefined) info.pinnedId = pinnedId;
  if (knownModels) info.knownModels = knownModels;
  if (opts.prefix) {
    // Made on first read: a policy with one candidate has no choice to make
    // and reads it later (CacheAware), and a request refused before routing
    // never pays for it. A body over LAZY_PREFIX_BYTES is read now, so a
    // route kept for later holds little.
    const make = lazyPrefix(contentType, text === null ? body : null, text);
    // What a kept route holds is the body's whole buffer, not just its view.
    if (body !== null && body.buffer.byteLength > LAZY_PREFIX_BYTES) make();
    Object.defineProperty(info, MAKE_PREFIX, { value: make });
  }
  return info;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const MAKE_PREFIX: unique symbol = Symbol("make prefix");

/**
 * The prototype of routes whose prefix is made on first read. Not
 * enumerable, so a route's own keys stay what is known without the parse.
 */
const LAZY_ROUTE: object = Object.create(Object.prototype, {
  prefix: {
    configurable: true,
    get(this: { [MAKE_PREFIX]: () => readonly number[] | undefined }) {
      return this[MAKE_PREFIX]();
    },
  },
});

/**
 * The prefix of a body, made once on the first call. Made out here, not in
 * `routeInfoFor`: a closure made there would share its scope, and with it
 * the header lookup (the whole request) for as long as the route lives.
 */
function lazyPrefix(
  contentType: string | null,
  body: Uint8Array | null,
  text: string | null,
): () => readonly number[] | undefined {
  let prefix: readonly number[] | undefined | null = null;
  return () => {
    if (prefix === null) {
      if (text === null) {
        const json = jsonObjectOf(contentType, body);
        text = json ? promptText(json) : "";
      }
      const blocks = prefixBlocks(text);
      prefix = blocks.length > 0 ? blocks : undefined;
      // Read once: the route holds neither the upload nor its text from here.
      body = null;
      text = null;
    }
    return prefix;
  };
}

/** Largest body whose prefix `routeInfoFor` leaves to be read later. */
export const LAZY_PREFIX_BYTES = 8 * 1024;

/** Characters per prefix block: about 16 tokens, the page size engines cache in. */
export const PREFIX_BLOCK_CHARS = 64;
/** Most blocks taken from one prompt (32 KiB of text): bounds hashing work and policy memory. */
export const MAX_PREFIX_BLOCKS = 512;

/**
 * The prompt text an engine would prefix-cache, in order: chat `messages`
 * (role and text content of each), else `prompt` (a string, or the first of
 * a list of strings). Stops collecting once the block cap is reached. Token
 * arrays and non-text parts contribute nothing; two prompts that differ
 * only there hash alike, which costs affinity precision, not correctness.
 */
export function promptText(json: Record<string, unknown>, maxChars = maxPrefixChars()): string {
  // Concatenated as it goes (no parts array nor closure per request): V8
  // joins the pieces lazily, and the cap check reads the running length.
  let text = "";
  const messages = json.messages;
  if (Array.isArray(messages)) {
    for (const m of messages) {
      if (text.length >= maxChars) break;
      if (!m || typeof m !== "object") continue;
      const { role, content } = m as Record<string, unknown>;
      // Control-character separators, so ["ab", "c"] and ["a", "bc"] differ.
      text += `\u0000${typeof role === "string" ? role : ""}\u0001`;
      if (typeof content === "string") text += content;
      else if (Array.isArray(content)) {
        for (const part of content) {
          const piece = part && typeof part === "object"
            ? (part as Record<string, unknown>).text
            : undefined;
          if (typeof piece === "string") text += piece;
        }
      }
    }
  } else if (typeof json.prompt === "string") {
    text = json.prompt;
  } else if (Array.isArray(json.prompt) && typeof json.prompt[0] === "string") {
    text = json.prompt[0];
  }
  return text.length > maxChars ? text.slice(0, maxChars) : text;
}

function maxPrefixChars(): number {
  return PREFIX_BLOCK_CHARS * MAX_PREFIX_BLOCKS;
}

/**
 * Cumulative hashes of `text`'s full 64-char blocks, at most `maxBlocks`:
 * the hash state runs on across blocks, so block k names the whole prefix
 * up to k and two prompts share block k's hash only if they share all text
 * up to it. Two 32-bit lanes (FNV-1a and a multiply-xorshift) give a
 * 53-bit value, so collisions among the policy's 100k remembered blocks are
 * negligible. A trailing partial block is left out: it names only this exact prompt.
 */
export function prefixBlocks(text: string, maxBlocks = MAX_PREFIX_BLOCKS): number[] {
  const blocks: number[] = [];
  const full = Math.min(Math.floor(text.length / PREFIX_BLOCK_CHARS), maxBlocks);
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  for (let k = 0; k < full; k++) {
    const end = (k + 1) * PREFIX_BLOCK_CHARS;
    for (let i = k * PREFIX_BLOCK_CHARS; i < end; i++) {
      const c = text.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x5bd1e995);
      b ^= b >>> 15;
    }
    blocks.push((a >>> 0) * 0x200000 + (b >>> 11));
  }
  return blocks;
}
