/**
 * The `--auth-token` check. Comparing the raw strings would leak, through
 * timing, how many leading characters a guess got right; comparing SHA-256
 * digests (fixed length) in constant time leaks neither content nor length.
 */

const encoder = new TextEncoder();

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** Constant-time equality of two byte arrays (false when lengths differ). */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
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

/**
 * A checker for `Authorization` header values against `token`. With a null
 * token every request passes (no `--auth-token` configured).
 */
export function createTokenCheck(
  token: string | null,
): (authorization: string | null) => Promise<boolean> {
  if (token === null) return () => Promise.resolve(true);
  const expected = sha256(token);
  return async (authorization) => {
    // Hash even a missing credential so both paths cost the same.
    const given = await sha256(bearerToken(authorization) ?? "\u0000missing");
    return bearerToken(authorization) !== null && timingSafeEqual(given, await expected);
  };
}
