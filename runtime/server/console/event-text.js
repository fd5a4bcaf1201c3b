import { formatLabel, risk } from './format.js';

/** One line for one run event, as the CLI prints progress. */
export function eventText(e) {
  const reasons = (list) => (list?.length ? ` — ${list.join('; ')}` : '');
  switch (e.type) {
    case 'run.started':
      return `run started for ${e.principal}: “${e.input}”`;
    case 'agent.started':
      return `${e.resumed ? 'resumes' : e.kind === 'start' ? 'starts' : e.kind === 'handoff' ? 'takes over' : 'is asked'} (${e.chain.join(' → ')})`;
    case 'model.response':
      return `model ${e.model}: ${[e.text ? 'text' : '', e.toolCalls?.length ? `calls ${e.toolCalls.join(', ')}` : ''].filter(Boolean).join(' + ') || 'empty reply'} (${e.inputTokens} in / ${e.outputTokens} out tokens)`;
    case 'model.error':
      return `model error: ${e.message}${e.willRetry ? ' (will retry)' : ''}`;
    case 'guard.decision':
      return `guard ${e.stage}${e.subject ? ` ${e.subject}` : ''}: ${e.verdict}${e.monitored && e.monitored !== e.verdict ? ` (monitor mode: would ${e.monitored})` : ''}${reasons(e.reasons)}${e.risk > 0 ? ` (risk ${risk(e.risk)})` : ''}`;
    case 'tool.called':
      return `calls tool ${e.tool}${e.replayed ? ' (replayed from its stored result)' : ''}`;
    case 'tool.result':
      return `${e.tool} returned (context now ${formatLabel(e.label)})`;
    case 'tool.error':
      return `tool ${e.tool} failed: ${e.message}`;
    case 'handoff':
      return `hands off to ${e.to}`;
    case 'delegation.started':
      return `asks ${e.to}`;
    case 'delegation.completed':
      return `${e.to} answered (${e.status})`;
    case 'label.declassified':
      return `${e.source}'s answer declassified ${formatLabel(e.from)} → ${formatLabel(e.to)}: ${e.reason}`;
    case 'envelope.rejected':
      return `envelope rejected: ${e.reason}`;
    case 'approval.requested':
      return `waits for approval of ${e.kind} ${e.subject} (risk ${risk(e.risk)})${reasons(e.reasons)}`;
    case 'approval.decided':
      return `${e.subject} ${e.status}${e.by ? ` by ${e.by}` : ''}${e.note ? `: ${e.note}` : ''}`;
    case 'approval.resolved':
      return `resumes after ${e.outcome} ${e.subject}${e.reason ? `: ${e.reason}` : ''}`;
    case 'rollback.started':
      return `rollback of ${e.actions} action(s) (${e.trigger}${e.by ? ` by ${e.by}` : ''})`;
    case 'action.compensated':
      return `${e.tool}: ${e.status}${e.message ? `: ${e.message}` : ''}`;
    case 'rollback.completed':
      return `rollback done: ${e.undone} undone, ${e.failed} failed, ${e.notUndone} not undoable`;
    case 'run.completed':
      return `completed: ${e.output}`;
    case 'run.failed':
      return `failed: ${e.error}`;
    case 'run.cancelled':
      return `cancelled: ${e.reason}`;
    default:
      return String(e.type);
  }
}
