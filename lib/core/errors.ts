/**
 * The one error-to-text helper: a thrown value as a short message for logs,
 * status and error bodies. Callers keep secrets out of the messages they
 * throw; this adds nothing.
 */

/** A short description of a thrown value: its message, else its name, else `String(err)`. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
