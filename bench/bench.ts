/** `deno task bench`: not built yet (see the benchmark issue); exits 2 so nobody mistakes it for a result. */
console.error("vastproxy bench: the benchmark is not built yet");
Deno.exit(2);
