/**
 * Host keys pinned on first use, per vast.ai instance id.
 *
 * Why per instance id and not per `host:port` like OpenSSH: vast re-rents the
 * same ip:port (and the shared proxy `sshN.vast.ai:port`) to later instances,
 * so an address says little; the instance id is what the user trusts.
 *
 * File format (one pin per line, `#` comments and blank lines ignored):
 *
 *     <instanceId> <keytype> <base64 public key blob>
 *     25078234 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI…
 *
 * The file is mode 0600, its parent directory is created (0700) when missing,
 * and every write replaces it atomically (temp file + rename) so a crash never
 * leaves half a line.
 *
 * Several proxies may share one file (two `vastproxy serve` runs, a `demo`
 * next to a real run). A pin is therefore written as lock, re-read, merge,
 * replace: an exclusive `flock` on `<file>.lock` (a separate file, because
 * the rename swaps the known_hosts inode under anyone locking that), then the
 * file is read again and the new line is appended to what is there *now*.
 * Without this, two writers each rewrote the file from their own stale read
 * and one's pins vanished; a vanished pin then let a changed host key be
 * pinned afresh. The kernel drops a `flock` when its holder dies, so a
 * crashed proxy never leaves a stale lock. The decision "no pin yet, so trust
 * this key" is taken only under the lock, after that re-read.
 */
import { createHash } from "node:crypto";
import type { Logger } from "../core/logger.ts";
import { nullLogger } from "../core/logger.ts";

/** One pinned key. */
export interface HostKeyPin {
  instanceId: number;
  /** e.g. `ssh-ed25519`. */
  keyType: string;
  /** Base64 of the SSH wire-format public key blob. */
  keyBase64: string;
}

/** Outcome of checking an offered key against the pins. */
export type HostKeyCheck =
  | { status: "match"; fingerprint: string }
  | { status: "pinned"; fingerprint: string }
  | { status: "mismatch"; expectedFingerprint: string; actualFingerprint: string };

/** `SHA256:<base64 without padding>` of a key blob, as `ssh-keygen -l` prints it. */
export function fingerprint(keyBlob: Uint8Array): string {
  const digest = createHash("sha256").update(keyBlob).digest("base64");
  return `SHA256:${digest.replace(/=+$/, "")}`;
}

/** The key type named inside an SSH wire-format key blob (`ssh-ed25519`, …). */
export function keyTypeOf(keyBlob: Uint8Array): string {
  // The blob starts with a uint32 big-endian length and the type string.
  if (keyBlob.length < 4) return "unknown";
  const len = new DataView(keyBlob.buffer, keyBlob.byteOffset, keyBlob.byteLength).getUint32(0);
  if (len === 0 || len > 64 || 4 + len > keyBlob.length) return "unknown";
  return new TextDecoder().decode(keyBlob.subarray(4, 4 + len));
}

/** Parses the known-hosts text; malformed lines are ignored (and kept on rewrite). */
export function parseKnownHosts(text: string): HostKeyPin[] {
  const pins: HostKeyPin[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const [id, keyType, keyBase64] = line.split(/\s+/);
    if (!/^\d+$/.test(id ?? "") || !keyType || !keyBase64) continue;
    pins.push({ instanceId: Number(id), keyType, keyBase64 });
  }
  return pins;
}

function decodeBase64(b64: string): Uint8Array {
  try {
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  } catch {
    return new Uint8Array();
  }
}

function encodeBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : path.slice(0, i);
}

const HEADER = "# vastproxy known hosts: <instanceId> <keytype> <base64 key>; " +
  "delete a line to accept that instance's new host key\n";

/** The pins of one known-hosts file, shared safely with other processes using it. */
export class KnownHosts {
  /** Path of the file. */
  readonly path: string;
  #logger: Logger;
  // Serialises this object's read-modify-write cycles so they queue on one
  // promise chain instead of each parking a thread in a blocking flock().
  // Reads outside a write need no lock because rename makes every write atomic.
  #lock: Promise<void> = Promise.resolve();

  /** `path` need not exist yet. */
  constructor(path: string, opts: { logger?: Logger } = {}) {
    this.path = path;
    this.#logger = opts.logger ?? nullLogger;
  }

  /** The lock file beside `path` that writers (in any process) hold while they pin. */
  get lockPath(): string {
    return `${this.path}.lock`;
  }

  /** Current pins, read from disk each time so a deleted line takes effect at once. */
  async pins(): Promise<HostKeyPin[]> {
    return parseKnownHosts(await this.#readText());
  }

  /** The pin of `instanceId` with its fingerprint, if any. */
  async lookup(instanceId: number): Promise<(HostKeyPin & { fingerprint: string }) | undefined> {
    const pin = (await this.pins()).find((p) => p.instanceId === instanceId);
    return pin && { ...pin, fingerprint: fingerprint(decodeBase64(pin.keyBase64)) };
  }

  /**
   * Checks `keyBlob` for `instanceId`: `match` when it equals the pin,
   * `pinned` when there was no pin and one was written, `mismatch` otherwise.
   * Any other key type for the same instance counts as a mismatch too, so a
   * server cannot dodge the pin by offering a different algorithm.
   */
  async check(instanceId: number, keyBlob: Uint8Array): Promise<HostKeyCheck> {
    const actual = fingerprint(keyBlob);
    // Fast path without the lock: the proxy only ever adds pins, so a pin
    // seen in the current file is final (the user deleting it is the one
    // exception, and that is the user's call). Reconnects take this path.
    const known = compare(await this.#readText(), instanceId, actual);
    if (known) return known;
    // No pin: decide trust-on-first-use only under the lock, after reading
    // the file again, so a pin another process (or the direct and proxy
    // paths racing here) wrote meanwhile is enforced rather than overwritten.
    return await this.#withLock(async () => {
      const text = await this.#readText();
      const raced = compare(text, instanceId, actual);
      if (raced) return raced;
      const line = `${instanceId} ${keyTypeOf(keyBlob)} ${encodeBase64(keyBlob)}\n`;
      const base = text === "" ? HEADER : text.endsWith("\n") ? text : text + "\n";
      await this.#writeAtomic(base + line);
      this.#logger.log("info", "pinned SSH host key", {
        instance: instanceId,
        fingerprint: actual,
        file: this.path,
      });
      return { status: "pinned", fingerprint: actual };
    });
  }

  async #readText(): Promise<string> {
    try {
      return await Deno.readTextFile(this.path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return "";
      throw err;
    }
  }

  /** Writes `text` to a 0600 temp file in the same directory, flushed, then renames it over. */
  async #writeAtomic(text: string): Promise<void> {
    const tmp = `${this.path}.tmp-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    try {
      const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
      try {
        const bytes = new TextEncoder().encode(text);
        for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
        // Data on disk before the rename, so a power cut leaves the old file
        // or the new one, never an empty one.
        await file.syncData();
      } finally {
        file.close();
      }
      // open()'s mode is masked by umask; make it exactly 0600.
      await Deno.chmod(tmp, 0o600);
      await Deno.rename(tmp, this.path);
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }

  /** Runs `fn` holding this object's queue and the cross-process lock file. */
  #withLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(async () => {
      await Deno.mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      const lockFile = await Deno.open(this.lockPath, {
        read: true,
        write: true,
        create: true,
        mode: 0o600,
      });
      try {
        // Blocks (off the event loop) until no other process holds it.
        await lockFile.lock(true);
        return await fn();
      } finally {
        // Closing the descriptor releases the flock even if unlock failed.
        await lockFile.unlock().catch(() => {});
        lockFile.close();
      }
    });
    // The chain must survive a failed step, or one I/O error would wedge it.
    this.#lock = run.then(() => {}, () => {});
    return run;
  }
}

/** The verdict for `instanceId` if `text` pins it, else undefined (no pin yet). */
function compare(text: string, instanceId: number, actual: string): HostKeyCheck | undefined {
  const pin = parseKnownHosts(text).find((p) => p.instanceId === instanceId);
  if (!pin) return undefined;
  const expected = fingerprint(decodeBase64(pin.keyBase64));
  return expected === actual
    ? { status: "match", fingerprint: actual }
    : { status: "mismatch", expectedFingerprint: expected, actualFingerprint: actual };
}
