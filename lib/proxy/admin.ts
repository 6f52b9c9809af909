/**
 * The proxy's own endpoints under `/vastproxy/`: status (JSON), healthz (for
 * load balancers and `vastproxy wait`) and metrics (Prometheus). The relay
 * authenticates before calling this, so `--auth-token` covers these too.
 */
import { errorResponse } from "./errors.ts";
import {
  type HistogramInput,
  type LlmInput,
  METRICS_CONTENT_TYPE,
  type QueueMetrics,
  renderMetrics,
} from "./metrics.ts";
import type { StatusSnapshot } from "./snapshot.ts";

/** What the admin endpoints read. Both are called per request, so they must be cheap. */
export interface AdminDeps {
  /** A fresh status snapshot (contains no secrets by construction). */
  status: () => StatusSnapshot;
  /** Latency histograms per instance id, for /vastproxy/metrics (default: none). */
  histograms?: () => ReadonlyMap<number, HistogramInput>;
  /** TTFT, ITL and token counts per instance and model, for /vastproxy/metrics (default: none). */
  llm?: () => LlmInput;
  /** The admission queue's numbers, when the policy holds requests (default: none). */
  queue?: () => QueueMetrics;
}

const NO_STORE = { "cache-control": "no-store" };

/**
 * Builds the `/vastproxy/*` handler. The path it sees has had its dot
 * segments resolved by URL parsing, so `/vastproxy/../v1/models` never
 * reaches it (the relay routes that as `/v1/models`).
 */
export function createAdminHandler(deps: AdminDeps): (req: Request) => Response {
  return (req) => {
    const path = new URL(req.url).pathname.replace(/\/+$/, "");
    const known = path === "/vastproxy/status" || path === "/vastproxy/healthz" ||
      path === "/vastproxy/metrics";
    if (!known) {
      return errorResponse("not_found", { message: `No such endpoint: ${path || "/"}` });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return errorResponse("method_not_allowed", { headers: { allow: "GET, HEAD" } });
    }
    const status = deps.status();
    const head = req.method === "HEAD";
    switch (path) {
      case "/vastproxy/status":
        return json(status, 200, head);
      case "/vastproxy/healthz": {
        const ok = status.counts.healthy > 0;
        return json(
          {
            status: ok ? "ok" : "unavailable",
            healthy: status.counts.healthy,
            total: status.counts.total,
          },
          ok ? 200 : 503,
          head,
        );
      }
      default: {
        const text = renderMetrics(
          status,
          deps.histograms?.() ?? new Map(),
          deps.llm?.() ?? new Map(),
          deps.queue?.(),
        );
        return new Response(head ? null : text, {
          headers: { "content-type": METRICS_CONTENT_TYPE, ...NO_STORE },
        });
      }
    }
  };
}

function json(value: unknown, status: number, head: boolean): Response {
  return new Response(head ? null : JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json", ...NO_STORE },
  });
}
