/**
 * `deno run --allow-read bench/profile_summary.ts [--top N] FILE.cpuprofile…`
 *
 * Summarises a V8 CPU profile (Deno's `--cpu-prof`, e.g. from
 * `deno task bench --profile`): self time of the busy main thread
 * aggregated by file (top N, default 20), by category, and the top
 * functions. `(idle)` is left out, so shares are of the busy time.
 *
 * Categories follow the stack: a sample belongs to the innermost frame that
 * is vastproxy's own code or an npm package, so Deno's `ext:`/`node:`
 * internals and native functions (a socket `writev`, a cipher) count for
 * whoever called them; samples with no such frame count as Deno.serve/ext
 * (or node compat) work of the runtime itself.
 */

/** The parts of a `.cpuprofile` this reads. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Row {
  key: string;
  us: number;
  share: number;
}

export interface Summary {
  totalUs: number;
  idleUs: number;
  busyUs: number;
  byFile: Row[];
  byCategory: Row[];
  byFunction: Row[];
}

const META = new Set(["(root)", "(program)", "(idle)", "(garbage collector)"]);

/** A short file name: `npm:ssh2/lib/…`, `lib/http1/client.ts`, `ext:deno_http/00_serve.ts`. */
export function shortFile(url: string): string {
  if (!url) return "";
  const npm = /\/registry\.npmjs\.org\/((?:@[^/]+\/)?[^/]+)\/[^/]+\/(.*)$/.exec(url) ??
    /\/node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(url);
  if (npm) return `npm:${npm[1]}/${npm[2]}`;
  const own = /\/((?:lib|bench|scripts|tests)\/.*|main\.ts)$/.exec(url);
  if (own && url.startsWith("file:")) return own[1];
  return url.replace(/^file:\/\//, "");
}

/** ssh2 and the packages it pulls in for crypto and key parsing. */
const SSH2_PACKAGES = /^npm:(ssh2|bcrypt-pbkdf|asn1|safer-buffer|tweetnacl|cpu-features)\//;

/** The category a frame's file owns, or null for runtime internals (transparent). */
export function ownerCategory(file: string): string | null {
  if (SSH2_PACKAGES.test(file) || file.startsWith("lib/tunnel/")) return "ssh2 (+ lib/tunnel)";
  if (file.startsWith("lib/http1/")) return "http1 client (lib/http1)";
  if (file.startsWith("lib/proxy/")) return "relay (lib/proxy)";
  if (file.startsWith("lib/ui/")) return "logging (lib/ui)";
  if (/^(lib|bench|scripts|tests)\/|^main\.ts$/.test(file)) return "other vastproxy code";
  if (file.startsWith("npm:")) return "other npm";
  if (file.startsWith("ext:") || file.startsWith("node:")) return null;
  return "other";
}

/** Category for a stack with no owner frame, from the innermost runtime file. */
function runtimeCategory(file: string): string {
  if (file.startsWith("ext:deno_node") || file.startsWith("node:")) {
    return "node compat (no caller above)";
  }
  if (file.startsWith("ext:")) return "Deno.serve/ext";
  return "other";
}

function rows(m: Map<string, number>, busy: number, top: number): Row[] {
  return [...m.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => ({ key, us, share: busy > 0 ? us / busy : 0 }));
}

function add(m: Map<string, number>, key: string, us: number): void {
  m.set(key, (m.get(key) ?? 0) + us);
}

export function summarize(p: CpuProfile, top = 20): Summary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  // Self time per node: each sample lasts until the next one (the last one until endTime).
  const self = new Map<number, number>();
  let t = p.startTime;
  const stamps = p.timeDeltas.map((d) => (t += d));
  for (let i = 0; i < p.samples.length; i++) {
    const next = i + 1 < stamps.length ? stamps[i + 1] : p.endTime;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + Math.max(0, next - stamps[i]));
  }

  const byFile = new Map<string, number>();
  const byCategory = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let idle = 0;
  let total = 0;
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node || us === 0) continue;
    total += us;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === "(idle)") {
      idle += us;
      continue;
    }
    if (functionName === "(garbage collector)") {
      for (const m of [byFile, byCategory, byFunction]) add(m, "(garbage collector)", us);
      continue;
    }
    if (functionName === "(program)") {
      for (const m of [byFile, byCategory, byFunction]) add(m, "(program)", us);
      continue;
    }
    // Walk up: the file is the innermost frame with a URL (natives have none);
    // the category is the innermost frame that some owner claims.
    let file = "";
    let firstRuntime = "";
    let category: string | null = null;
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = shortFile(byId.get(cur)!.callFrame.url);
      if (!f) continue;
      if (!file) file = f;
      category = ownerCategory(f);
      if (category) break;
      if (!firstRuntime) firstRuntime = f;
    }
    const native = !url && !META.has(functionName);
    add(byFile, file ? (native ? `${file} → native` : file) : "(native, no caller)", us);
    add(byCategory, category ?? runtimeCategory(firstRuntime), us);
    add(
      byFunction,
      `${functionName || "(anonymous)"} ${
        url ? `${shortFile(url)}:${lineNumber + 1}` : "(native)"
      }`,
      us,
    );
  }
  const busy = total - idle;
  return {
    totalUs: total,
    idleUs: idle,
    busyUs: busy,
    byFile: rows(byFile, busy, top),
    byCategory: rows(byCategory, busy, Infinity),
    byFunction: rows(byFunction, busy, 15),
  };
}

function print(title: string, s: Summary): void {
  const ms = (us: number) => (us / 1000).toFixed(1);
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`.padStart(6);
  const block = (head: string, rs: Row[]) => {
    console.log(`\n${head}`);
    for (const r of rs) console.log(`  ${pct(r.share)} ${ms(r.us).padStart(9)} ms  ${r.key}`);
  };
  console.log(
    `${title}: ${ms(s.totalUs)} ms sampled, ${ms(s.idleUs)} ms idle, ` +
      `${ms(s.busyUs)} ms busy (shares below are of busy time)`,
  );
  block("by category (innermost own/npm frame on the stack):", s.byCategory);
  block(`by file (self time; natives billed to their caller):`, s.byFile);
  block("top functions (self time):", s.byFunction);
}

if (import.meta.main) {
  const args = [...Deno.args];
  const ti = args.indexOf("--top");
  const top = ti >= 0 ? Number(args.splice(ti, 2)[1]) : 20;
  if (args.length === 0) {
    console.error(
      "usage: deno run --allow-read bench/profile_summary.ts [--top N] FILE.cpuprofile…",
    );
    Deno.exit(2);
  }
  for (const [i, path] of args.entries()) {
    if (i > 0) console.log("\n" + "-".repeat(72) + "\n");
    print(path, summarize(JSON.parse(await Deno.readTextFile(path)) as CpuProfile, top));
  }
}
