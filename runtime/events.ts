import type { Label } from '../agents/label.js';

/** What a run reports as it goes; the CLI prints these live and `run.events()` yields them. */
export type RunEvent = { at: number; agent?: string } & (
  | { type: 'run.started'; input: string; principal: string }
  | { type: 'agent.started'; kind: 'start' | 'handoff' | 'delegate'; chain: string[]; resumed: boolean }
  | { type: 'model.response'; model: string; toolCalls: string[]; text: boolean; inputTokens: number; outputTokens: number }
  | { type: 'model.error'; message: string; willRetry: boolean }
  | { type: 'guard.decision'; stage: string; verdict: string; reasons: string[]; risk: number; subject?: string; monitored?: string }
  | { type: 'label.declassified'; from: Label; to: Label; reason: string; source: string }
  | { type: 'tool.called'; tool: string; callId: string; replayed: boolean }
  | { type: 'tool.result'; tool: string; callId: string; label: Label }
  | { type: 'tool.error'; tool: string; callId: string; message: string }
  | { type: 'handoff'; to: string }
  | { type: 'delegation.started'; to: string; callId: string }
  | { type: 'delegation.completed'; to: string; callId: string; status: string }
  | { type: 'envelope.rejected'; reason: string }
  | { type: 'approval.requested'; approvalId: string; kind: 'tool' | 'handoff' | 'delegate'; subject: string; reasons: string[]; risk: number; expiresAt: number }
  | { type: 'approval.decided'; approvalId: string; subject: string; status: 'approved' | 'denied' | 'expired'; by?: string; note?: string }
  /** The waiting agent acted on the decision, after checking it and the action again. */
  | { type: 'approval.resolved'; approvalId: string; subject: string; outcome: 'approved' | 'denied' | 'expired' | 'invalid'; reason?: string }
  | { type: 'rollback.started'; rollbackId: string; trigger: RollbackTrigger; actions: number; by?: string }
  | { type: 'action.compensated'; rollbackId: string; tool: string; callId: string; status: 'undone' | 'failed' | 'not_undone' | 'already_undone'; message?: string }
  | { type: 'rollback.completed'; rollbackId: string; undone: number; failed: number; notUndone: number }
  | { type: 'run.completed'; output: string }
  | { type: 'run.failed'; error: string }
  | { type: 'run.cancelled'; reason: string }
);
export type RollbackTrigger = 'failure' | 'cancel' | 'operator';
export type RunEventType = RunEvent['type'];
/** An event as its producer writes it: the store stamps the time. */
export type RunEventInput = RunEvent extends infer E ? (E extends RunEvent ? Omit<E, 'at'> : never) : never;

export const TERMINAL_EVENTS: ReadonlySet<RunEventType> = new Set(['run.completed', 'run.failed', 'run.cancelled']);
