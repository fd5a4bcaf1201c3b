import type { AuditAction, AuditEntryInput } from './audit-log.js';
import type { RunEventInput } from './events.js';
import type { Principal } from './principal.js';

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
 * Entries carry ids, names, verdicts and reasons, never content.
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
    case 'run.started':
      return entry('run.started', 'started');
    case 'run.completed':
      return entry('run.completed', 'completed');
    case 'run.failed':
      return entry('run.failed', 'failed', { reasons: [event.error] });
    case 'run.cancelled':
      return entry('run.cancelled', 'cancelled', { reasons: [event.reason] });
    default:
      return undefined;
  }
}
