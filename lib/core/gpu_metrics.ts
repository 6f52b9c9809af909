/**
 * GPU metrics as the tunnel layer reads them from nvidia-smi and the proxy
 * shows them. Declared in the neutral core so lib/tunnel never imports
 * lib/proxy.
 */

/** One GPU's metrics from nvidia-smi; null where the driver said `[N/A]`. */
export interface GpuMetrics {
  index: number;
  name: string;
  utilization: number | null; // percent
  memoryUsed: number | null; // MiB
  memoryTotal: number | null; // MiB
  temperature: number | null; // °C
  powerDraw: number | null; // W
}

/** Result of one nvidia-smi query: metrics, or a secret-free reason. */
export type GpuResult = { ok: true; gpus: GpuMetrics[] } | { ok: false; error: string };
