import { z } from 'zod';

/** The human or service a run acts for. Set at the edge from verified credentials and never changed after. */
export const PrincipalSchema = z
  .object({
    id: z.string().min(1).max(256),
    roles: z.array(z.string().min(1).max(128)).max(256).default([]),
    tenant: z.string().min(1).max(256).optional(),
    attrs: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).default({}),
  })
  .strict();
export type Principal = z.output<typeof PrincipalSchema>;
export type PrincipalInput = z.input<typeof PrincipalSchema>;
