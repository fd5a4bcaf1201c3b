import { z } from 'zod';
import { InvalidDefinitionError, describeIssues } from '../agents/errors.js';
import { STAGES, type Decision, type Stage } from './decision.js';
import type { GuardEvent } from './guard-event.js';

export interface GuardOptions {
  name: string;
  /** The stages this guard looks at; it is not asked about others. */
  stages: readonly Stage[];
  /** Longest an asynchronous check may take before it counts as `block`. */
  timeoutMs?: number;
  check(event: GuardEvent): Decision | Promise<Decision>;
}

export interface Guard {
  readonly kind: 'guard';
  readonly name: string;
  readonly stages: ReadonlySet<Stage>;
  readonly timeoutMs: number | undefined;
  check(event: GuardEvent): Decision | Promise<Decision>;
}

const GuardMetaSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be lowercase letters, digits, _ . or -'),
    stages: z.array(z.enum(STAGES)).min(1, 'must name at least one stage'),
    timeoutMs: z.number().int().positive().max(60_000).optional(),
  })
  .strict();

/** A user-defined guard: a named check over some stages that returns a decision. */
export function defineGuard(options: GuardOptions): Guard {
  const { check, ...meta } = options;
  const parsed = GuardMetaSchema.safeParse(meta);
  const problems = parsed.success ? [] : describeIssues(parsed.error);
  if (typeof check !== 'function') problems.push('check: must be a function');
  if (!parsed.success || problems.length > 0) throw new InvalidDefinitionError(`guard '${String(meta.name)}'`, problems);
  return Object.freeze({ kind: 'guard' as const, name: parsed.data.name, stages: new Set(parsed.data.stages), timeoutMs: parsed.data.timeoutMs, check });
}
