/** The vastproxy version; tests check it matches deno.json. */
export const VERSION = "0.1.0";
