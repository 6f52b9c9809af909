/**
 * Validation of vast.ai instance records. Strict only on the fields the proxy
 * needs, lenient on everything else (vast adds fields freely), so one odd
 * record is skipped with a log line instead of failing the whole listing.
 */
import { z } from "zod";
import type { Logger } from "../core/logger.ts";

/** A port binding as docker reports it; HostPort is a string, tolerate a number. */
const portBinding = z.looseObject({
  HostIp: z.string().nullish(),
  HostPort: z.union([z.string(), z.number()]),
});

/**
 * The fields vastproxy reads. Everything is nullish unless the proxy cannot
 * work without it: the notes say vast sends null for many fields while an
 * instance is provisioning, and a missing optional field only degrades the
 * display. Display-only fields (label, image, GPU name and count, price, start
 * date) fall back to null when vast sends an odd type: skipping the record
 * would make a healthy backend look removed over a cosmetic field.
 * `extra_env` is checked for its outer shape only; its entries are
 * normalised (and odd ones ignored) by lib/vast/instance.ts.
 */
export const instanceRecordSchema = z
  .looseObject({
    id: z.number().int().positive(),
    actual_status: z.string().nullish(),
    label: z.string().nullish().catch(null),
    public_ipaddr: z.string().nullish(),
    ports: z.record(z.string(), z.array(portBinding).nullable()).nullish(),
    ssh_host: z.string().nullish(),
    ssh_port: z.number().int().min(1).max(65535).nullish(),
    image_runtype: z.string().nullish(),
    image_uuid: z.string().nullish().catch(null),
    extra_env: z
      .union([z.array(z.array(z.unknown())), z.record(z.string(), z.unknown())])
      .nullish(),
    onstart: z.string().nullish(),
    jupyter_token: z.string().nullish(),
    gpu_name: z.string().nullish().catch(null),
    num_gpus: z.number().int().min(0).nullish().catch(null),
    dph_total: z.number().nullish().catch(null),
    start_date: z.number().nullish().catch(null),
  })
  .superRefine((rec, ctx) => {
    // A running instance is proxied, so it must be reachable through vast's
    // SSH gateway; without it the record is useless and is skipped.
    if (rec.actual_status !== "running") return;
    if (!rec.ssh_host?.trim()) {
      ctx.addIssue({
        code: "custom",
        path: ["ssh_host"],
        message: "required on a running instance",
      });
    }
    if (rec.ssh_port == null) {
      ctx.addIssue({
        code: "custom",
        path: ["ssh_port"],
        message: "required on a running instance",
      });
    }
  });

/** A validated instance record (unknown keys kept). */
export type VastInstanceRecord = z.infer<typeof instanceRecordSchema>;

/** One record that failed validation. */
export interface SkippedRecord {
  /** Instance id, or `#index` in the listing when the id itself is unusable. */
  ref: string;
  /** Dotted path of the first offending field, e.g. `ports.22/tcp.0.HostPort`. */
  field: string;
  /** zod's description of the problem (never contains values). */
  problem: string;
}

/** Result of validating one listing. */
export interface ParsedInstances {
  records: VastInstanceRecord[];
  skipped: SkippedRecord[];
}

/**
 * Validates a listing's `instances`. `null`/`undefined` (vast sends
 * `instances: null` for an empty page) is an empty list. Each bad record is
 * skipped with one warn line naming the instance and the field; the rest are
 * kept.
 */
export function parseInstances(
  raw: readonly unknown[] | null | undefined,
  logger: Logger,
): ParsedInstances {
  const records: VastInstanceRecord[] = [];
  const skipped: SkippedRecord[] = [];
  (raw ?? []).forEach((item, index) => {
    const result = instanceRecordSchema.safeParse(item);
    if (result.success) {
      records.push(result.data);
      return;
    }
    const issue = result.error.issues[0];
    const field = issue.path.length > 0 ? issue.path.map(String).join(".") : "(record)";
    const rawId = typeof item === "object" && item !== null
      ? (item as Record<string, unknown>).id
      : undefined;
    const ref = typeof rawId === "number" || typeof rawId === "string"
      ? String(rawId)
      : `#${index}`;
    skipped.push({ ref, field, problem: issue.message });
    logger.log(
      "warn",
      `skipping vast.ai instance ${ref}: field ${field} is invalid (${issue.message})`,
      {
        instance: ref,
        field,
      },
    );
  });
  return { records, skipped };
}
