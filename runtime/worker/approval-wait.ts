import { createHash } from 'node:crypto';
import { SpanStatusCode } from '@opentelemetry/api';
import { traceArguments } from '../../guards/builtin/provenance.js';
import { ATTR } from '../../tracing/attributes.js';
import { tracer } from '../../tracing/spans.js';
import { approvalDigest, approverPermission, MAX_QUOTE, type ApprovalDecision, type ApprovalRequest, type ValueSource } from '../approvals/approval.js';
import { maskArguments, requestFingerprint, valueSources, type Fingerprint } from '../approvals/approver-view.js';
import type { ActivationState } from './activation-state.js';
import { contextHistory, type StepDecision } from './guard-step.js';

/** An activation that waits for a human decision: it is set aside (no worker slot) until then. */
export class Parked extends Error {
  readonly benign = true;
  constructor(
    readonly until: number,
    /** Whether the decision has arrived (it may have come before the job was set aside). */
    readonly ready: () => Promise<boolean>,
  ) {
    super('waiting for approval');
  }
}

/** An escalated action to be approved. */
export interface ApprovalAsk {
  kind: ApprovalRequest['kind'];
  subject: string;
  callId: string;
  id: string;
  /** The arguments for the approver's eyes (masked before they are stored; the edge shows them only to readers cleared for the context's label). */
  shown: string;
  /** The exact arguments the approval binds to. */
  exact: string;
  decision: StepDecision;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/**
 * An escalated action: `approved` when a permitted human approved exactly this call in time;
 * otherwise the refusal. Without a decision yet, the activation parks until one (or the timeout).
 * With `onDeny: fail` a refusal ends the run instead.
 */
export async function approval(act: ActivationState, ask: ApprovalAsk): Promise<'approved' | { refused: string }> {
  const settings = act.options.approvals;
  if (!settings) return { refused: `it needs approval and no approvals are configured (${ask.decision.reasons.join('; ') || 'escalate'})` };
  const auth = act.options.auth;
  const argsHash = sha256(`${ask.kind}\0${ask.subject}\0${ask.exact}`);
  const decided = async () => Boolean((await act.store.getApproval(ask.id))?.decision);
  const state = await act.store.getApproval(ask.id);
  if (!state) {
    const now = Date.now();
    const fingerprint = requestFingerprint();
    const { stated: ownReasons, quote } = ask.decision;
    const request: ApprovalRequest = {
      id: ask.id,
      runId: act.runId,
      agent: act.agent.name,
      jobId: act.task.id,
      kind: ask.kind,
      subject: ask.subject,
      callId: ask.callId,
      arguments: maskArguments(ask.shown, fingerprint),
      ...(ask.kind === 'tool' ? { sources: sourcesOf(act, ask.exact, fingerprint) } : {}),
      argsHash,
      // As in the run's events: our guards' fixed reasons, and the rest quoted with its label for the edge to filter.
      reasons: ownReasons,
      ...(quote ? { quote: { text: quote.text.slice(0, MAX_QUOTE), label: quote.label } } : {}),
      risk: ask.decision.risk,
      label: act.progress.label,
      chain: [...act.envelope.chain],
      principal: act.envelope.principal,
      permission: approverPermission(ask.kind, ask.subject),
      selfApproval: settings.selfApproval,
      requestedAt: now,
      expiresAt: now + settings.timeoutMs,
    };
    // A redelivery that lost the race to create it simply waits for the same request.
    if (await act.store.createApproval(auth ? auth.sealApprovalRequest(request) : request)) {
      act.events.emit({ type: 'approval.requested', approvalId: request.id, kind: ask.kind, subject: ask.subject, reasons: ownReasons, ...(quote ? { quote } : {}), risk: request.risk, expiresAt: request.expiresAt });
    }
    throw new Parked(request.expiresAt, decided);
  }
  const { request } = state;
  let decision = state.decision;
  if (!decision) {
    if (Date.now() < request.expiresAt) throw new Parked(request.expiresAt, decided);
    const expired: ApprovalDecision = { approvalId: request.id, status: 'expired', at: Date.now(), argsHash: request.argsHash, requestDigest: approvalDigest(request) };
    if (await act.store.decideApproval(auth ? auth.sealDecision(act.agent.name, expired) : expired)) {
      act.events.emit({ type: 'approval.decided', approvalId: request.id, subject: request.subject, status: 'expired' });
    }
    decision = (await act.store.getApproval(ask.id))?.decision ?? expired;
  }
  const invalid = invalidDecision(act, ask.id, request, decision, argsHash);
  const outcome = invalid ? 'invalid' : decision.status;
  const stated =
    invalid ??
    (decision.status === 'denied'
      ? `denied by ${decision.by?.id ?? 'an approver'}`
      : decision.status === 'expired'
        ? `nobody decided within ${Math.round((request.expiresAt - request.requestedAt) / 1000)} s`
        : undefined);
  // The approver's note is free text about the request: quoted with the request's label, never audited.
  const note = !invalid && decision.status === 'denied' && decision.note ? { text: decision.note, label: request.label } : undefined;
  const refused = stated !== undefined && note ? `${stated}: ${note.text}` : stated;
  act.events.emit({ type: 'approval.resolved', approvalId: request.id, subject: request.subject, outcome, ...(stated ? { reason: stated } : {}), ...(note ? { quote: note } : {}) });
  traceWait(act, request, decision, outcome);
  if (refused === undefined) return 'approved';
  if (settings.onDeny === 'fail') throw new Error(`${request.kind === 'tool' ? 'the call to' : 'the handoff to'} '${request.subject}' was not approved: ${refused}`);
  return { refused };
}

/** Where the call's identifying values came from, traced as the provenance guard traces them. */
function sourcesOf(act: ActivationState, args: string, fingerprint: Fingerprint): ValueSource[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(args);
  } catch {
    return [];
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) return [];
  const record = parsed as Record<string, unknown>;
  return valueSources(record, traceArguments(record, contextHistory(act)), fingerprint);
}

/**
 * Why a stored request or decision cannot be acted on: forged, for other arguments, made on another
 * request than the one this agent wrote, or by someone not allowed to decide.
 */
function invalidDecision(act: ActivationState, id: string, request: ApprovalRequest, decision: ApprovalDecision, argsHash: string): string | undefined {
  const auth = act.options.auth;
  const forged = auth && (auth.checkApprovalRequest(request) ?? auth.checkDecision(act.agent.name, decision));
  if (forged) return forged;
  if (request.id !== id || decision.approvalId !== id || request.argsHash !== argsHash || decision.argsHash !== argsHash || request.agent !== act.agent.name || request.runId !== act.runId) {
    return 'the decision is for another call';
  }
  if (decision.requestDigest !== approvalDigest(request)) return 'the decision was made on another request than the one this agent wrote';
  if (decision.status !== 'approved') return undefined;
  const by = decision.by;
  if (!by) return 'an approval must name its approver';
  // Checked against the current policy, not the one in force when the request was made.
  if (!act.options.approvals!.permits(by, request.permission)) return `'${by.id}' lacks ${request.permission}`;
  if (!act.options.approvals!.selfApproval && by.id === act.envelope.principal.id) return `'${by.id}' may not approve their own request`;
  return undefined;
}

/** The wait as a span from the request to the decision, so a trace shows where the time went. */
function traceWait(act: ActivationState, request: ApprovalRequest, decision: ApprovalDecision, outcome: string): void {
  const span = tracer().startSpan(
    `palisade.approval ${request.subject}`,
    {
      startTime: request.requestedAt,
      attributes: {
        'palisade.approval.id': request.id,
        'palisade.approval.kind': request.kind,
        'palisade.approval.outcome': outcome,
        ...(decision.by ? { 'palisade.approval.by': decision.by.id } : {}),
        [ATTR.GEN_AI_AGENT_NAME]: act.agent.name,
      },
    },
    act.ctx,
  );
  if (outcome !== 'approved') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
  span.end(Math.max(decision.at, request.requestedAt));
}
