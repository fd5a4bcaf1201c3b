import { z } from 'zod';
import { EFFECTS, RISKS } from '../../agents/tool.js';
import { label, LabelSchema } from '../../agents/label.js';

const Name = z.string().regex(/^[a-z][a-z0-9_-]{0,62}$/, 'must be a lowercase agent or tool name');
const Permission = z.string().regex(/^[a-z0-9_.*-]+(:[a-z0-9_.*-]+)*$/, "must look like 'area:action' (a '*' matches any part)");
const Unit = z.number().min(0).max(1);
const PartialLabel = LabelSchema;

const LimitsSchema = z
  .object({
    /** Delegations nested deeper than this are refused. */
    maxDepth: z.number().int().min(0).max(100).default(3),
    /** Delegations one model turn may start. */
    maxFanOut: z.number().int().min(1).max(100).default(4),
    /** Handoffs plus delegations in one run. */
    maxHops: z.number().int().min(1).max(10_000).default(25),
    /** Whether an agent may appear twice in a chain (A → B → A). */
    allowCycles: z.boolean().default(false),
    /** The budget a run gets when its starter asks for none, and the most it may ask for. */
    budget: z
      .object({
        tokens: z.number().int().positive().optional(),
        deadlineMs: z.number().int().positive().optional(),
      })
      .strict()
      .default({}),
  })
  .strict();

const ContentActionSchema = z.enum(['allow', 'label', 'redact', 'escalate', 'block']);
const STAGE_NAMES = ['receive', 'handoff', 'tool_call', 'tool_result', 'output'] as const;

const ContentSchema = z
  .object({
    pii: z
      .object({
        /** What to do where PII is found at `stages`; elsewhere it is only labelled. */
        action: ContentActionSchema.default('redact'),
        stages: z.array(z.enum(STAGE_NAMES)).default(['output']),
        /** Regions of phone numbers written without a country code (ISO 3166 alpha-2); inferred from the text when absent. */
        regions: z.array(z.string().length(2)).optional(),
      })
      .strict()
      .default({ action: 'redact', stages: ['output'] }),
    secrets: z
      .object({
        action: ContentActionSchema.default('block'),
        stages: z.array(z.enum(STAGE_NAMES)).default(['receive', 'handoff', 'tool_call', 'tool_result', 'output']),
        /** A gitleaks-format rules file, relative to the policy file; the built-in rules when absent. */
        rules: z.string().optional(),
      })
      .strict()
      .default({ action: 'block', stages: ['receive', 'handoff', 'tool_call', 'tool_result', 'output'] }),
    injection: z
      .object({
        /** What to do with instruction-like text in untrusted content. */
        action: ContentActionSchema.default('label'),
        minConfidence: Unit.default(0.6),
      })
      .strict()
      .default({ action: 'label', minConfidence: 0.6 }),
    /** Largest text a scanner reads (bytes); longer text is blocked rather than scanned in part. */
    maxBytes: z.number().int().positive().max(64 * 1024 * 1024).default(1024 * 1024),
  })
  .strict();

const ClearanceSchema = z
  .object({
    /** The most the final reply to a principal may carry, unless their role says otherwise. */
    reply: PartialLabel.default(label({ level: 'confidential', categories: ['pii', 'financial'] })),
    /** Per role: the reply clearance of principals holding it (the highest of their roles counts). */
    roles: z.record(z.string(), PartialLabel).default({}),
    /** Per agent: the most it may receive; overrides the agent's own declaration. */
    agents: z.record(Name, PartialLabel).default({}),
    /** Per tool: the most its arguments may carry. */
    tools: z.record(Name, PartialLabel).default({}),
    /** Tools with `effect: external` not listed under `tools`. */
    external: PartialLabel.default(label({ level: 'internal' })),
    onViolation: z.enum(['block', 'redact', 'escalate']).default('block'),
  })
  .strict();

const RiskSchema = z
  .object({
    /** Scores at or above each threshold get that treatment; below `validate` the call is allowed. */
    thresholds: z
      .object({ validate: Unit.default(0.35), escalate: Unit.default(0.6), block: Unit.default(0.9) })
      .strict()
      .default({ validate: 0.35, escalate: 0.6, block: 0.9 }),
    weights: z
      .object({
        effect: z.object({ read: Unit, write: Unit, external: Unit }).strict().default({ read: 0, write: 0.2, external: 0.3 }),
        declared: z.object({ low: Unit, medium: Unit, high: Unit, critical: Unit }).strict().default({ low: 0, medium: 0.1, high: 0.25, critical: 0.5 }),
        /** The context holds untrusted content. */
        untrusted: Unit.default(0.1),
        /** An identifying argument appears only in untrusted content, or a destination (address, account, URL) appears nowhere. */
        unprovenanced: Unit.default(0.45),
        /** Third-party content in the context reads as instructions to the agent (a likely prompt injection). */
        instructions: Unit.default(0.1),
        /** The context is confidential or restricted. */
        confidential: Unit.default(0.05),
        restricted: Unit.default(0.15),
        /** Each earlier call of the same tool in this activation. */
        repeatedCall: Unit.default(0.05),
      })
      .strict()
      .default({
        effect: { read: 0, write: 0.2, external: 0.3 },
        declared: { low: 0, medium: 0.1, high: 0.25, critical: 0.5 },
        untrusted: 0.1,
        unprovenanced: 0.45,
        instructions: 0.1,
        confidential: 0.05,
        restricted: 0.15,
        repeatedCall: 0.05,
      }),
    /** Added to the score of principals holding the role (negative for trusted roles). */
    roles: z.record(z.string(), z.number().min(-1).max(1)).default({}),
  })
  .strict();

const ToolOverrideSchema = z
  .object({
    effect: z.enum(EFFECTS).optional(),
    risk: z.enum(RISKS).optional(),
    requires: z.array(Permission).optional(),
    /** Labels of what it returns, replacing the tool's declaration (e.g. to mark a feed untrusted). */
    returns: PartialLabel.optional(),
    /** Keys of its structured results whose values its own system vouches for, replacing the tool's declaration. */
    trustedFields: z.array(z.string().min(1).max(64)).optional(),
    /**
     * Arguments that say where the effect lands (a recipient, an account, a channel, a password):
     * they must come from trusted input, beyond the addresses, accounts and URLs recognised by shape.
     */
    targets: z.array(z.string().min(1).max(64)).optional(),
  })
  .strict();

export const PolicySchema = z
  .object({
    version: z.literal(1),
    mode: z.enum(['enforce', 'monitor']).default('enforce'),
    /** Role → the permissions it grants. */
    roles: z.record(z.string().min(1), z.array(Permission)).default({}),
    limits: LimitsSchema.default(LimitsSchema.parse({})),
    /** The allowed handoff and delegation graph; without it, what the agents declare. */
    handoffs: z.record(Name, z.array(Name)).optional(),
    clearance: ClearanceSchema.default(ClearanceSchema.parse({})),
    content: ContentSchema.default(ContentSchema.parse({})),
    risk: RiskSchema.default(RiskSchema.parse({})),
    tools: z.record(Name, ToolOverrideSchema).default({}),
    /** An agent's answer to its caller is capped at this label, on the record, with the reason. */
    declassify: z.record(Name, z.object({ to: PartialLabel, reason: z.string().min(3) }).strict()).default({}),
    guards: z
      .object({
        timeoutMs: z.number().int().positive().max(60_000).default(1000),
        /** Built-in or user guards that may fail open in monitor mode. */
        failOpen: z.array(z.string()).default([]),
      })
      .strict()
      .default({ timeoutMs: 1000, failOpen: [] }),
    /** What an `escalate` decision does: a human with the approver permission decides, within the timeout. */
    approvals: z
      .object({
        /** A request nobody decides within this long is denied. */
        timeoutMs: z.number().int().positive().max(24 * 3600_000).default(3600_000),
        /** After a denial the agent gets a refusal as the tool result and goes on, or the run fails. */
        onDeny: z.enum(['continue', 'fail']).default('continue'),
        /** Whether the principal who started the run may approve its own requests. */
        selfApproval: z.boolean().default(false),
      })
      .strict()
      .default({ timeoutMs: 3600_000, onDeny: 'continue', selfApproval: false }),
    /** Undoing side effects: compensations run in reverse order when a run ends this way. */
    rollback: z
      .object({
        onFailure: z.boolean().default(false),
        onCancel: z.boolean().default(false),
      })
      .strict()
      .default({ onFailure: false, onCancel: false }),
    /** Cedar policy files, relative to this file. */
    cedar: z.array(z.string().min(1)).default([]),
  })
  .strict();

export type Policy = z.output<typeof PolicySchema>;
export type PolicyInput = z.input<typeof PolicySchema>;

/** The JSON Schema of policy files, for editors (`palisade policy schema`). */
export function policyJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(PolicySchema, { io: 'input', target: 'draft-7' }) as Record<string, unknown>;
}
