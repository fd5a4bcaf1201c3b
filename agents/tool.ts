import { z } from 'zod';
import { LabelSchema, type Label } from './label.js';
import type { Principal } from './principal.js';
import { InvalidDefinitionError, describeIssues } from './errors.js';
import type { ToolSpec } from './model.js';

export const EFFECTS = ['read', 'write', 'external'] as const;
export type Effect = (typeof EFFECTS)[number];
export const RISKS = ['low', 'medium', 'high', 'critical'] as const;
export type Risk = (typeof RISKS)[number];

/** What a tool's run and compensate functions know about the call. */
export interface ToolContext {
  runId: string;
  agent: string;
  principal: Principal;
  callId: string;
  /** Stable across redeliveries of the same call: pass it to downstream APIs that deduplicate. */
  idempotencyKey: string;
  signal: AbortSignal;
}

const NAME = /^[a-zA-Z0-9_-]{1,64}$/;

const ToolMetaSchema = z
  .object({
    name: z.string().regex(NAME, 'must be 1-64 letters, digits, _ or - (the model APIs require it)'),
    description: z.string().min(1, 'must say what the tool does: the model reads it'),
    effect: z.enum(EFFECTS),
    risk: z.enum(RISKS).default('low'),
    returns: LabelSchema.default({ level: 'public', categories: [], integrity: 'trusted' }),
    trustedFields: z.array(z.string().min(1).max(64)).default([]),
    requires: z.array(z.string().min(1)).default([]),
    timeoutMs: z.number().int().positive().max(3_600_000).default(30_000),
  })
  .strict();

export interface ToolOptions<Input extends z.ZodObject, Output> {
  name: string;
  description: string;
  /** zod object schema of the arguments; the model sees its JSON Schema and every call is validated against it. */
  input: Input;
  /** `read` changes nothing, `write` changes our systems, `external` sends data out of them. */
  effect: Effect;
  risk?: Risk;
  /** The label of what the tool returns; data a third party can write is `integrity: 'untrusted'`. */
  returns?: z.input<typeof LabelSchema>;
  /**
   * For a result that is a structured record (JSON or YAML) and `untrusted`: the keys whose values the
   * tool's own system writes and vouches for (ids, senders, timestamps, amounts), as opposed to the
   * free text a third party wrote. Only these may count as trusted sources of an argument.
   */
  trustedFields?: string[];
  /** Permissions the principal must hold for the agent to call this tool. */
  requires?: string[];
  timeoutMs?: number;
  run: (args: z.output<Input>, ctx: ToolContext) => Output | Promise<Output>;
  /** Undoes the effect of one earlier call, given its arguments and result. */
  compensate?: (args: z.output<Input>, result: Awaited<Output>, ctx: ToolContext) => void | Promise<void>;
}

export interface Tool<Input extends z.ZodObject = z.ZodObject, Output = unknown> {
  readonly kind: 'tool';
  readonly name: string;
  readonly description: string;
  readonly input: Input;
  readonly effect: Effect;
  readonly risk: Risk;
  readonly returns: Label;
  readonly trustedFields: readonly string[];
  readonly requires: readonly string[];
  readonly timeoutMs: number;
  run(args: z.output<Input>, ctx: ToolContext): Output | Promise<Output>;
  compensate?(args: z.output<Input>, result: Awaited<Output>, ctx: ToolContext): void | Promise<void>;
  /** The tool as offered to a model. */
  readonly spec: ToolSpec;
}

/** Any tool, as a runtime holds them side by side (method syntax keeps specific tools assignable). */
export type AnyTool = Tool<z.ZodObject, unknown>;

export function defineTool<Input extends z.ZodObject, Output>(options: ToolOptions<Input, Output>): Tool<Input, Output> {
  const { input, run, compensate, ...meta } = options;
  const subject = `tool '${String(meta.name)}'`;
  const parsed = ToolMetaSchema.safeParse(meta);
  const problems = parsed.success ? [] : describeIssues(parsed.error);
  if (!(input instanceof z.ZodObject)) problems.push('input: must be a zod object schema (z.object({...}))');
  if (typeof run !== 'function') problems.push('run: must be a function');
  if (compensate !== undefined && typeof compensate !== 'function') problems.push('compensate: must be a function');
  if (!parsed.success || problems.length > 0) throw new InvalidDefinitionError(subject, problems);

  let parameters: Record<string, unknown>;
  try {
    parameters = z.toJSONSchema(input, { target: 'draft-7', io: 'input' }) as Record<string, unknown>;
  } catch (error) {
    throw new InvalidDefinitionError(subject, [`input: cannot be expressed as JSON Schema for the model (${(error as Error).message})`]);
  }
  delete parameters.$schema;
  const m = parsed.data;
  return Object.freeze({
    kind: 'tool' as const,
    ...m,
    returns: { ...m.returns, categories: [...new Set(m.returns.categories)].sort() },
    input,
    run,
    compensate,
    spec: { name: m.name, description: m.description, parameters },
  });
}
