/**
 * Protocol upgrades (WebSocket) through the proxy. The engine side: the
 * HTTP/1.1 client sends an upgrade request on a fresh channel and, on
 * `101 Switching Protocols`, hands back the raw channel (`Upgraded`). The
 * client side: the relay answers with `upgradeResponse(...)`, a marker the
 * server recognises; it writes the 101 head and hands over the client's raw
 * socket. The relay then joins the two byte streams until either side
 * closes. Frames are never parsed: bytes pass through as they are.
 */
import type { HeaderPairs } from "./types.ts";

/** The engine's side of an upgraded exchange: its 101 head and the raw channel. */
export interface Upgraded {
  status: 101;
  statusText: string;
  headers: HeaderPairs;
  /** Next bytes from the engine, or null at its end. */
  read(): Promise<Uint8Array | null>;
  /** Sends bytes to the engine; resolves when the channel can take more. */
  write(bytes: Uint8Array): Promise<void>;
  /** Closes the channel (the engine sees its connection close). */
  close(): void;
}

/** The client's side, handed over by the server after it wrote the 101 head. */
export interface UpgradedClient {
  /** Bytes the client sent right after its upgrade request that had arrived by the switch (may be empty). */
  initial: Promise<Uint8Array>;
  /**
   * Bytes of a read of `conn` still under way at the switch (may be empty):
   * take them after `initial` and before reading `conn`, which cannot be
   * read twice at once.
   */
  inFlight: Promise<Uint8Array>;
  conn: Deno.Conn;
}

/** What the server needs to complete an upgrade. */
export interface UpgradePlan {
  statusText: string;
  /** Fields of the 101 head, byte for byte (`upgrade`, `connection`, `sec-websocket-accept`, …). */
  headers: HeaderPairs;
  /** Called once with the client's socket; the callee owns it from then on. */
  onUpgrade(client: UpgradedClient): void;
  /** Called instead when the 101 could not be sent (the client left). */
  onAbandon(): void;
}

const plans = new WeakMap<Response, UpgradePlan>();

/**
 * A response that tells the server to switch protocols with `plan`. (A
 * `Response` cannot have status 101, so the plan travels beside it.)
 */
export function upgradeResponse(plan: UpgradePlan): Response {
  const res = new Response(null, { status: 200 });
  plans.set(res, plan);
  return res;
}

/** The upgrade plan attached to `res`, if any (for the server). */
export function upgradePlanOf(res: Response): UpgradePlan | undefined {
  return plans.get(res);
}

/** True when the request asks to switch protocols (`Connection: upgrade` and `Upgrade`). */
export function wantsUpgrade(headers: Headers | ((name: string) => string | null)): boolean {
  const get = typeof headers === "function" ? headers : (name: string) => headers.get(name);
  const upgrade = get("upgrade");
  if (!upgrade) return false;
  return (get("connection") ?? "").toLowerCase().split(",").some((t) => t.trim() === "upgrade");
}
