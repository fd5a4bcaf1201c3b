import { isDeepStrictEqual } from 'node:util';
import { canonicalJson } from '../audit/canonical-json.js';
import type { Budget, Envelope, Grant } from '../envelope.js';
import { EDGE, type Keyring } from './keyring.js';
import type { Principal } from '../../agents/principal.js';
import type { ApprovalDecision, ApprovalRequest } from '../approvals/approval.js';
import type { ActionRecord, ToolCallRecord } from '../stores/run-store.js';
import type { TaskResult } from '../transports/task.js';

export interface EnvelopeAuthOptions {
  /** An envelope issued longer ago than this is refused on first delivery. */
  maxAgeMs?: number;
  /** Tolerated clock difference between machines. */
  skewMs?: number;
  /** An activation (with its delegations) older than this is not resumed. */
  maxActivationMs?: number;
}

/** The data a MAC covers: the object minus its own MAC, canonical (sorted keys), so no copy or parse can change it. */
const covered = (value: object): string => canonicalJson({ ...value, auth: undefined });

/**
 * The data an envelope's or a checkpoint's MAC covers: the object minus its own MAC as JSON.stringify
 * writes it, for these are checked on every hop and canonical JSON cost far more. It holds because
 * both travel only as JSON text and are checked as JSON.parse read them back, and
 * JSON.stringify(JSON.parse(JSON.stringify(x))) is JSON.stringify(x) for any x (V8 keeps the order
 * keys were written in, integer-like keys first either way). A copy with its keys in another order
 * (a parsed and re-validated one) no longer matches: it is refused, never wrongly believed.
 */
const asSent = (value: object): string => JSON.stringify({ ...value, auth: undefined });
const claimOf = (g: Pick<Grant, 'runId' | 'principal' | 'budget' | 'issuedAt'>): string =>
  canonicalJson({ runId: g.runId, principal: g.principal, budget: g.budget, issuedAt: g.issuedAt });

/**
 * Authenticates what crosses Redis: envelopes (per-link MACs, and the edge's grant of principal
 * and budget), a worker's own checkpoints, and delegates' answers. Nothing read from Redis is
 * believed without it.
 */
export class EnvelopeAuth {
  private readonly maxAgeMs: number;
  private readonly skewMs: number;
  private readonly maxActivationMs: number;

  constructor(
    readonly keyring: Keyring,
    options: EnvelopeAuthOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? 3600_000;
    this.skewMs = options.skewMs ?? 60_000;
    this.maxActivationMs = options.maxActivationMs ?? 24 * 3600_000;
  }

  /** The edge's grant for a new run, verifiable by every agent it names. */
  grant(runId: string, principal: Principal, budget: Budget, issuedAt: number, agents: readonly string[]): Grant {
    const claim = claimOf({ runId, principal, budget, issuedAt });
    return { runId, principal, budget, issuedAt, macs: Object.fromEntries(agents.map((a) => [a, this.keyring.mac(EDGE, a, claim)])) };
  }

  seal(envelope: Envelope): Envelope {
    const { auth: _drop, ...rest } = envelope;
    return { ...rest, auth: this.keyring.mac(envelope.sender, envelope.receiver, asSent(rest)) };
  }

  /**
   * Why an envelope must be refused, or undefined when it is authentic: sent by the previous agent
   * in its chain over that link, for the principal and within the budget the edge granted, fresh.
   * `raw` is the envelope as read from the job (the MAC covers it as it was sent), `envelope` it validated.
   */
  check(raw: Record<string, unknown>, envelope: Envelope): string | undefined {
    const expectedSender = envelope.chain.length > 1 ? envelope.chain[envelope.chain.length - 2] : EDGE;
    if (envelope.sender !== expectedSender) return `sender '${envelope.sender}' is not the previous agent of the chain ('${expectedSender}')`;
    if (envelope.kind === 'start' ? envelope.sender !== EDGE : envelope.sender === EDGE) return `a '${envelope.kind}' envelope cannot come from '${envelope.sender}'`;
    const bad = this.keyring.verify(envelope.sender, envelope.receiver, asSent(raw), envelope.auth);
    if (bad) return `the envelope is not authentic: ${bad}`;
    const grant = envelope.grant;
    if (!grant) return 'the envelope carries no grant from the edge';
    const badGrant = this.keyring.verify(EDGE, envelope.receiver, claimOf(grant), grant.macs[envelope.receiver]);
    if (badGrant) return `the edge's grant is not authentic: ${badGrant}`;
    if (grant.runId !== envelope.runId) return 'the grant is for another run';
    if (!isDeepStrictEqual(grant.principal, envelope.principal)) return 'the principal differs from the one the edge granted';
    const b = envelope.budget;
    if (grant.budget.tokens !== undefined && (b.tokens === undefined || b.tokens > grant.budget.tokens)) return 'the token budget exceeds what the edge granted';
    if (grant.budget.deadline !== undefined && (b.deadline === undefined || b.deadline > grant.budget.deadline)) return 'the deadline is later than the edge granted';
    if (grant.budget.costUsd !== undefined && (b.costUsd === undefined || b.costUsd > grant.budget.costUsd)) return 'the cost budget exceeds what the edge granted';
    if (envelope.issuedAt > Date.now() + this.skewMs) return 'it was issued in the future';
    return undefined;
  }

  /**
   * Why an authentic envelope is too old to act on: on first delivery after `maxAgeMs`, and on any
   * delivery (a resumed delegation) after `maxActivationMs`, which bounds how long a saved state replays.
   */
  staleness(envelope: Envelope, firstDelivery: boolean): string | undefined {
    const age = Date.now() - envelope.issuedAt;
    const limit = firstDelivery ? this.maxAgeMs : this.maxActivationMs;
    return age > limit ? `the message is ${Math.round(age / 1000)} s old, over the limit of ${Math.round(limit / 1000)} s` : undefined;
  }

  /** A worker's checkpoint of its own progress, readable back only by the same agent. */
  sealCheckpoint(agent: string, messageId: string, progress: object) {
    return this.keyring.mac(agent, agent, `${messageId}\0${JSON.stringify(progress)}`);
  }

  /** `rawProgress` as JSON.parse read it back. */
  checkCheckpoint(agent: string, messageId: string, rawProgress: unknown, auth: { kid: string; mac: string } | undefined): string | undefined {
    const bad = this.keyring.verify(agent, agent, `${messageId}\0${JSON.stringify(rawProgress)}`, auth);
    return bad && `the checkpoint is not authentic: ${bad}`;
  }

  /** A tool call's recorded outcome, bound to its idempotency key; readable back only by the same agent. */
  sealToolCall(agent: string, key: string, record: ToolCallRecord): ToolCallRecord {
    return { ...record, auth: this.keyring.mac(agent, agent, `${key}\0${covered(record)}`) };
  }

  checkToolCall(agent: string, key: string, record: ToolCallRecord): string | undefined {
    const bad = this.keyring.verify(agent, agent, `${key}\0${covered(record)}`, record.auth);
    return bad && `the recorded result is not authentic: ${bad}`;
  }

  /** A request for approval, as the waiting agent wrote it: what the approver saw is what it will run. */
  sealApprovalRequest(request: ApprovalRequest): ApprovalRequest {
    return { ...request, auth: this.keyring.mac(request.agent, request.agent, `approval\0${covered(request)}`) };
  }

  checkApprovalRequest(request: ApprovalRequest): string | undefined {
    const bad = this.keyring.verify(request.agent, request.agent, `approval\0${covered(request)}`, request.auth);
    return bad && `the approval request is not authentic: ${bad}`;
  }

  /** A decision: the edge's (an approver's verdict) for the waiting agent, or the agent's own (an expiry). */
  sealDecision(agent: string, decision: ApprovalDecision): ApprovalDecision {
    const from = decision.status === 'expired' ? agent : EDGE;
    return { ...decision, auth: this.keyring.mac(from, agent, `decision\0${covered(decision)}`) };
  }

  checkDecision(agent: string, decision: ApprovalDecision): string | undefined {
    const from = decision.status === 'expired' ? agent : EDGE;
    const bad = this.keyring.verify(from, agent, `decision\0${covered(decision)}`, decision.auth);
    return bad && `the decision is not authentic: ${bad}`;
  }

  /** An entry of the run's action log, which only the agent that acted can undo. */
  sealAction(record: ActionRecord): ActionRecord {
    return { ...record, auth: this.keyring.mac(record.agent, record.agent, `action\0${covered(record)}`) };
  }

  checkAction(record: ActionRecord): string | undefined {
    const bad = this.keyring.verify(record.agent, record.agent, `action\0${covered(record)}`, record.auth);
    return bad && `the action record is not authentic: ${bad}`;
  }

  /** An operator's order to undo a run's actions, from the edge to the agent that owns them. */
  sealOrder<T extends object>(agent: string, order: T): T & { auth: { kid: string; mac: string } } {
    return { ...order, auth: this.keyring.mac(EDGE, agent, `order\0${covered(order)}`) };
  }

  checkOrder(agent: string, order: object & { auth?: { kid: string; mac: string } }): string | undefined {
    const bad = this.keyring.verify(EDGE, agent, `order\0${covered(order)}`, order.auth);
    return bad && `the rollback order is not authentic: ${bad}`;
  }

  /** A delegate's answer, bound to the question it answers. */
  sealResult(from: string, to: string, messageId: string, result: TaskResult): TaskResult {
    return { ...result, auth: this.keyring.mac(from, to, `${messageId}\0${covered(result)}`) };
  }

  checkResult(from: string, to: string, messageId: string, result: TaskResult): string | undefined {
    const bad = this.keyring.verify(from, to, `${messageId}\0${covered(result)}`, result.auth);
    return bad && `the answer is not authentic: ${bad}`;
  }
}
