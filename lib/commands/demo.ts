/** `vastproxy demo` (not built yet). */
import type { RawFlags } from "../config.ts";
import type { CliIo } from "../cli_io.ts";

/** Placeholder until the command lands: says so and exits 2. */
export function demoCommand(_flags: RawFlags, ..._rest: unknown[]): Promise<number> {
  const io = _rest.at(-1) as CliIo;
  io.err("vastproxy: 'demo' is not built yet\n");
  return Promise.resolve(2);
}
