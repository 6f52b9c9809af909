/**
 * `deno task coverage`: line coverage per file from the last `deno task test`
 * run, plus per-folder totals; lib/vast, lib/tunnel, lib/http1 and lib/proxy are gated.
 * `--min N` makes it exit 1 when one of those folders is below N percent.
 */
const minArg = Deno.args.indexOf("--min");
const min = minArg >= 0 ? Number(Deno.args[minArg + 1]) : undefined;
if (min !== undefined && !(min >= 0 && min <= 100)) {
  // A typo must not turn the gate off silently.
  console.error(`--min: expected a percentage 0-100, got "${Deno.args[minArg + 1]}"`);
  Deno.exit(2);
}

const out = await new Deno.Command(Deno.execPath(), {
  args: ["coverage", "coverage", "--lcov", "--exclude=tests/|scripts/|bench/"],
  stdout: "piped",
  stderr: "inherit",
}).output();
if (!out.success) {
  console.error("no coverage data: run `deno task test` first");
  Deno.exit(1);
}

const files = new Map<string, { found: number; hit: number }>();
let current = "";
for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
  // Deno writes LH before LF; lcov allows either order, so fill whichever comes.
  if (line.startsWith("SF:")) {
    current = line.slice(3).replace(`${Deno.cwd()}/`, "");
    files.set(current, { found: 0, hit: 0 });
  } else if (line.startsWith("LF:")) files.get(current)!.found = Number(line.slice(3));
  else if (line.startsWith("LH:")) files.get(current)!.hit = Number(line.slice(3));
}

const pct = (hit: number, found: number) => (found === 0 ? 100 : (100 * hit) / found);
const rows = [...files.entries()].sort(([a], [b]) => a.localeCompare(b));
console.log("line coverage per file");
for (const [file, { found, hit }] of rows) {
  console.log(
    `  ${pct(hit, found).toFixed(1).padStart(5)}%  ${String(hit).padStart(5)}/${
      String(found).padEnd(5)
    } ${file}`,
  );
}
let low = false;
console.log("per folder");
for (
  const dir of [
    "lib/vast/",
    "lib/tunnel/",
    "lib/http1/",
    "lib/proxy/",
    "lib/app/",
    "lib/cli/",
    "lib/core/",
    "lib/ui/",
    "lib/sim/",
    "lib/",
  ]
) {
  let found = 0, hit = 0;
  for (const [file, c] of rows) {
    if (file.startsWith(dir)) {
      found += c.found;
      hit += c.hit;
    }
  }
  const p = pct(hit, found);
  const gated = ["lib/vast/", "lib/tunnel/", "lib/http1/", "lib/proxy/"].includes(dir);
  const flag = min !== undefined && gated && p < min ? `  < ${min}% (gate)` : "";
  if (flag) low = true;
  console.log(`  ${p.toFixed(1).padStart(5)}%  ${dir}${flag}`);
}
Deno.exit(low ? 1 : 0);
