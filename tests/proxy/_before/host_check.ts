// The implementation before the hot-path pass (issue #14), kept verbatim (only the parts under test) as the oracle of
// tests/proxy/hot_path_oracle_test.ts. Not used by the proxy.

/**
 * DNS-rebinding protection for the token-less default.
 *
 * A web page on `http://attacker.example:8080` can make its own name resolve
 * to 127.0.0.1 after it loaded; its scripts then talk to the proxy as
 * same-origin, and CORS has nothing to say. What gives it away is `Host`:
 * the browser sends the attacker's name. So without `--auth-token` the proxy
 * serves only requests whose `Host` is a name that cannot be rebound (as
 * Jupyter and Vite do): loopback names, IP literals (rebinding needs a DNS
 * name), the `--listen` host, and what `--allowed-host` adds. With a token
 * any `Host` is fine: the page does not know the token.
 */

/** Options of `createHostCheck`. */
export interface HostCheckOptions {
  /** `--listen` hostname; a name (not a wildcard address) is served under itself. */
  listenHostname: string;
  /**
   * `--allowed-host` entries: `name` (any port), `name:port`, `.example.com`
   * (the domain and its subdomains) or `*` (every host: no protection).
   */
  allowedHosts: readonly string[];
}

/** `Host` split into a lower-case name (IPv6 without brackets) and its port, or null. */
export function parseHost(value: string): { name: string; port: string | null } | null {
  const m = /^(?:\[([0-9a-f:.]+)\]|([^:\[\]\s/@?#]+))(?::(\d{1,5}))?$/i.exec(value.trim());
  if (!m) return null;
  const name = (m[1] ?? m[2]).toLowerCase().replace(/\.$/, "");
  return name ? { name, port: m[3] ?? null } : null;
}

/** True for names that always mean this machine (`*.localhost` included, RFC 6761). */
export function isLoopbackName(name: string): boolean {
  return name === "localhost" || name.endsWith(".localhost") || name === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name);
}

/** True for an IPv4 or IPv6 literal (parseHost output), which no DNS answer can rebind. */
export function isIpLiteral(name: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || name.includes(":");
}

/**
 * A predicate over `Host` header values (null when absent). A request
 * without `Host` (HTTP/1.0) passes: browsers always send one.
 */
export function createHostCheck(opts: HostCheckOptions): (host: string | null) => boolean {
  if (opts.allowedHosts.includes("*")) return () => true;
  const names = new Set<string>();
  const withPort = new Set<string>();
  const suffixes: string[] = [];
  for (const entry of opts.allowedHosts) {
    const e = entry.trim().toLowerCase();
    if (e.startsWith(".")) {
      suffixes.push(e);
      continue;
    }
    const parsed = parseHost(e);
    if (!parsed) continue; // config validated entries; ignore anything else
    if (parsed.port === null) names.add(parsed.name);
    else withPort.add(`${parsed.name}:${parsed.port}`);
  }
  const listen = parseHost(opts.listenHostname)?.name;
  if (listen && listen !== "0.0.0.0" && listen !== "::") names.add(listen);

  return (host) => {
    if (host === null) return true;
    const h = parseHost(host);
    if (!h) return false;
    if (isLoopbackName(h.name) || isIpLiteral(h.name) || names.has(h.name)) return true;
    if (h.port !== null && withPort.has(`${h.name}:${h.port}`)) return true;
    return suffixes.some((s) => h.name === s.slice(1) || h.name.endsWith(s));
  };
}
