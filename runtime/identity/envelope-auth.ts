import { canonicalJson } from '../audit/canonical-json.js';
import type { Envelope, GrantClaim } from '../envelope.js';
import type { Signature } from './edge-keys.js';
import { Grants } from './grants.js';
import { EDGE, type Keyring } from './keyring.js';
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
  /** The longest a run may go on: the edge's grant expires this long after it is issued, or at the run's deadline if sooner. */
  maxRunMs?: number;
}

/** The data a MAC or signature covers: the object minus its own MAC or signature, canonical (sorted keys), so no copy or parse can change it. */
const covered = (value: object): string => canonicalJson({ ...value, auth: undefined, signature: undefined });

/**
 * The data an envelope's or a checkpoint's MAC covers: the object minus its own MAC as JSON.stringify
 * writes it, for these are checked on every hop and canonical JSON cost far more. It holds because
 * both travel only as JSON text and are checked as JSON.parse read them back, and
 * JSON.stringify(JSON.parse(JSON.stringify(x))) is JSON.stringify(x) for any x (V8 keeps the order
 * keys were written in, integer-like keys first either way). A copy with its keys in another order
 * (a parsed and re-validated one) no longer matches: it is refused, never wrongly believed.
 */
const asSent = (value: object): string => JSON.stringify({ ...value, auth: undefined });

/**
 * The text an envelope's MAC covers, and the envelope's own size as JSON, from one serialisation: the
 * whole envelope is that text plus `"auth":` and the MAC's JSON (and a comma unless it is alone),
 * wherever the key stands. A hop checks both, and serialising a 3 KB envelope twice showed in profiles.
 */
export function sentForm(envelope: object): { text: string; bytes: number } {
  const text = asSent(envelope);
  const auth = JSON.stringify((envelope as { auth?: unknown }).auth);
  const bytes = Buffer.byteLength(text) + (auth === undefined ? 0 : Buffer.byteLength(auth) + (text === '{}' ? 7 : 8));
  return { text, bytes };
}

/** What the edge signs is prefixed with what it is, so that no signature of one kind passes for another. */
const DECISION = 'palisade.decision\0';
const ORDER = 'palisade.order\0';

/**
 * Authenticates what crosses Redis: envelopes (per-link MACs, and the edge's signed grant of
 * principal and budget), a worker's own checkpoints, delegates' answers, approval requests and what
 * the edge alone may say (decisions, rollback orders). Nothing read from Redis is believed without it.
 */
export class EnvelopeAuth {
  private readonly maxAgeMs: number;
  private readonly skewMs: number;
  private readonly maxActivationMs: number;
  private readonly maxRunMs: number;
  private readonly grants: Grants;

  constructor(
    readonly keyring: Keyring,
    options: EnvelopeAuthOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? 3600_000;
    this.skewMs = options.skewMs ?? 60_000;
    this.maxActivationMs = options.maxActivationMs ?? 24 * 3600_000;
    // The longest approval wait (24 h) and the longest activation after it.
    this.maxRunMs = options.maxRunMs ?? 48 * 3600_000;
    this.grants = new Grants(keyring.edge);
  }

  /**
   * A run's first envelope as the edge sends it: with the edge's signed grant, which binds the run,
   * principal, budget, this very message and an expiry, and then the MAC of the link edge → agent.
   */
  sealStart(envelope: Envelope): Envelope {
    const { auth: _mac, grant: _grant, ...start } = envelope;
    const expiresAt = Math.min(start.issuedAt + this.maxRunMs, start.budget.deadline ?? Number.POSITIVE_INFINITY);
    return this.seal({ ...start, grant: this.grants.issue(start, expiresAt) });
  }

  seal(envelope: Envelope): Envelope {
    const { auth: _drop, ...rest } = envelope;
    return { ...rest, auth: this.keyring.mac(envelope.sender, envelope.receiver, asSent(rest)) };
  }

  /**
   * Why an envelope must be refused, or undefined when it is authentic: sent by the previous agent
   * in its chain over that link, for the principal and within the budget the edge granted, fresh.
   * `raw` is the envelope as read from the job (the MAC covers it as it was sent), `envelope` it validated;
   * `sent`, when the caller has it, is raw's {@link sentForm} text.
   */
  check(raw: Record<string, unknown>, envelope: Envelope, sent?: string): string | undefined {
    const expectedSender = envelope.chain.length > 1 ? envelope.chain[envelope.chain.length - 2] : EDGE;
    if (envelope.sender !== expectedSender) return `sender '${envelope.sender}' is not the previous agent of the chain ('${expectedSender}')`;
    if (envelope.kind === 'start' ? envelope.sender !== EDGE : envelope.sender === EDGE) return `a '${envelope.kind}' envelope cannot come from '${envelope.sender}'`;
    const bad = this.keyring.verify(envelope.sender, envelope.receiver, sent ?? asSent(raw), envelope.auth);
    if (bad) return `the envelope is not authentic: ${bad}`;
    const claim = this.grantOf(envelope);
    if (typeof claim === 'string') return claim;
    const mismatch = this.grants.mismatch(claim, envelope, () => JSON.stringify(raw.messages));
    if (mismatch) return mismatch;
    if (envelope.issuedAt > Date.now() + this.skewMs) return 'it was issued in the future';
    return undefined;
  }

  /** The claim of the envelope's grant, verified once per process and then remembered; or why it cannot be believed. */
  private grantOf(envelope: Envelope): GrantClaim | string {
    if (!envelope.grant) return 'the envelope carries no grant from the edge';
    const claim = this.grants.claimOf(envelope.grant);
    return typeof claim === 'string' ? `the edge's grant is not authentic: ${claim}` : claim;
  }

  /**
   * Why an authentic envelope is too old to act on: its grant has expired; or on first delivery after
   * `maxAgeMs`, and on any delivery (a resumed delegation) after `maxActivationMs`, which bounds how
   * long a saved state replays.
   */
  staleness(envelope: Envelope, firstDelivery: boolean): string | undefined {
    const claim = this.grantOf(envelope);
    if (typeof claim === 'string') return claim;
    if (Date.now() > claim.expiresAt) return `the edge's grant for this run expired at ${new Date(claim.expiresAt).toISOString()}`;
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

  /**
   * A request for approval, as the waiting agent wrote it, MAC'd on the link agent → edge: the edge
   * checks it before an approver sees it, and the agent itself before it acts on a decision.
   */
  sealApprovalRequest(request: ApprovalRequest): ApprovalRequest {
    return { ...request, auth: this.keyring.mac(request.agent, EDGE, `approval\0${covered(request)}`) };
  }

  /** `request` as JSON.parse read it (the MAC covers it canonically, so its key order does not matter). */
  checkApprovalRequest(request: ApprovalRequest): string | undefined {
    const bad = this.keyring.verify(request.agent, EDGE, `approval\0${covered(request)}`, request.auth);
    return bad && `the approval request is not authentic: ${bad}`;
  }

  /**
   * A decision: an approver's verdict, signed by the edge (no worker can make one); or an expiry,
   * which the waiting agent itself writes, MAC'd on its link to the edge.
   */
  sealDecision(agent: string, decision: ApprovalDecision): ApprovalDecision {
    const { auth: _mac, signature: _sig, ...rest } = decision;
    if (decision.status === 'expired') return { ...rest, auth: this.keyring.mac(agent, EDGE, `decision\0${covered(rest)}`) };
    return { ...rest, signature: this.keyring.edge.sign(DECISION + covered(rest)) };
  }

  checkDecision(agent: string, decision: ApprovalDecision): string | undefined {
    const bad =
      decision.status === 'expired' ? this.keyring.verify(agent, EDGE, `decision\0${covered(decision)}`, decision.auth) : this.keyring.edge.verify(DECISION + covered(decision), decision.signature);
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

  /** An operator's order to undo one of a run's actions, signed by the edge: no worker can make one. */
  sealOrder<T extends { agent: string }>(order: T): T & { signature: Signature } {
    return { ...order, signature: this.keyring.edge.sign(ORDER + covered(order)) };
  }

  /** `order` as JSON.parse read it; its `agent` is the one that must undo it. */
  checkOrder(order: { agent: string; signature?: Signature }): string | undefined {
    const bad = this.keyring.edge.verify(ORDER + covered(order), order.signature);
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

  /**
   * The marker of a message's claim: the job that took it, when (with a nonce, so no two claims look
   * alike) and, once finished, its result; readable back only by the same agent.
   */
  sealClaim(agent: string, messageId: string, jobId: string, result?: TaskResult, taken?: { at: number; nonce: string }): { kid: string; mac: string } {
    return this.keyring.mac(agent, agent, claimData(messageId, { jobId, result, ...taken }));
  }

  checkClaim(agent: string, messageId: string, marker: { jobId: string; result?: TaskResult; at?: number; nonce?: string; auth?: { kid: string; mac: string } }): string | undefined {
    let data: string;
    try {
      data = claimData(messageId, marker);
    } catch {
      return 'the claim of the message cannot be read';
    }
    const bad = this.keyring.verify(agent, agent, data, marker.auth);
    return bad && `the claim of the message is not authentic: ${bad}`;
  }

  /**
   * Why an unfinished claim (authenticated) is too old for a redelivery to resume: its age counts from
   * when it was taken, up to `maxAgeMs`, or `maxActivationMs` for an activation that waited (`parked`).
   */
  claimStaleness(marker: { at?: number }, parked: boolean): string | undefined {
    if (marker.at === undefined) return 'its claim does not say when it was taken';
    const age = Date.now() - marker.at;
    const limit = parked ? this.maxActivationMs : this.maxAgeMs;
    return age > limit ? `its claim was taken ${Math.round(age / 1000)} s ago, over the limit of ${Math.round(limit / 1000)} s for a redelivery` : undefined;
  }

  /**
   * A failure or cancel order, sealed by the worker of `endedBy` (which saw the run end) on a link it
   * shares with the agent that undoes the action, either way round; none when they share no link.
   */
  sealEndOrder<T extends { agent: string; endedBy: string }>(order: T): T {
    const link = this.endOrderLink(order);
    return link ? { ...order, auth: this.keyring.mac(link[0], link[1], `endorder\0${covered(order)}`) } : order;
  }

  checkEndOrder(order: { agent: string; endedBy?: string; auth?: { kid: string; mac: string } }): string | undefined {
    const link = order.endedBy === undefined ? undefined : this.endOrderLink({ agent: order.agent, endedBy: order.endedBy });
    const bad = !order.auth || !link ? 'it is not sealed by the worker that saw the run end' : this.keyring.verify(link[0], link[1], `endorder\0${covered(order)}`, order.auth);
    return bad && `the rollback order is not authentic: ${bad}`;
  }

  private endOrderLink({ agent, endedBy }: { agent: string; endedBy: string }): [string, string] | undefined {
    if (this.keyring.has(endedBy, agent)) return [endedBy, agent];
    return this.keyring.has(agent, endedBy) ? [agent, endedBy] : undefined;
  }

  /** What became of one action in a rollback, bound to its run and action key; readable back only by the agent that undid it. */
  sealCompensation<T extends object>(agent: string, runId: string, key: string, record: T): T & { auth: { kid: string; mac: string } } {
    return { ...record, auth: this.keyring.mac(agent, agent, `compensation\0${runId}\0${key}\0${covered(record)}`) };
  }

  checkCompensation(agent: string, runId: string, key: string, record: object & { auth?: { kid: string; mac: string } }): string | undefined {
    const bad = this.keyring.verify(agent, agent, `compensation\0${runId}\0${key}\0${covered(record)}`, record.auth);
    return bad && `the compensation record is not authentic: ${bad}`;
  }
}

/** What a claim's MAC covers; a claim taken before claims had a time covers none (and cannot be resumed). */
function claimData(messageId: string, marker: { jobId: string; result?: TaskResult; at?: number; nonce?: string }): string {
  const taken = marker.at !== undefined || marker.nonce !== undefined ? { at: marker.at ?? null, nonce: marker.nonce ?? null } : {};
  return `claim\0${canonicalJson({ messageId, jobId: marker.jobId, result: marker.result ?? null, ...taken })}`;
}
