import { createHash } from 'node:crypto';
import { z } from 'zod';
import { LabelSchema } from '../../agents/label.js';
import { canonicalJson } from '../audit/canonical-json.js';
import { AuthSchema } from '../envelope.js';
import { SignatureSchema } from '../identity/edge-keys.js';
import { PrincipalSchema } from '../../agents/principal.js';
import type { Quote } from '../events.js';

/** The longest quote a request holds: the worker cuts a longer one, which the model was told whole. */
export const MAX_QUOTE = 16 * 1024;

/** Text a request quotes (see `Quote` in events.ts), with the label of what it may quote. */
export const QuoteSchema = z.object({ text: z.string().max(MAX_QUOTE), label: LabelSchema }).strict() satisfies z.ZodType<Quote>;

/** Where a value in the arguments was found, as the approver is told. */
export const ORIGINS = ['user', 'tool', 'agent', 'third_party', 'instructions', 'model'] as const;

/**
 * One identifying value of a tool call's arguments (a recipient, an account, an amount) and where it
 * came from: `user` the principal's request, `tool` a trusted tool's result, `agent` a delegate's
 * answer, `third_party` content anyone could write (`instructions`: such content that reads as orders
 * to the agent), `model` none of these (the model wrote it).
 */
export const ValueSourceSchema = z
  .object({
    /** Where the value sits in the arguments, e.g. `to` or `recipients.0`. */
    path: z.string().max(200),
    /** The value as the approver may see it: identifiers partly masked (`GB29…6819`), secrets withheld. */
    value: z.string().max(200),
    origin: z.enum(ORIGINS),
    /** The tool or agent whose output held it. */
    via: z.string().max(64).optional(),
  })
  .strict();
export type ValueSource = z.infer<typeof ValueSourceSchema>;

/**
 * What an approver sees and decides on: written by the worker that paused on an `escalate`
 * decision and MAC'd by it on its link to the edge, which checks it before showing it, so that
 * what is shown is what the agent wrote and what will run.
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
    /**
     * The arguments with identifiers partly masked and secrets withheld: content of the request's
     * label, which the edge shows only to readers cleared for it.
     */
    arguments: z.string().max(64 * 1024),
    /** For a tool call: where its identifying values came from (content of the request's label too). */
    sources: z.array(ValueSourceSchema).max(100).optional(),
    /** SHA-256 of the exact arguments: an approval covers this call and no other. */
    argsHash: z.string().length(64),
    /** Our own guards' fixed reasons: for anyone who may see the request. */
    reasons: z.array(z.string()),
    /** What other guards said, which may quote the arguments: shown only to readers cleared for its label. */
    quote: QuoteSchema.optional(),
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
    /** {@link approvalDigest} of the request the approver was shown: the waiting agent acts only if it is the one it wrote. */
    requestDigest: z.string().length(64),
    /** The edge's signature, on an approver's decision. */
    signature: SignatureSchema.optional(),
    /** The waiting agent's own MAC on its link to the edge, on an expiry. */
    auth: AuthSchema.optional(),
  })
  .strict();
export type ApprovalDecision = z.infer<typeof ApprovalDecisionSchema>;

export interface ApprovalState {
  request: ApprovalRequest;
  decision?: ApprovalDecision;
}

/**
 * Whether the edge could check that a request is what its agent wrote: `verified`; `refused` (not
 * authentic, altered, or its decision not authentic) with the reason; `unauthenticated` when this
 * process holds no keys, so nothing is checked (development only).
 */
export type Verification = { status: 'verified' } | { status: 'unauthenticated' } | { status: 'refused'; problem: string };

/** A request as the edge shows it: with what its check found. */
export interface ReviewedApproval extends ApprovalState {
  verification: Verification;
}

/** SHA-256 of the whole request as its agent wrote it (without its MAC): what a decision binds. */
export const approvalDigest = (request: ApprovalRequest): string => createHash('sha256').update(canonicalJson({ ...request, auth: undefined })).digest('hex');

/** The permission that lets a principal decide on a request about `subject`. */
export const approverPermission = (kind: ApprovalRequest['kind'], subject: string): string => `approve:${kind === 'tool' ? 'tool' : 'agent'}:${subject}`;
