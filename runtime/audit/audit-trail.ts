import type { AuditAction, AuditEntryInput } from './audit-record.js';
import type { Quote, RunEventInput } from '../events.js';
import type { Principal } from '../../agents/principal.js';
import type { RunStore } from '../stores/run-store.js';

/** Where audit entries go: the hash-chained log in Redis, or nowhere on the embedded transport. */
export interface AuditSink {
  append(entry: AuditEntryInput): Promise<unknown>;
}

export interface AuditContext {
  runId: string;
  principal: Principal;
  chain: readonly string[];
  agent?: string;
}

/**
 * Turns a run's events into audit entries: every guard decision, tool execution, handoff,
 * delegation, declassification, refusal and ending, attributed to the principal and the chain.
 * Entries carry ids, names, verdicts, risk and the reasons our own code writes from fixed templates,
 * never content: an event's `quote` (a thrown error, a custom guard's words), an approver's note
 * and a canceller's reason are free text, and are left out.
 */
export function auditEntryFor(event: RunEventInput, ctx: AuditContext): AuditEntryInput | undefined {
  const base = { runId: ctx.runId, principal: ctx.principal.id, ...(ctx.principal.tenant ? { tenant: ctx.principal.tenant } : {}), chain: [...ctx.chain], ...(ctx.agent ? { agent: ctx.agent } : {}) };
  const entry = (action: AuditAction, outcome: string, rest: Partial<AuditEntryInput> = {}): AuditEntryInput => ({ ...base, action, outcome, ...rest });
  switch (event.type) {
    case 'guard.decision':
      return entry('guard.decision', event.verdict, {
        subject: event.subject ?? event.stage,
        reasons: event.reasons,
        risk: event.risk,
        detail: { stage: event.stage, ...(event.monitored ? { monitored: event.monitored } : {}) },
      });
    case 'tool.result':
      return entry('tool.executed', 'executed', { subject: event.tool, detail: { callId: event.callId, label: event.label } });
    case 'tool.error':
      return entry('tool.failed', 'failed', { subject: event.tool, reasons: [event.message], detail: { callId: event.callId } });
    case 'handoff':
      return entry('handoff', 'sent', { subject: event.to });
    case 'delegation.started':
      return entry('delegation', 'sent', { subject: event.to, detail: { callId: event.callId } });
    case 'delegation.completed':
      return entry('delegation.answered', event.status, { subject: event.to, detail: { callId: event.callId } });
    case 'label.declassified':
      return entry('label.declassified', 'lowered', { subject: event.source, reasons: [event.reason], detail: { from: event.from, to: event.to } });
    case 'envelope.rejected':
      return entry('envelope.refused', 'refused', { reasons: [event.reason] });
    case 'approval.requested':
      return entry('approval.requested', 'pending', { subject: event.subject, reasons: event.reasons, risk: event.risk, detail: { approvalId: event.approvalId, kind: event.kind, expiresAt: event.expiresAt } });
    case 'approval.decided':
      return entry('approval.decided', event.status, { subject: event.subject, detail: { approvalId: event.approvalId, ...(event.by ? { by: event.by } : {}), ...(event.note || event.quote ? { noted: true } : {}) } });
    case 'approval.resolved':
      return entry('approval.resolved', event.outcome, { subject: event.subject, ...(event.reason ? { reasons: [event.reason] } : {}), detail: { approvalId: event.approvalId } });
    case 'rollback.started':
      return entry('rollback.started', 'started', { detail: { rollbackId: event.rollbackId, trigger: event.trigger, actions: event.actions, ...(event.by ? { by: event.by } : {}) } });
    case 'action.compensated':
      return entry('rollback.step', event.status, { subject: event.tool, ...(event.message ? { reasons: [event.message] } : {}), detail: { rollbackId: event.rollbackId, callId: event.callId } });
    case 'rollback.completed':
      return entry('rollback.completed', event.failed + event.notUndone === 0 ? 'complete' : 'partial', { detail: { rollbackId: event.rollbackId, undone: event.undone, failed: event.failed, notUndone: event.notUndone } });
    case 'run.started':
      return entry('run.started', 'started');
    case 'run.completed':
      return entry('run.completed', 'completed');
    case 'run.failed':
      return entry('run.failed', 'failed', { reasons: [event.error] });
    case 'run.cancelled':
      return entry('run.cancelled', 'cancelled');
    default:
      return undefined;
  }
}

/**
 * Records one event outside an activation: in the run's event stream (as `ctx.agent`'s, when there
 * is one) and, when it is an audited kind, in the audit log with `detail` added.
 */
export async function recordRunEvent(
  store: Pick<RunStore, 'appendEvent'>,
  audit: AuditSink | undefined,
  event: RunEventInput,
  ctx: AuditContext,
  detail?: Record<string, unknown>,
): Promise<void> {
  await store.appendEvent(ctx.runId, asAgents(event, ctx));
  const entry = auditEntryFor(event, ctx);
  if (entry && audit) await audit.append(detail ? { ...entry, detail: { ...entry.detail, ...detail } } : entry);
}

const asAgents = (event: RunEventInput, ctx: AuditContext): RunEventInput => (ctx.agent ? { ...event, agent: ctx.agent } : event) as RunEventInput;

/**
 * Fails a run outside an activation unless it has ended already: the end and its `run.failed` event
 * in one write (a follower woken by the end finds the event), then the audit entry. False when it had ended.
 */
export async function failRun(store: Pick<RunStore, 'finishRun'>, audit: AuditSink | undefined, error: string, ctx: AuditContext, quote?: Quote): Promise<boolean> {
  // The record holds our own words only; what they quote is in the event, for readers cleared for it.
  const event: RunEventInput = { type: 'run.failed', error, ...(quote ? { quote } : {}) };
  if (!(await store.finishRun(ctx.runId, 'failed', { error }, { ended: asAgents(event, ctx) }))) return false;
  const entry = auditEntryFor(event, ctx);
  if (entry && audit) await audit.append(entry);
  return true;
}
