/**
 * The `model` a request body names, for model-aware routing (DESIGN.md §7),
 * in every encoding an OpenAI client sends one: JSON (chat, completions,
 * embeddings…), `multipart/form-data` (audio transcriptions and
 * translations, image edits, file uploads) and
 * `application/x-www-form-urlencoded`.
 *
 * The relay has already buffered the body once (a retry replays it), so
 * these read from that buffer and never copy it: the multipart parser
 * (multipasta, synchronous and web-native) hands out views into it, file
 * parts are skipped without being collected, and parsing stops at the
 * `model` field. A body that cannot be read is routed without a model and
 * the engine answers it, as before.
 */
import { decodeField, make as makeMultipartParser } from "multipasta";

/** JSON and urlencoded bodies larger than this are not parsed for `model` (they are still proxied). */
export const MAX_PARSE_BYTES = 8 * 1024 * 1024;
/** A multipart `model` field longer than this is not a model name; the body is routed without one. */
const MAX_MODEL_FIELD_BYTES = 4096;

/**
 * The non-empty `model` of `body` under `contentType`, or undefined. A
 * missing content type is read as JSON when the body looks like an object
 * (what curl users often send); other types carry no model.
 */
export function modelOf(contentType: string | null, body: Uint8Array | null): string | undefined {
  if (!body || body.length === 0) return undefined;
  const mediaType = mediaTypeOf(contentType);
  if (mediaType === "multipart/form-data") return multipartModel(contentType!, body);
  if (mediaType === "application/x-www-form-urlencoded") return urlencodedModel(body);
  if (mediaType === "" || mediaType.includes("json")) return jsonModel(body);
  return undefined;
}

/** The media type of a Content-Type value, lower case ("" when absent). */
export function mediaTypeOf(contentType: string | null): string {
  // `split(";", 1)[0]` without the array, on every request's content type.
  const value = contentType ?? "";
  const semi = value.indexOf(";");
  return (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
}

/** `model` of a JSON object body (`application/json`, `…+json`, or untyped). */
function jsonModel(body: Uint8Array): string | undefined {
  const parsed = jsonObject(body);
  return parsed ? nonEmpty(parsed.model) : undefined;
}

/**
 * The body as a JSON object when `contentType` is JSON (or absent) and it
 * parses as one, else undefined. For callers that need more than `model`
 * (prefix-aware routing) from the one parse.
 */
export function jsonObjectOf(
  contentType: string | null,
  body: Uint8Array | null,
): Record<string, unknown> | undefined {
  if (!body || body.length === 0) return undefined;
  const mediaType = mediaTypeOf(contentType);
  if (mediaType !== "" && !mediaType.includes("json")) return undefined;
  return jsonObject(body);
}

/** One decoder for all bodies: `decode()` without `stream` keeps no state between calls. */
const UTF8 = new TextDecoder();

/** Parses a JSON object body of at most MAX_PARSE_BYTES, or undefined. */
function jsonObject(body: Uint8Array): Record<string, unknown> | undefined {
  if (body.length > MAX_PARSE_BYTES) return undefined;
  // Skip leading whitespace and require an object, so we never JSON.parse
  // megabytes of something that cannot carry a model field.
  let i = 0;
  while (
    i < body.length &&
    (body[i] === 0x20 || body[i] === 0x0a || body[i] === 0x0d || body[i] === 0x09)
  ) i++;
  if (body[i] !== 0x7b /* { */) return undefined;
  try {
    const parsed: unknown = JSON.parse(UTF8.decode(body));
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      return parsed as Record<string, unknown>;
    }
  } catch { /* not JSON: route without a model */ }
  return undefined;
}

/** `model` of a urlencoded form; the first one when repeated. */
function urlencodedModel(body: Uint8Array): string | undefined {
  if (body.length > MAX_PARSE_BYTES) return undefined;
  return nonEmpty(new URLSearchParams(UTF8.decode(body)).get("model"));
}

/** Thrown from the parser's callbacks to end parsing early; never escapes this module. */
const STOP = Symbol("stop parsing");

/**
 * `model` of a multipart form. Every part except `model` is declared a
 * "file" and gets a no-op sink, so the parser neither collects nor copies
 * it (an audio upload passes through as views into the buffer). The whole
 * buffer goes in as one write: writing slices would make the parser copy a
 * slice whenever one ends inside a possible boundary. To stop right after
 * the `model` field, or at the first error, the callbacks throw `STOP`,
 * which unwinds out of the parser; the parser is local and discarded.
 * No size cap: the scan is linear and zero-copy, and an upload whose
 * `model` follows a 25 MB file is exactly the case to route.
 */
function multipartModel(contentType: string, body: Uint8Array): string | undefined {
  let model: string | undefined;
  try {
    // Inside the try: a content type without a boundary fails in `make`.
    const parser = makeMultipartParser({
      headers: { "content-type": contentType },
      isFile: (info) => info.name !== "model",
      onFile: () => ignoreChunk,
      onField: (info, value) => {
        model = nonEmpty(decodeField(info, value));
        throw STOP;
      },
      onError: () => {
        throw STOP;
      },
      onDone: () => {
        throw STOP;
      },
      maxFieldSize: MAX_MODEL_FIELD_BYTES,
    });
    // No `end()`: a part is only complete at the boundary after it, so a
    // body cut off before that has no model to find.
    parser.write(body);
  } catch (err) {
    if (err !== STOP) return undefined; // a parser bug must not fail the request
  }
  return model;
}

function ignoreChunk(_chunk: Uint8Array | null): void {}

/** `value` when it is a non-empty string. */
export function nonEmpty(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}
