/** The API's request and response shapes: validation at run time and the OpenAPI document come from these. */
import { z } from 'zod';
import { AUDIT_ACTIONS } from '../audit/audit-record.js';
import { LabelSchema } from '../../agents/label.js';
import { ORIGINS } from '../approvals/approval.js';

export const PrincipalOut = z
  .object({
    id: z.string(),
    roles: z.array(z.string()),
    tenant: z.string().optional(),
    attrs: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
  })
  .meta({ id: 'Principal' });

export const ConfigOut = z.object({ jaegerUrl: z.string().optional() }).meta({ id: 'Config' });

export const HealthOut = z.object({ ok: z.boolean(), redis: z.enum(['up', 'down']) }).meta({ id: 'Health' });

export const RunIdParams = z.object({ id: z.string().uuid() }).strict();
export const ApprovalIdParams = z.object({ id: z.string().min(1).max(64) }).strict();

/** `input` is capped below the body limit, so an oversized request is refused with its field named. */
export const startRunBody = (maxInputChars: number) =>
  z
    .object({
      agent: z.string().min(1).max(64).describe('the agent that receives the input'),
      input: z.string().min(1).max(maxInputChars).describe('the request, as the user wrote it'),
    })
    .strict()
    .meta({ id: 'StartRun' });

export const RunStatusSchema = z.enum(['running', 'completed', 'failed', 'cancelled']);

export const StartedOut = z.object({ runId: z.string(), status: RunStatusSchema }).meta({ id: 'RunStarted' });

const Usage = z.object({ inputTokens: z.number(), outputTokens: z.number() });

export const RunRecordOut = z
  .object({
    runId: z.string(),
    agent: z.string().describe('the agent the run started at'),
    status: RunStatusSchema,
    principal: PrincipalOut,
    createdAt: z.number(),
    updatedAt: z.number(),
    output: z.string().optional(),
    error: z.string().optional(),
    /** Set when details of the error, or the output, quote content above the caller's clearance and were left out. */
    withheld: z.object({ code: z.literal('above_clearance'), reason: z.string() }).optional(),
    usage: Usage,
  })
  .meta({ id: 'Run' });

/**
 * Where a listing goes on: the `next` of the previous page. A sequence number on a deployment of one
 * cell; with several cells, one per cell's audit log, joined by '.' (see AuditLogs.page).
 */
const ListCursorQuery = z.union([z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER), z.string().regex(/^\d{0,16}(\.\d{0,16})+$/).max(4000)]);
const ListCursorOut = z.union([z.number(), z.string()]);

export const ListRunsQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(20),
    before: ListCursorQuery.optional(),
  })
  .strict();

export const RunListOut = z
  .object({
    runs: z.array(RunRecordOut).describe('newest first'),
    next: ListCursorOut.optional().describe('pass as `before` for older runs; absent when no older ones were found'),
  })
  .meta({ id: 'RunList' });

const Activation = z.object({
  at: z.number(),
  agent: z.string(),
  kind: z.enum(['start', 'handoff', 'delegate']),
  /** The agent that handed off or delegated to this one. */
  from: z.string().optional(),
  resumed: z.boolean(),
});

const Hop = z.object({
  type: z.enum(['handoff', 'delegation']),
  from: z.string(),
  to: z.string(),
  at: z.number(),
  /** A delegation's outcome, once answered. */
  status: z.string().optional(),
});

const GuardDecisionOut = z.object({
  at: z.number(),
  agent: z.string().optional(),
  stage: z.string(),
  subject: z.string().optional(),
  verdict: z.string(),
  reasons: z.array(z.string()),
  /** Set when further reasons quote content above the caller's clearance and were left out. */
  withheld: z.object({ code: z.literal('above_clearance'), reason: z.string() }).optional(),
  risk: z.number(),
  monitored: z.string().optional(),
});

const LabelStep = z.object({
  at: z.number(),
  agent: z.string().optional(),
  cause: z.enum(['tool.result', 'label.declassified']),
  /** The tool, or the agent whose answer was declassified. */
  source: z.string(),
  /** What the step brought: a tool result's label, or the label a declassified answer was capped to. */
  label: LabelSchema,
  /** The most sensitive the run's context has been so far. */
  context: LabelSchema,
});

export const RunDetailOut = RunRecordOut.extend({
  /** The user's request, from the run's first event. */
  input: z.string().optional(),
  /** The run's context label now: the join of every tool result so far. */
  label: LabelSchema,
  /** Agent activations in order: who handed off or delegated to whom. */
  chain: z.array(Activation),
  hops: z.array(Hop),
  decisions: z.array(GuardDecisionOut),
  labels: z.array(LabelStep),
  approvals: z.array(z.object({ approvalId: z.string(), subject: z.string(), status: z.string(), by: z.string().optional(), at: z.number() })),
  /** The run's trace id, when the run's record or events carry one. */
  traceId: z.string().optional(),
  /** Where to see the run's spans in Jaeger (a search by palisade.run.id), when a Jaeger URL is configured. */
  traceUrl: z.string().optional(),
  /** Set for an approver who is not the run's principal nor an operator: input, output and error are left out. */
  redacted: z.boolean().optional(),
}).meta({ id: 'RunDetail' });

export const RollbackBody = z.object({ reason: z.string().min(1).max(2000).optional() }).strict().meta({ id: 'RollbackOrder' });
export const CancelBody = z.object({ reason: z.string().min(1).max(2000).optional() }).strict().meta({ id: 'CancelOrder' });

export const CancelledOut = z.object({ runId: z.string(), cancelled: z.boolean(), status: RunStatusSchema }).meta({ id: 'Cancelled' });
export const RollbackOut = z.object({ runId: z.string(), rollbackId: z.string(), actions: z.number() }).meta({ id: 'RollbackStarted' });

export const ApprovalOut = z
  .object({
    request: z.object({
      id: z.string(),
      runId: z.string(),
      agent: z.string(),
      kind: z.enum(['tool', 'handoff', 'delegate']),
      subject: z.string(),
      arguments: z.string().describe('identifiers partly masked with a fingerprint (GB29…6819 #a3f90c), amounts whole, secrets withheld; empty when the request failed verification or is above your clearance (see withheld)'),
      sources: z
        .array(z.object({ path: z.string(), value: z.string(), origin: z.enum(ORIGINS), via: z.string().optional() }))
        .describe(
          'for a tool call, where each identifying value of its arguments came from: user (the request), tool (a trusted tool), agent (a delegate), third_party (content anyone could write), instructions (such content reading as orders), model (no source)',
        ),
      reasons: z.array(z.string()).describe("our guards' own reasons, then what other guards said when you are cleared for it"),
      risk: z.number(),
      label: LabelSchema,
      chain: z.array(z.string()),
      principal: PrincipalOut,
      permission: z.string(),
      selfApproval: z.boolean(),
      requestedAt: z.number(),
      expiresAt: z.number(),
    }),
    decision: z
      .object({ status: z.enum(['approved', 'denied', 'expired']), by: z.object({ id: z.string() }).optional().describe('who decided (their id only)'), at: z.number(), note: z.string().optional() })
      .optional(),
    /** Whether the caller may decide it now (never when its content is withheld from them). */
    mayDecide: z.boolean(),
    withheld: z
      .object({ code: z.literal('above_clearance'), reason: z.string() })
      .optional()
      .describe("set when the request's arguments, sources, quoted reasons or note are above your clearance: they are left out"),
    verification: z
      .object({ status: z.enum(['verified', 'unauthenticated', 'refused']), problem: z.string().optional() })
      .describe('verified: written by its agent as shown; refused: not (its content is withheld and nobody may decide it); unauthenticated: the server holds no keys (development only)'),
  })
  .meta({ id: 'Approval' });

export const ApprovalListOut = z.array(ApprovalOut).describe('pending requests the caller may decide, oldest first');

export const DecideBody = z.object({ reason: z.string().max(2000).optional() }).strict().meta({ id: 'Decision' });
export const DecisionOut = z
  .object({ approvalId: z.string(), status: z.enum(['approved', 'denied', 'expired']), by: z.string(), at: z.number() })
  .meta({ id: 'DecisionRecorded' });

export const AuditQuery = z
  .object({
    runId: z.string().min(1).max(64).optional(),
    principal: z.string().min(1).max(256).optional(),
    action: z.enum(AUDIT_ACTIONS).optional(),
    limit: z.coerce.number().int().min(1).max(500).default(100),
    before: ListCursorQuery.optional(),
  })
  .strict();

const AuditRecordOut = z.object({
  seq: z.number(),
  at: z.number(),
  writer: z.string(),
  runId: z.string(),
  principal: z.string(),
  tenant: z.string().optional(),
  chain: z.array(z.string()),
  agent: z.string().optional(),
  action: z.string(),
  subject: z.string().optional(),
  outcome: z.string(),
  reasons: z.array(z.string()).optional(),
  risk: z.number().optional(),
  detail: z.record(z.string(), z.unknown()).optional(),
  prev: z.string(),
  hash: z.string(),
  kid: z.string().optional(),
  mac: z.string().optional(),
  sig: z.string().optional(),
  signs: z.number().optional(),
});

export const AuditOut = z
  .object({
    entries: z.array(AuditRecordOut).describe('newest first'),
    next: ListCursorOut.optional().describe('pass as `before` for older records'),
    verification: z.object({
      /** True only when `status` is `verified`. */
      ok: z.boolean(),
      /** verified: every record signed by its configured writer, the chain intact up to the anchors; unanchored: so, but no anchor (yet) pins the end; unverified: the server has no writers' keys; tampered: problems. */
      status: z.enum(['verified', 'unanchored', 'unverified', 'tampered']),
      /** The figures of the whole log: left out for a principal with a tenant. */
      entries: z.number().optional(),
      /** Records whose writer's signature (or older MAC) was checked, by this server or by the anchorer of a verified anchor after them. */
      macsVerified: z.number().optional(),
      /** Records of writers the server has no key for (when it has none: unverified). */
      unsigned: z.number().optional(),
      head: z.object({ seq: z.number(), hash: z.string() }).nullable().optional(),
      /** The latest anchor, and the records after it (those could be cut unnoticed). */
      anchor: z.object({ seq: z.number(), at: z.number(), verified: z.boolean() }).nullable().optional(),
      sinceAnchor: z.number().optional(),
      problemCount: z.number(),
      /** The first 100 problems (none listed for a principal with a tenant). */
      problems: z.array(z.object({ seq: z.number(), problem: z.string(), detail: z.string() })),
    }),
  })
  .meta({ id: 'AuditPage' });
