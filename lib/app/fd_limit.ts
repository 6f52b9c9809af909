/**
 * The process's open-file limit (RLIMIT_NOFILE). Every client connection
 * costs a descriptor, and the common soft limit of 1,024 is far below what a
 * proxy with keep-alive clients needs. Deno itself raises the soft limit to
 * the hard one when it starts (checked on Linux with `ulimit -Sn 256` under
 * a hard 8192: the process runs with 8192), so no FFI is needed for that;
 * here the limit in force is read (from /proc on Linux), shown in
 * /vastproxy/status and used to keep `--max-connections` below it. Best
 * effort: on another OS, or without permission, it is unknown, never an
 * error. Deno 2.9 lets a program read /proc/self/* only under --allow-all,
 * which vastproxy does not ask for; then the listener's accept back-off on
 * EMFILE is what protects it.
 */

/** The open-file limit as far as it could be learned. */
export interface OpenFilesLimit {
  /** Soft limit in force, or null when unknown. */
  soft: number | null;
  /** Hard limit, or null when unknown. */
  hard: number | null;
}

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
  const none = { soft: null, hard: null };
  if (Deno.build.os !== "linux" || !granted({ name: "read", path: "/proc/self/limits" })) {
    return none;
  }
  try {
    const text = Deno.readTextFileSync("/proc/self/limits");
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
    if (!m) return none;
    const num = (s: string) => (s === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(s));
    return { soft: num(m[1]), hard: num(m[2]) };
  } catch {
    return none;
  }
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
