// parseHead before the response-leg pass (issue #14), kept verbatim as the oracle of
// tests/http1/parse_head_oracle_test.ts. Not used by the proxy.
import { bytesToLatin1 } from "../../../lib/http1/latin1.ts";
import {
  connectionOptions,
  MAX_HEADER_FIELDS,
  type ResponseHead,
  trimOws,
} from "../../../lib/http1/parse.ts";
import { type HeaderPairs, Http1Error } from "../../../lib/http1/types.ts";

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5][0-9]{2})(?:[ \t](.*))?$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Parses a head (status line and fields, without the terminating empty
 * line). Throws `Http1Error` (sent) for a head that cannot be read safely: a
 * bad status line, a line without a colon, a field name that is not a token,
 * or a fold with nothing before it.
 */
export function parseHead(bytes: Uint8Array): ResponseHead {
  const text = bytesToLatin1(bytes);
  const lines = text.split("\n");
  const first = lines[0].endsWith("\r") ? lines[0].slice(0, -1) : lines[0];
  const m = STATUS_LINE.exec(first);
  if (!m) {
    throw new Http1Error(
      `malformed status line from the engine: ${JSON.stringify(first.slice(0, 80))}`,
      { sent: true },
    );
  }
  const headers: HeaderPairs = [];
  for (let i = 1; i < lines.length; i++) {
    let line = lines[i];
    if (line.endsWith("\r")) line = line.slice(0, -1);
    if (line === "") continue;
    const c0 = line.charCodeAt(0);
    if (c0 === 0x20 || c0 === 0x09) {
      // obs-fold (RFC 9112 §5.2): a recipient replaces it with a space.
      const last = headers.at(-1);
      if (!last) {
        throw new Http1Error("malformed response head: fold before any field", { sent: true });
      }
      const more = trimOws(line);
      last[1] = last[1] === "" ? more : more === "" ? last[1] : `${last[1]} ${more}`;
      continue;
    }
    if (headers.length >= MAX_HEADER_FIELDS) {
      throw new Http1Error(`response head with over ${MAX_HEADER_FIELDS} fields`, { sent: true });
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Http1Error("malformed response header line", { sent: true });
    // Whitespace before the colon is not allowed; a proxy removes it (§5.1).
    const name = trimOws(line.slice(0, colon)).toLowerCase();
    if (!TOKEN.test(name)) throw new Http1Error("malformed response header name", { sent: true });
    headers.push([name, trimOws(line.slice(colon + 1))]);
  }
  const minor = Number(m[1]);
  let close = false;
  let keepAliveToken = false;
  let keepAliveTimeout: number | null = null;
  for (const [n, v] of headers) {
    if (n === "connection") {
      const o = connectionOptions(v);
      close ||= o.close;
      keepAliveToken ||= o.keepAlive;
    } else if (n === "keep-alive") {
      const t = /(?:^|[,;\s])timeout\s*=\s*"?([0-9]{1,6})/i.exec(v);
      if (t) keepAliveTimeout = Number(t[1]);
    }
  }
  return {
    minor,
    status: Number(m[2]),
    statusText: m[3] ?? "",
    headers,
    keepAlive: !close && (minor === 1 || keepAliveToken),
    keepAliveTimeout,
  };
}
