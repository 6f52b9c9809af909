/**
 * `new URL(url).pathname` for the URLs the relay routes on, without making
 * a `URL` (a WebIDL-converted object per request, for one string).
 *
 * Only the common shape is done here: an `http:` or `https:` URL whose path
 * holds nothing but characters the URL parser leaves as they are. Its
 * pathname is then the path with dot segments resolved as the WHATWG URL
 * parser resolves them (`.`, `..` and their `%2e` spellings). Anything else
 * (a backslash, a character the parser would percent-encode, another
 * scheme) goes to `URL` itself, so the answer is always the parser's.
 */

/** `new URL(url).pathname`, for a `url` the `URL` parser accepts. */
export function pathnameOf(url: string): string {
  const start = pathStart(url);
  if (start === -1) return new URL(url).pathname;
  let end = url.length;
  let special = false; // a `.` or `%`: dot segments are possible
  for (let i = start; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 0x3f /* ? */ || c === 0x23 /* # */) {
      end = i;
      break;
    }
    if (PLAIN[c] !== 1) return new URL(url).pathname;
    if (c === 0x2e || c === 0x25) special = true;
  }
  if (start === end) return "/";
  const path = url.slice(start, end);
  return special ? resolveDots(path) : path;
}

/**
 * Where the path of `url` starts (its first `/`, or the end of the
 * authority when there is no path), or -1 when `url` is not a plain
 * `http(s)://` URL this module reads.
 */
function pathStart(url: string): number {
  let i: number;
  if (startsWithI(url, "http://")) i = 7;
  else if (startsWithI(url, "https://")) i = 8;
  else return -1;
  for (; i < url.length; i++) {
    const c = url.charCodeAt(i);
    if (c === 0x2f /* / */ || c === 0x3f /* ? */ || c === 0x23 /* # */) return i;
    // A backslash ends the authority of a special URL; whitespace is stripped: the parser's job.
    if (c === 0x5c || c <= 0x20) return -1;
  }
  return i;
}

function startsWithI(s: string, prefix: string): boolean {
  if (s.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    if (c !== prefix.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Characters the URL parser keeps unchanged in a special URL's path:
 * RFC 3986's unreserved and sub-delims, `:`, `@`, `/` and `%`.
 */
const PLAIN = new Uint8Array(128);
for (
  const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/%"
) {
  PLAIN[c.charCodeAt(0)] = 1;
}

/** The WHATWG path state's dot-segment handling over `path` (starts with `/`). */
function resolveDots(path: string): string {
  const segments = path.slice(1).split("/");
  const out: string[] = [];
  const last = segments.length - 1;
  for (let i = 0; i <= last; i++) {
    const s = segments[i];
    if (isDoubleDot(s)) {
      // Deno's parser never removes a segment shaped like a Windows drive
      // letter (`c:`), whatever the scheme: `/c:/..` is `/c:/`.
      if (out.length > 0 && !isDriveLetter(out[out.length - 1])) out.pop();
      // `/a/..` is `/`, with its trailing slash.
      if (i === last) out.push("");
    } else if (isSingleDot(s)) {
      if (i === last) out.push("");
    } else {
      out.push(s);
    }
  }
  return `/${out.join("/")}`;
}

/** `c:` for any ASCII letter c (`c|` never gets here: `|` is not plain). */
function isDriveLetter(s: string): boolean {
  if (s.length !== 2 || s.charCodeAt(1) !== 0x3a) return false;
  const c = s.charCodeAt(0) | 0x20;
  return c >= 0x61 && c <= 0x7a;
}

function isSingleDot(s: string): boolean {
  return s === "." || (s.length === 3 && s.toLowerCase() === "%2e");
}

function isDoubleDot(s: string): boolean {
  if (s === "..") return true;
  if (s.length < 4 || s.length > 6) return false;
  const l = s.toLowerCase();
  return l === ".%2e" || l === "%2e." || l === "%2e%2e";
}
