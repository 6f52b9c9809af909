import { findWrk } from "../../bench/wrk.ts";

/** True when wrk can run here; under CI=true it must (.ci/run installs it). */
export async function wrkOrSkip(): Promise<boolean> {
  if (await findWrk()) return true;
  // findWrk also says no when running it is not allowed (--allow-run).
  const why = "wrk not found on PATH, or not allowed to run";
  if (Deno.env.get("CI") === "true") throw new Error(`${why}: it is required in CI (CI=true)`);
  console.warn(`\n!!!!!!!! ${why}: SKIPPING the real-wrk tests !!!!!!!!\n`);
  return false;
}
