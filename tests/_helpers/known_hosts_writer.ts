/**
 * A second process for the known_hosts tests: pins `count` instance ids
 * starting at `first` with the key in `keyFile`, through its own `KnownHosts`,
 * and prints each id's verdict as one JSON object.
 *
 * It prints `ready` once loaded and waits for a line on stdin before writing,
 * so the test can release several writers at the same moment.
 *
 * Usage: deno run --allow-read --allow-write known_hosts_writer.ts PATH KEYFILE FIRST COUNT
 */
import { KnownHosts } from "../../lib/tunnel/known_hosts.ts";

if (import.meta.main) {
  const [path, keyFile, first, count] = Deno.args;
  const line = (await Deno.readTextFile(keyFile)).trim();
  const blob = Uint8Array.from(atob(line.split(" ")[1]), (c) => c.charCodeAt(0));
  const kh = new KnownHosts(path);
  console.log("ready");
  // Wait for the go line (or EOF) from the test.
  const reader = Deno.stdin.readable.getReader();
  await reader.read();
  reader.releaseLock();
  const ids = Array.from({ length: Number(count) }, (_, i) => Number(first) + i);
  // All at once, as a proxy connecting a fleet does.
  const results = await Promise.all(ids.map(async (id) => [id, (await kh.check(id, blob)).status]));
  console.log(JSON.stringify(Object.fromEntries(results)));
}
