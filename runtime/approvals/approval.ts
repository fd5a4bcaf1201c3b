import { z } from 'zod';
import { LabelSchema } from '../../agents/label.js';
import { AuthSchema } from '../envelope.js';
import { PrincipalSchema } from '../../agents/principal.js';

/**
 * What an approver sees and decides on: written by the worker that paused on an `escalate`
 * decision, and authenticated by it, so that what is shown is what will run.
 */
export const ApprovalRequestSchema = z
  .object({
    id: z.string().min(1).max(64),
    runId: z.string().uuid(),
    /** The agent that waits; its worker owns the parked job. */
    agent: z.string().min(1).max(64),
    jobId: z.string().min(1).max(200),
    /** A tool call, or a handoff or delegation to another agent. */
    kind: z.enum(['tool', 'handoff', 'delegate']),
    /** The tool or the target agent. */
    subject: z.string().min(1).max(64),
    callId: z.string().max(200),
    /** The arguments as the approver may see them: PII and secrets redacted. */
    arguments: z.string().max(64 * 1024),
    /** SHA-256 of the exact arguments: an approval covers this call and no other. */
    argsHash: z.string().length(64),
    reasons: z.array(z.string()),
    risk: z.number().min(0).max(1),
    label: LabelSchema,
    chain: z.array(z.string()),
    /** Who the run acts for: by default they may not approve their own request. */
    principal: PrincipalSchema,
    /** The permission an approver needs, e.g. `approve:tool:issue_refund`. */
    permission: z.string().min(1),
    selfApproval: z.boolean(),
    requestedAt: z.number().int().positive(),
    expiresAt: z.number().int().positive(),
    auth: AuthSchema.optional(),
  })
  .strict();
export type ApprovalRequest = z.infer<typeof ApprovalRequestSchema>;

export const APPROVAL_STATUSES = ['approved', 'denied', 'expired'] as const;

/** The one decision on a request: the first written wins (an approval racing the timeout has one winner). */
export const ApprovalDecisionSchema = z
  .object({
    approvalId: z.string().min(1).max(64),
    status: z.enum(APPROVAL_STATUSES),
    /** The approver, from verified credentials; absent when the request expired. */
    by: PrincipalSchema.optional(),
    at: z.number().int().positive(),
    note: z.string().max(2000).optional(),
    argsHash: z.string().length(64),
    /** The edge's MAC for the waiting agent (a decision), or the agent's own (an expiry). */
    auth: AuthSchema.optional(),
  })
  .strict();
export type ApprovalDecision = z.infer<typeof ApprovalDecisionSchema>;

export interface ApprovalState {
  request: ApprovalRequest;
  decision?: ApprovalDecision;
}

/** The permission that lets a principal decide on a request about `subject`. */
export const approverPermission = (kind: ApprovalRequest['kind'], subject: string): string => `approve:${kind === 'tool' ? 'tool' : 'agent'}:${subject}`;
