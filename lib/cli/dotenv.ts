/**
 * A small dotenv reader. It only feeds configuration lookups: values from a
 * `.env` file rank below real environment variables and never leak into
 * `Deno.env`, so child processes don't inherit secrets by accident.
 */

/**
 * Parses `KEY=value` lines. Supports `export KEY=…`, comments, single quotes
 * (literal), double quotes (with \n, \", \\ escapes) and inline ` #` comments
 * after unquoted values. Malformed lines are reported by line number, never
 * with their content (they may hold secrets).
 */
export function parseDotenv(text: string): { values: Record<string, string>; badLines: number[] } {
  const values: Record<string, string> = {};
  const badLines: number[] = [];
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) {
      badLines.push(i + 1);
      return;
    }
    const [, key, rest] = m;
    let value: string;
    if (rest.startsWith("'")) {
      const end = rest.indexOf("'", 1);
      if (end < 0) return void badLines.push(i + 1);
      value = rest.slice(1, end);
    } else if (rest.startsWith('"')) {
      const dq = /^"((?:[^"\\]|\\.)*)"/.exec(rest);
      if (!dq) return void badLines.push(i + 1);
      value = dq[1].replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c === "t" ? "\t" : c));
    } else {
      value = rest.replace(/\s+#.*$/, "").trim();
    }
    values[key] = value;
  });
  return { values, badLines };
}
