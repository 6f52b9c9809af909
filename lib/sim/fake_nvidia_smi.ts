/**
 * A stand-in for `nvidia-smi --query-gpu=index,name,utilization.gpu,
 * memory.used,memory.total,temperature.gpu,power.draw
 * --format=csv,noheader,nounits` on simulated instances. Numbers wander
 * slowly (a bounded random walk scaled by elapsed time) so the demo's bars
 * move like a real busy GPU instead of jumping around.
 */

/** Options of `makeFakeNvidiaSmi`. */
export interface FakeNvidiaSmiOptions {
  /** Number of GPUs (default 1). */
  gpus?: number;
  /** Marketing name as the driver reports it (default `NVIDIA H100 80GB HBM3`). */
  name?: string;
  /** MiB per GPU (default 81559, an H100 80GB). */
  memTotal?: number;
  /** Board power limit in W, the ceiling of the power walk (default from the name). */
  powerLimit?: number;
  /**
   * Report power as `[N/A]`. Default: consumer GeForce/RTX cards do so half
   * the time (decided once, like a real card), datacenter cards never.
   */
  powerNa?: boolean;
  /** Random source in [0, 1) (default `Math.random`; inject for exact tests). */
  random?: () => number;
  /** Time source in ms (default `Date.now`). */
  now?: () => number;
}

interface GpuState {
  util: number;
  mem: number;
  temp: number;
  power: number;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, v));
}

function isConsumer(name: string): boolean {
  // GeForce RTX 20xx–50xx; workstation/datacenter names (RTX A6000, H100) differ.
  return /GeForce|\bRTX\s*[2-5]0\d0\b/i.test(name);
}

/**
 * Returns a function producing the current CSV output, one line per GPU, e.g.
 * `0, NVIDIA H100 80GB HBM3, 37, 41234, 81559, 54, 312.45`.
 */
export function makeFakeNvidiaSmi(opts: FakeNvidiaSmiOptions = {}): () => string {
  const random = opts.random ?? Math.random;
  const now = opts.now ?? Date.now;
  const count = Math.max(1, opts.gpus ?? 1);
  const name = opts.name ?? "NVIDIA H100 80GB HBM3";
  const memTotal = opts.memTotal ?? 81559;
  const limit = opts.powerLimit ?? (isConsumer(name) ? 450 : 700);
  const powerNa = opts.powerNa ?? (isConsumer(name) && random() < 0.5);
  // A loaded LLM server holds most of the memory for weights and KV cache.
  const gpus: GpuState[] = Array.from({ length: count }, () => ({
    util: 20 + random() * 60,
    mem: memTotal * (0.5 + random() * 0.4),
    temp: 40 + random() * 20,
    power: limit * (0.3 + random() * 0.4),
  }));
  let last = now();

  return () => {
    const t = now();
    // Steps grow with the square root of elapsed time (a random walk), capped
    // so a long pause does not teleport the numbers.
    const scale = Math.min(3, Math.sqrt(Math.max(0, t - last) / 5000));
    last = t;
    const step = (size: number) => (random() * 2 - 1) * size * scale;
    const lines = gpus.map((g, i) => {
      g.util = clamp(g.util + step(12), 0, 100);
      g.mem = clamp(g.mem + step(memTotal * 0.01), memTotal * 0.05, memTotal * 0.98);
      // Temperature and power follow utilisation, with a little noise.
      g.temp = clamp(g.temp + (35 + g.util * 0.45 - g.temp) * 0.2 * scale + step(1), 25, 90);
      g.power = clamp(limit * (0.15 + 0.8 * g.util / 100) + step(limit * 0.03), 20, limit);
      const power = powerNa ? "[N/A]" : g.power.toFixed(2);
      return [
        i,
        name,
        Math.round(g.util),
        Math.round(g.mem),
        memTotal,
        Math.round(g.temp),
        power,
      ].join(", ");
    });
    return lines.join("\n") + "\n";
  };
}
