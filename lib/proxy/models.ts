/**
 * Model lists: what one engine's `GET /v1/models` says (parsed at each
 * health check) and what the proxy answers for `GET /v1/models` (the union
 * over routable backends).
 *
 * Engines describe their models with more than an id: vLLM sends
 * `max_model_len`, `root`, `parent` and `permission`, SGLang `root` and
 * `max_model_len`, llama.cpp a `meta` object. Clients size their context
 * window from these, so every entry is kept whole and passed through; the
 * proxy only adds fields (`instances`) and fills OpenAI's required ones when
 * an engine left them out.
 *
 * An engine's list is untrusted input that the proxy keeps in memory and
 * scans on every routed request, so parsing is linear (a Set de-duplicates)
 * and bounded: at most `maxModels` entries and `maxBytes` of content per
 * backend, and per entry a few structural limits. What had to be cut is
 * reported in `capped`, for the backend to log once rather than at every
 * health check.
 */
import { errorResponse } from "./errors.ts";

/** One model as an engine described it: the whole JSON object, deep-frozen. */
export type ModelEntry = Readonly<Record<string, unknown>> & { readonly id: string };

/** One engine's model list after parsing. */
export interface ModelList {
  /** Model ids, de-duplicated, in the engine's order (what routing matches on). */
  readonly models: readonly string[];
  /** The entries behind `models`, same order, each kept whole. */
  readonly entries: readonly ModelEntry[];
  /** Why part of the list was dropped (too many models, too large), or null when nothing was. */
  readonly capped: string | null;
}

/** Bounds of `parseModelList()`. */
export interface ModelListLimits {
  /** Most models kept per backend (default 1000). */
  maxModels?: number;
  /** Most content kept per backend, roughly in JSON bytes (default 1 MiB). */
  maxBytes?: number;
}

/** Default per-backend model cap (DESIGN.md §6; issue #12 item 6). */
export const MAX_MODELS_PER_BACKEND = 1000;
/** Default per-backend content budget, roughly JSON bytes. */
export const MAX_MODEL_LIST_BYTES = 1 << 20;

// Per-entry sanity bounds. A real entry is a flat object with a short
// `permission` list (depth 3, about a dozen keys); these only stop an engine
// that sends something absurd from making the proxy hold it.
const MAX_ID_CHARS = 1024;
const MAX_STRING_CHARS = 8192;
const MAX_KEYS = 64;
const MAX_ITEMS = 64;
const MAX_DEPTH = 4;

/**
 * Parses an OpenAI `/v1/models` body (`{"data":[{"id":…, …}]}`); null when
 * the shape is wrong. Entries without a non-empty string id are skipped, a
 * repeated id keeps its first entry, and the limits above apply.
 */
export function parseModelList(body: unknown, limits: ModelListLimits = {}): ModelList | null {
  if (typeof body !== "object" || body === null) return null;
  const data = (body as { data?: unknown }).data;
  if (!Array.isArray(data)) return null;
  const maxModels = limits.maxModels ?? MAX_MODELS_PER_BACKEND;
  const budget: Budget = { left: limits.maxBytes ?? MAX_MODEL_LIST_BYTES, trimmed: 0 };
  const seen = new Set<string>();
  const models: string[] = [];
  const entries: ModelEntry[] = [];
  let capped: string | null = null;
  for (const raw of data) {
    const id = (raw as { id?: unknown } | null)?.id;
    if (typeof id !== "string" || id === "" || id.length > MAX_ID_CHARS || seen.has(id)) continue;
    if (models.length >= maxModels) {
      // Only a new id means something was really dropped: a tail of
      // duplicates is not worth a warning.
      capped = `the engine lists more than ${maxModels} models; kept the first ${maxModels}`;
      break;
    }
    const trimmedBefore = budget.trimmed;
    const entry = copyJson(raw, 0, budget) as ModelEntry;
    if (budget.left < 0) {
      budget.trimmed = trimmedBefore;
      capped = `the engine's model list exceeds ${
        limits.maxBytes ?? MAX_MODEL_LIST_BYTES
      } bytes; kept the first ${models.length} models`;
      break;
    }
    seen.add(id);
    models.push(id);
    entries.push(entry);
  }
  if (budget.trimmed > 0) {
    const note = `dropped oversized fields of ${budget.trimmed} model entries`;
    capped = capped ? `${capped}; ${note}` : note;
  }
  return { models: Object.freeze(models), entries: Object.freeze(entries), capped };
}

/** What is left of the content budget, and how many entries lost a field to the bounds. */
interface Budget {
  left: number;
  trimmed: number;
}

/**
 * A deep-frozen copy of a JSON value within the bounds; an over-bound value
 * becomes undefined (its key is then dropped) and counts as trimmed.
 * `Object.fromEntries` defines keys, so an engine's `"__proto__"` key stays
 * plain data instead of setting a prototype.
 */
function copyJson(value: unknown, depth: number, budget: Budget): unknown {
  // Over budget: stop copying at once, so an absurd entry costs no more
  // work than the budget it exhausted (the caller then drops it).
  if (budget.left < 0) return undefined;
  switch (typeof value) {
    case "string":
      if (value.length > MAX_STRING_CHARS) return trim(budget);
      budget.left -= value.length + 2;
      return value;
    case "number":
    case "boolean":
      budget.left -= 8;
      return value;
    case "object": {
      if (value === null) {
        budget.left -= 4;
        return null;
      }
      if (depth >= MAX_DEPTH) return trim(budget);
      budget.left -= 2;
      if (Array.isArray(value)) {
        if (value.length > MAX_ITEMS) return trim(budget);
        const items: unknown[] = [];
        for (const v of value) {
          if (budget.left < 0) break;
          items.push(copyJson(v, depth + 1, budget) ?? null);
        }
        return Object.freeze(items);
      }
      const keys = Object.keys(value);
      if (keys.length > MAX_KEYS) return trim(budget);
      const fields: [string, unknown][] = [];
      for (const k of keys) {
        if (budget.left < 0) break;
        const v = copyJson((value as Record<string, unknown>)[k], depth + 1, budget);
        budget.left -= k.length + 3;
        if (v !== undefined) fields.push([k, v]);
      }
      return Object.freeze(Object.fromEntries(fields));
    }
    default:
      return undefined; // not JSON (cannot come from JSON.parse)
  }
}

function trim(budget: Budget): undefined {
  budget.trimmed++;
  return undefined;
}

/** A backend as the models answer sees it (a `RouteTarget` fits). */
export interface ModelSource {
  readonly id: number;
  /** Model ids; used alone when `modelEntries` is absent. */
  readonly models: readonly string[];
  /** The engine's entries for `models`, when the backend kept them. */
  readonly modelEntries?: readonly ModelEntry[];
}

/** One model of the proxy's `/v1/models` answer. */
export type MergedModel = Record<string, unknown> & { id: string; instances: number[] };

/**
 * The union of the sources' models, de-duplicated by id, in order of
 * backend id then engine order. Each model keeps the fields of the first
 * backend (by id) that serves it, gains `instances` (the ids serving it, for
 * pinning with `X-VastProxy-Instance`), and OpenAI's required `object`,
 * `created` and `owned_by` when the engine left them out. Where backends
 * disagree on a numeric `max_model_len`, the smallest wins: a request may be
 * routed to any of them, so only the smallest limit holds for every one.
 */
export function mergeModels(sources: readonly ModelSource[], now: number): MergedModel[] {
  const created = Math.floor(now / 1000);
  const merged = new Map<string, { base: Readonly<Record<string, unknown>>; ids: number[] }>();
  const minLen = new Map<string, number>();
  for (const s of [...sources].sort((a, b) => a.id - b.id)) {
    const entries: readonly Readonly<Record<string, unknown>>[] = s.modelEntries ??
      s.models.map((id) => ({ id }));
    for (const e of entries) {
      const id = e.id as string;
      const m = merged.get(id);
      if (m) m.ids.push(s.id);
      else merged.set(id, { base: e, ids: [s.id] });
      const len = e.max_model_len;
      if (typeof len === "number" && Number.isFinite(len)) {
        const min = minLen.get(id);
        if (min === undefined || len < min) minLen.set(id, len);
      }
    }
  }
  const data: MergedModel[] = [];
  for (const [id, { base, ids }] of merged) {
    const len = minLen.get(id);
    // Spreading defines keys, so the engine's values replace the defaults in
    // place and `id` stays first.
    data.push({
      id,
      object: "model",
      created,
      owned_by: "vastproxy",
      ...base,
      ...(len !== undefined ? { max_model_len: len } : {}),
      instances: ids,
    });
  }
  return data;
}

/**
 * `GET /v1/models`, answered by the proxy from what routable backends
 * reported at their last health check (no round trip through every tunnel),
 * in OpenAI's list shape; 503 while no backend is routable.
 */
export function modelsResponse(routable: readonly ModelSource[], now: number): Response {
  if (routable.length === 0) return errorResponse("no_healthy_backend");
  return Response.json({ object: "list", data: mergeModels(routable, now) });
}

/**
 * Each model's numeric `max_model_len` as this backend's engine reported it,
 * for /vastproxy/status, where per-instance values show why the merged
 * `/v1/models` answer reports the smallest.
 */
export function maxModelLens(entries: readonly ModelEntry[]): Record<string, number> {
  const out: [string, number][] = [];
  for (const e of entries) {
    if (typeof e.max_model_len === "number") out.push([e.id, e.max_model_len]);
  }
  return Object.fromEntries(out);
}
