import type { Label } from '../agents/label.js';

/**
 * Text an event quotes from outside our own templates: a thrown error of a tool, a model or a guard,
 * a guard's own words, an approver's note. It carries the label of where it came from: a reader
 * gets it only when cleared for that label (see `event-view.ts`), and the audit log never stores it.
 */
export interface Quote {
  text: string;
  label: Label;
}

/** What a reader gets instead of a quote above their clearance. */
export interface Withheld {
  code: 'above_clearance';
  reason: string;
}

/** An event's text: our own words (safe for anyone who may see the run, and the audit log), and what they quote. */
export interface Stated {
  message: string;
  quote?: Quote;
  /** The whole text as the model is told it, when that is not `message: quote` (never written to an event). */
  told?: string;
}

/** The whole text, for whoever may see everything (the model, a cleared reader). */
export const fullText = (s: Stated): string => s.told ?? (s.quote ? (s.message ? `${s.message}: ${s.quote.text}` : s.quote.text) : s.message);

/**
 * What a run reports as it goes; the CLI prints these live and `run.events()` yields them. Fields
 * named `message`, `error`, `reason(s)` hold our own words only; what they quote is in `quote`.
 */
export type RunEvent = { at: number; agent?: string; withheld?: Withheld } & (
  | { type: 'run.started'; input: string; principal: string }
  | { type: 'agent.started'; kind: 'start' | 'handoff' | 'delegate'; chain: string[]; resumed: boolean }
  | { type: 'model.response'; model: string; toolCalls: string[]; text: boolean; inputTokens: number; outputTokens: number }
  | { type: 'model.error'; message: string; quote?: Quote; willRetry: boolean }
  | { type: 'guard.decision'; stage: string; verdict: string; reasons: string[]; quote?: Quote; risk: number; subject?: string; monitored?: string }
  | { type: 'label.declassified'; from: Label; to: Label; reason: string; source: string }
  | { type: 'tool.called'; tool: string; callId: string; replayed: boolean }
  | { type: 'tool.result'; tool: string; callId: string; label: Label }
  | { type: 'tool.error'; tool: string; callId: string; message: string; quote?: Quote }
  | { type: 'handoff'; to: string }
  | { type: 'delegation.started'; to: string; callId: string }
  | { type: 'delegation.completed'; to: string; callId: string; status: string }
  | { type: 'envelope.rejected'; reason: string }
  | { type: 'approval.requested'; approvalId: string; kind: 'tool' | 'handoff' | 'delegate'; subject: string; reasons: string[]; quote?: Quote; risk: number; expiresAt: number }
  /** The approver's note is written as `quote` (labelled like the request); `note` is what a cleared reader is shown. */
  | { type: 'approval.decided'; approvalId: string; subject: string; status: 'approved' | 'denied' | 'expired'; by?: string; note?: string; quote?: Quote }
  /** The waiting agent acted on the decision, after checking it and the action again. */
  | { type: 'approval.resolved'; approvalId: string; subject: string; outcome: 'approved' | 'denied' | 'expired' | 'invalid'; reason?: string; quote?: Quote }
  | { type: 'rollback.started'; rollbackId: string; trigger: RollbackTrigger; actions: number; by?: string }
  | { type: 'action.compensated'; rollbackId: string; tool: string; callId: string; status: 'undone' | 'failed' | 'not_undone' | 'already_undone'; message?: string; quote?: Quote }
  | { type: 'rollback.completed'; rollbackId: string; undone: number; failed: number; notUndone: number }
  /** `label`: the context's label when the reply was given; readers other than the principal get the output only when cleared for it. */
  | { type: 'run.completed'; output: string; label?: Label }
  | { type: 'run.failed'; error: string; quote?: Quote }
  | { type: 'run.cancelled'; reason: string }
);
export type RollbackTrigger = 'failure' | 'cancel' | 'operator';
export type RunEventType = RunEvent['type'];
/** An event as its producer writes it: the store stamps the time. */
export type RunEventInput = RunEvent extends infer E ? (E extends RunEvent ? Omit<E, 'at'> : never) : never;

export const TERMINAL_EVENTS: ReadonlySet<RunEventType> = new Set(['run.completed', 'run.failed', 'run.cancelled']);
