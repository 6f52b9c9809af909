/**
 * Routing: eligibility filters, then one policy picks among the survivors.
 *
 * Order of precedence for one request (DESIGN.md §7):
 *   1. pin      — `X-VastProxy-Instance` names a routable backend: go there.
 *   2. model    — only backends serving the body's `model` are eligible.
 *   3. sticky   — `--sticky-header` value present: rendezvous hashing.
 *   4. policy   — round-robin, least-in-flight or cache-aware.
 * Policies only see `RouteTarget`s that already passed the filters; they
 * never look at SSH, health or state internals (Caddy's Selector shape).
 */
import { CacheAware } from "./cache_aware_policy.ts";
import type { RouteTarget } from "./pool.ts";
import type { RouteInfo } from "./route_info.ts";

export type { RouteInfo } from "./route_info.ts";

/** A load-balancing policy: picks one of `candidates`, or undefined when there are none. */
export interface Policy {
  /** The `--policy` name (or `rendezvous`). */
  readonly name: string;
  /** Picks a candidate; must return an element of `candidates` or undefined. */
  select(candidates: readonly RouteTarget[], route: RouteInfo): RouteTarget | undefined;
  /** True when the policy reads `RouteInfo.prefix` (the relay extracts it only then). */
  readonly usesPrefix?: boolean;
  /**
   * True when `target` cannot usefully take another request now, counting
   * `extra` requests just routed to it that its in-flight count does not
   * show yet. A policy
   * that implements it enables the admission queue: requests wait in the
   * proxy while every eligible backend is saturated (admission.ts).
   */
  saturated?(target: RouteTarget, extra?: number): boolean;
}

/** Candidates in a stable order (by instance id), so rotation does not depend on pool order. */
function byId(candidates: readonly RouteTarget[]): RouteTarget[] {
  return [...candidates].sort((a, b) => a.id - b.id);
}

/** Rotates through candidates in instance-id order. */
export class RoundRobin implements Policy {
  /** Policy name. */
  readonly name = "round-robin";
  #next = 0;

  /** Picks the next candidate in id order. */
  select(candidates: readonly RouteTarget[], _route?: RouteInfo): RouteTarget | undefined {
    if (candidates.length === 0) return undefined;
    const sorted = byId(candidates);
    // The counter wraps on the current set; when backends come and go the
    // rotation shifts once, which is harmless for balance.
    const pick = sorted[this.#next % sorted.length];
    this.#next = (this.#next + 1) % Number.MAX_SAFE_INTEGER;
    return pick;
  }
}

/**
 * Picks the candidate with the fewest requests in flight (the default:
 * LLM requests vary wildly in length, so counting them beats rotating).
 * Ties rotate, so an idle fleet still spreads load instead of piling onto
 * the lowest id.
 */
export class LeastInFlight implements Policy {
  /** Policy name. */
  readonly name = "least-inflight";
  readonly #tieBreak = new RoundRobin();

  /** Picks among the least-loaded candidates, round-robin. */
  select(candidates: readonly RouteTarget[], route: RouteInfo): RouteTarget | undefined {
    if (candidates.length === 0) return undefined;
    const least = Math.min(...candidates.map((c) => c.inFlight));
    return this.#tieBreak.select(candidates.filter((c) => c.inFlight === least), route);
  }
}

const FNV_OFFSET = 0xcbf29ce484222325n;
const FNV_PRIME = 0x100000001b3n;
const MASK64 = 0xffffffffffffffffn;
const encoder = new TextEncoder();

/**
 * A 64-bit hash of `key` and `id`: FNV-1a over the UTF-8 bytes, then the
 * murmur3 finalizer, because plain FNV-1a barely mixes the last bytes and
 * ids differing only in their last digit would then score too alike.
 * Pure arithmetic, so every process (and every proxy replica) agrees.
 */
export function rendezvousScore(key: string, id: number): bigint {
  let h = FNV_OFFSET;
  for (const byte of encoder.encode(`${key}\u0000${id}`)) {
    h ^= BigInt(byte);
    h = (h * FNV_PRIME) & MASK64;
  }
  h ^= h >> 33n;
  h = (h * 0xff51afd7ed558ccdn) & MASK64;
  h ^= h >> 33n;
  h = (h * 0xc4ceb9fe1a85ec53n) & MASK64;
  h ^= h >> 33n;
  return h;
}

/**
 * Highest-random-weight (rendezvous) hashing on `route.stickyKey`: each
 * candidate scores hash(key, id) and the highest wins. Removing a backend
 * only moves the keys it held; no shared state is needed between replicas.
 */
export class Rendezvous implements Policy {
  /** Policy name. */
  readonly name = "rendezvous";

  /** Picks the highest-scoring candidate for the sticky key ("" when absent). */
  select(candidates: readonly RouteTarget[], route: RouteInfo): RouteTarget | undefined {
    const key = route.stickyKey ?? "";
    let best: RouteTarget | undefined;
    let bestScore = -1n;
    for (const c of candidates) {
      const score = rendezvousScore(key, c.id);
      // Ties (astronomically rare) go to the lower id, for determinism.
      if (score > bestScore || (score === bestScore && best !== undefined && c.id < best.id)) {
        best = c;
        bestScore = score;
      }
    }
    return best;
  }
}

/** Names `createPolicy` accepts: the `--policy` values plus `rendezvous`. */
/** The `--policy` names (the CLI validates against these). */
export type PolicyName = "round-robin" | "least-inflight" | "cache-aware";

export type PolicyKind = PolicyName | "rendezvous";

/** The one place a policy name becomes a policy. Throws on an unknown name. */
export function createPolicy(name: PolicyKind): Policy {
  switch (name) {
    case "round-robin":
      return new RoundRobin();
    case "least-inflight":
      return new LeastInFlight();
    case "rendezvous":
      return new Rendezvous();
    case "cache-aware":
      return new CacheAware();
    default:
      throw new RangeError(
        `Cannot create policy "${String(name)}": use round-robin, least-inflight or cache-aware`,
      );
  }
}

/** Result of the eligibility filter. */
export type Eligibility =
  | { ok: true; targets: RouteTarget[] }
  | { ok: false; code: "no_healthy_backend" | "model_not_found" };

/**
 * Filters routable backends by the request's model. When no routable backend
 * lists the model: 404 if the fleet serves several models (the client most
 * likely mistyped one), but pass through to all when it serves one model or
 * none is known yet — single-model fleets often get a placeholder name such as
 * `gpt-4` from clients, and the engine decides what to do with it.
 */
export function eligibleFor(routable: readonly RouteTarget[], route: RouteInfo): Eligibility {
  if (routable.length === 0) return { ok: false, code: "no_healthy_backend" };
  if (route.model === undefined) return { ok: true, targets: [...routable] };
  const serving = routable.filter((t) => t.models.includes(route.model!));
  if (serving.length > 0) return { ok: true, targets: serving };
  const fleetModels = new Set([...(route.knownModels ?? []), ...routable.flatMap((t) => t.models)]);
  // Served, but only by backends that are down right now: a retryable 503.
  if (fleetModels.has(route.model)) return { ok: false, code: "no_healthy_backend" };
  if (fleetModels.size <= 1) return { ok: true, targets: [...routable] };
  return { ok: false, code: "model_not_found" };
}

/** The policies a router consults. */
export interface RouterPolicies {
  /** The `--policy` in effect. */
  policy: Policy;
  /** Used instead of `policy` when the request carries a sticky key. */
  sticky?: Policy;
}

const NOTHING_TRIED: ReadonlySet<number> = new Set();

/** Outcome of routing one attempt. */
export type RouteDecision =
  | { ok: true; target: RouteTarget }
  | { ok: false; code: "no_healthy_backend" | "model_not_found" };

/**
 * Routes one attempt: pin, then model eligibility, then sticky or policy.
 * `tried` holds ids of backends that already failed this request; they are
 * avoided while another eligible backend exists (a retry never goes back to
 * the same backend unless it is the only one).
 */
export function pickTarget(
  routable: readonly RouteTarget[],
  route: RouteInfo,
  policies: RouterPolicies,
  tried: ReadonlySet<number> = NOTHING_TRIED,
): RouteDecision {
  if (routable.length === 0) return { ok: false, code: "no_healthy_backend" };
  // An explicit pin wins over model eligibility: the client named the instance.
  if (route.pinnedId !== undefined && !tried.has(route.pinnedId)) {
    const pinned = routable.find((t) => t.id === route.pinnedId);
    if (pinned) return { ok: true, target: pinned };
  }
  const eligible = eligibleFor(routable, route);
  if (!eligible.ok) return eligible;
  // A first attempt has tried nothing: skip the filter (and its copy).
  const untried = tried.size === 0
    ? eligible.targets
    : eligible.targets.filter((t) => !tried.has(t.id));
  const candidates = untried.length > 0 ? untried : eligible.targets;
  const policy = route.stickyKey !== undefined && policies.sticky
    ? policies.sticky
    : policies.policy;
  const target = policy.select(candidates, route);
  return target ? { ok: true, target } : { ok: false, code: "no_healthy_backend" };
}
