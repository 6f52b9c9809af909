/**
 * The `--auth-token` check. Comparing the raw strings would leak, through
 * timing, how many leading characters a guess got right. Both sides are
 * hashed to SHA-256 first (32 bytes whatever the input, so the length of the
 * token does not leak either), then compared with the platform's constant-time
 * `timingSafeEqual` from node:crypto.
 */
import { createHash, timingSafeEqual } from "node:crypto";

/** SHA-256 of `text` as bytes: a fixed length for any input. */
function digest(text: string): Uint8Array {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Extracts the credential from an `Authorization: Bearer <token>` value,
 * or null when the header is missing or uses another scheme.
 */
export function bearerToken(authorization: string | null): string | null {
  if (!authorization) return null;
  const m = /^bearer[ \t]+(.*)$/i.exec(authorization.trim());
  return m ? m[1].trim() : null;
}

/** Options of `createTokenCheck`. */
export interface TokenCheckOptions {
  /**
   * Constant-time equality of two equal-length byte arrays (default
   * node:crypto's `timingSafeEqual`); tests pass a spy to see what is compared.
   */
  equal?: (a: Uint8Array, b: Uint8Array) => boolean;
}

/**
 * A checker for `Authorization` header values against `token`. With a null
 * token every request passes (no `--auth-token` configured).
 */
export function createTokenCheck(
  token: string | null,
  opts: TokenCheckOptions = {},
): (authorization: string | null) => Promise<boolean> {
  if (token === null) return () => Promise.resolve(true);
  const equal = opts.equal ?? timingSafeEqual;
  const expected = digest(token);
  return (authorization) => {
    const given = bearerToken(authorization);
    // A missing or non-Bearer credential is hashed and compared too, so every
    // request costs one digest and one full comparison.
    const same = equal(digest(given ?? ""), expected);
    return Promise.resolve(given !== null && same);
  };
}
