/**
 * The process's open-file limit (RLIMIT_NOFILE). Every client connection
 * costs a descriptor, and the common soft limit of 1,024 is far below what a
 * proxy with keep-alive clients needs, while the hard limit is usually much
 * higher. So at start the soft limit is raised to the hard one where the OS
 * allows (Linux, with `--allow-ffi`), and the limit in force is shown in
 * /vastproxy/status and used to keep `--max-connections` below it. Deno has
 * no setrlimit, hence libc through FFI. Everything here is best effort:
 * without FFI permission or on another OS the limit is only read (from
 * /proc on Linux) or left unknown, never an error.
 */

/** The open-file limit as far as it could be learned. */
export interface OpenFilesLimit {
  /** Soft limit in force, or null when unknown. */
  soft: number | null;
  /** Hard limit, or null when unknown. */
  hard: number | null;
  /** The soft limit before it was raised, or null when it was not raised. */
  raisedFrom: number | null;
}

/** RLIMIT_NOFILE on Linux (x86_64 and aarch64). */
const RLIMIT_NOFILE = 7;
/** A soft limit above this buys nothing and some kernels refuse it (nr_open). */
const MAX_SENSIBLE = 1 << 20;

/** True when permission `desc` is already granted (never prompts). */
function granted(desc: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
}

/** The limit from /proc/self/limits (Linux, read permission), or unknowns. */
export function readOpenFilesLimit(): OpenFilesLimit {
  const none = { soft: null, hard: null, raisedFrom: null };
  if (Deno.build.os !== "linux" || !granted({ name: "read", path: "/proc/self/limits" })) {
    return none;
  }
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
    if (!m) return none;
    const num = (s: string) => (s === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(s));
    return { soft: num(m[1]), hard: num(m[2]), raisedFrom: null };
  } catch {
    return none;
  }
}

/**
 * Raises the soft open-file limit to the hard limit when it can, and returns
 * the limit in force. Never throws.
 */
export function raiseOpenFilesLimit(): OpenFilesLimit {
  const before = readOpenFilesLimit();
  if (Deno.build.os !== "linux" || !granted({ name: "ffi" })) return before;
  let lib:
    | Deno.DynamicLibrary<{
      getrlimit: { parameters: ["i32", "buffer"]; result: "i32" };
      setrlimit: { parameters: ["i32", "buffer"]; result: "i32" };
    }>
    | null = null;
  try {
    lib = Deno.dlopen("libc.so.6", {
      getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
      setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
    });
    // struct rlimit { rlim_t rlim_cur, rlim_max } with a 64-bit rlim_t.
    const rl = new BigUint64Array(2);
    if (lib.symbols.getrlimit(RLIMIT_NOFILE, rl) !== 0) return before;
    const soft = rl[0];
    const target = rl[1] < BigInt(MAX_SENSIBLE) ? rl[1] : BigInt(MAX_SENSIBLE);
    if (target <= soft) return { soft: Number(soft), hard: toNumber(rl[1]), raisedFrom: null };
    rl[0] = target;
    if (lib.symbols.setrlimit(RLIMIT_NOFILE, rl) !== 0) return before;
    return { soft: Number(target), hard: toNumber(rl[1]), raisedFrom: Number(soft) };
  } catch {
    return before; // no glibc (musl, a container without it): keep what we have
  } finally {
    lib?.close();
  }
}

function toNumber(v: bigint): number {
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** Descriptors kept free for SSH connections, files and the like. */
export const FD_RESERVE = 128;

/**
 * The connection cap that fits `limit`: `wanted`, or less when the soft
 * limit leaves too little room after `FD_RESERVE` (at least 16).
 */
export function connectionCapFor(wanted: number, limit: OpenFilesLimit): number {
  if (limit.soft === null) return wanted;
  return Math.min(wanted, Math.max(16, limit.soft - FD_RESERVE));
}
