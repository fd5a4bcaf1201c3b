import { z } from 'zod';
import { ChatMessageSchema } from '../agents/model.js';
import { LabelSchema } from '../agents/label.js';
import { PrincipalSchema } from '../agents/principal.js';

export const ENVELOPE_VERSION = 1;

export const BudgetSchema = z
  .object({
    /** Model tokens the rest of the run may spend. */
    tokens: z.number().int().nonnegative().optional(),
    costUsd: z.number().nonnegative().optional(),
    /** Epoch milliseconds after which no further step starts. */
    deadline: z.number().int().positive().optional(),
  })
  .strict();
export type Budget = z.infer<typeof BudgetSchema>;

export const AuthSchema = z.object({ kid: z.string().max(64), mac: z.string().max(128) }).strict();
export type Auth = z.infer<typeof AuthSchema>;

/**
 * What the edge vouches for when it starts a run: who it acts for, with what budget, until when,
 * and the run's first message exactly, so the grant cannot start any other.
 */
export const GrantClaimSchema = z
  .object({
    runId: z.string().uuid(),
    principal: PrincipalSchema,
    budget: BudgetSchema,
    /** The agent the run starts at. */
    agent: z.string().min(1).max(64),
    /** The start envelope's message id and the SHA-256 (base64url) of its messages as sent. */
    messageId: z.string().min(1).max(200),
    input: z.string().length(43),
    issuedAt: z.number().int().positive(),
    /** No agent acts on the grant after this: the run's deadline, or the edge's limit on a run's life. */
    expiresAt: z.number().int().positive(),
  })
  .strict();
export type GrantClaim = z.infer<typeof GrantClaimSchema>;

/**
 * The edge's grant: its claim as the JSON text it signed (carried as text, so nothing a copy or a
 * parse does can change the signed bytes) and its Ed25519 signature, which every agent verifies
 * with the edge's public key and no worker can make.
 */
export const GrantSchema = z
  .object({
    claim: z.string().min(2).max(64 * 1024),
    kid: z.string().max(64),
    sig: z.string().max(128),
  })
  .strict();
export type Grant = z.infer<typeof GrantSchema>;

/**
 * The message that crosses a queue. `start` begins a run, `handoff` passes the conversation on,
 * `delegate` asks another agent a question whose answer returns to the caller.
 */
export const EnvelopeSchema = z
  .object({
    v: z.literal(ENVELOPE_VERSION),
    kind: z.enum(['start', 'handoff', 'delegate']),
    runId: z.string().uuid(),
    messageId: z.string().min(1).max(200),
    sender: z.string().min(1).max(64),
    receiver: z.string().min(1).max(64),
    principal: PrincipalSchema,
    /** Agents so far, ending with the receiver. */
    chain: z.array(z.string().min(1).max(64)).min(1).max(1000),
    /** Delegation depth: 0 for the agent that owns the run's conversation. */
    depth: z.number().int().nonnegative(),
    /** Handoffs and delegations so far in the run. */
    hops: z.number().int().nonnegative(),
    budget: BudgetSchema,
    label: LabelSchema,
    messages: z.array(ChatMessageSchema).min(1),
    trace: z.object({ traceparent: z.string().max(128), tracestate: z.string().max(512).optional() }).strict().optional(),
    issuedAt: z.number().int().positive(),
    grant: GrantSchema.optional(),
    /** The sender's MAC over everything above, with the key of the link sender → receiver. */
    auth: AuthSchema.optional(),
  })
  .strict();
export type Envelope = z.infer<typeof EnvelopeSchema>;

