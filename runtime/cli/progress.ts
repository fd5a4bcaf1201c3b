import type { Label } from '../../agents/label.js';
import type { RunEvent } from '../events.js';
import type { Run } from '../run.js';
import type { RunStatus } from '../stores/run-store.js';

export interface FormatOptions {
  /** ANSI colours; off unless asked for (see `wantsColor`). */
  color?: boolean;
  /** Longest quoted text (input, output, error) before it is cut with '…'. */
  maxText?: number;
}

/** Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function wantsColor(stream: NodeJS.WriteStream = process.stdout): boolean {
  return Boolean(stream.isTTY) && !process.env.NO_COLOR;
}

const CODES = { dim: [2, 22], red: [31, 39], green: [32, 39], yellow: [33, 39], cyan: [36, 39], bold: [1, 22] } as const;
type Style = keyof typeof CODES;

// Event fields come from Redis and from models: control characters (ANSI escapes, newlines) must not reach the terminal.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g;

/** One line of untrusted text, without control characters, cut to `max` characters. */
export function clean(text: unknown, max = Infinity): string {
  const line = String(text ?? '')
    .replace(CONTROL, ' ')
    .replace(/ {2,}/g, ' ')
    .trim();
  return line.length > max ? `${line.slice(0, Math.max(0, max - 1)).trimEnd()}…` : line;
}

function formatLabel(label: Label | undefined): string {
  if (!label) return 'unlabelled';
  const parts = [clean(label.level)];
  if (label.categories?.length) parts.push(label.categories.map((c) => clean(c)).join(','));
  if (label.integrity === 'untrusted') parts.push('untrusted');
  return parts.join(' · ');
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * One human line for one run event, for live progress: `  [billing] → tool lookup_customer`. An event
 * whose details were withheld from this reader says so at the end of its line.
 */
export function formatEvent(event: RunEvent, options: FormatOptions = {}): string {
  const paint = (style: Style, text: string): string => (options.color ? `\x1b[${CODES[style][0]}m${text}\x1b[${CODES[style][1]}m` : text);
  const withheld = event.withheld ? ` ${paint('dim', `(${clean(event.withheld.reason, 120)})`)}` : '';
  return describeEvent(event, options, paint) + withheld;
}

function describeEvent(event: RunEvent, options: FormatOptions, paint: (style: Style, text: string) => string): string {
  const max = options.maxText ?? 160;
  const who = paint('cyan', `[${event.agent ? clean(event.agent, 64) : 'run'}]`);
  const line = (text: string, style?: Style): string => `  ${who} ${style ? paint(style, text) : text}`;
  switch (event.type) {
    case 'run.started':
      return line(`▶ run started for ${clean(event.principal, 64)}: "${clean(event.input, max)}"`);
    case 'agent.started': {
      const chain = event.chain.map((a) => clean(a, 64)).join(' → ');
      const how = event.resumed ? 'resumes' : event.kind === 'start' ? 'starts' : event.kind === 'handoff' ? 'takes over' : 'is asked';
      return line(`● ${how} (${chain})`);
    }
    case 'model.response': {
      const what = [event.text ? 'text' : '', event.toolCalls.length ? `calls ${event.toolCalls.map((c) => clean(c, 64)).join(', ')}` : '']
        .filter(Boolean)
        .join(' + ');
      const tokens = `${event.inputTokens} in / ${event.outputTokens} out tokens`;
      return line(`◆ model ${clean(event.model, 64)}: ${what || 'empty reply'} ${paint('dim', `(${tokens})`)}`);
    }
    case 'model.error':
      return line(`! model error: ${clean(event.message, max)}${event.willRetry ? ' (will retry)' : ''}`, 'yellow');
    case 'guard.decision': {
      const subject = event.subject ? ` ${clean(event.subject, 64)}` : '';
      const reasons = event.reasons.length ? ` — ${event.reasons.map((r) => clean(r, max)).join('; ')}` : '';
      const risk = event.risk > 0 ? ` (risk ${event.risk.toFixed(2)})` : '';
      const monitored = event.monitored && event.monitored !== event.verdict ? ` (monitor mode: would ${clean(event.monitored, 32)})` : '';
      const text = `guard ${clean(event.stage, 32)}${subject}: ${clean(event.verdict, 32)}${monitored}${reasons}${risk}`;
      const style: Style = event.verdict === 'allow' ? 'dim' : event.verdict === 'redact' ? 'yellow' : 'red';
      return line(text, style);
    }
    case 'tool.called':
      return line(`→ tool ${clean(event.tool, 64)}${event.replayed ? ' (replayed from its stored result)' : ''}`);
    case 'tool.result':
      // The label is the run's context after this result joined it, not the result's own.
      return line(`← ${clean(event.tool, 64)} returned ${paint('dim', `(context now ${formatLabel(event.label)})`)}`);
    case 'tool.error':
      return line(`✗ tool ${clean(event.tool, 64)}: ${clean(event.message, max)}`, 'yellow');
    case 'handoff':
      return line(`⇢ handoff to ${clean(event.to, 64)}`, 'bold');
    case 'delegation.started':
      return line(`⇉ asks ${clean(event.to, 64)}`, 'bold');
    case 'delegation.completed':
      return line(`⇇ ${clean(event.to, 64)} answered (${clean(event.status, 32)})`, event.status === 'completed' ? undefined : 'yellow');
    case 'label.declassified':
      return line(`↓ ${clean(event.source, 64)}'s answer declassified ${formatLabel(event.from)} → ${formatLabel(event.to)}: ${clean(event.reason, max)}`, 'yellow');
    case 'envelope.rejected':
      return line(`⊘ envelope rejected: ${clean(event.reason, max)}`, 'red');
    case 'approval.requested': {
      const reasons = event.reasons.length ? ` — ${event.reasons.map((r) => clean(r, max)).join('; ')}` : '';
      const until = new Date(event.expiresAt).toISOString();
      return line(`⏸ waits for approval of ${clean(event.kind, 16)} ${clean(event.subject, 64)} (request ${clean(event.approvalId, 64)}, until ${until})${reasons}`, 'yellow');
    }
    case 'approval.decided': {
      const by = event.by ? ` by ${clean(event.by, 64)}` : '';
      const note = event.note ? `: ${clean(event.note, max)}` : '';
      return line(`⚖ ${clean(event.subject, 64)} ${clean(event.status, 16)}${by}${note}`, event.status === 'approved' ? 'green' : 'red');
    }
    case 'approval.resolved':
      return line(`▶ resumes after ${clean(event.outcome, 16)} ${clean(event.subject, 64)}${event.reason ? `: ${clean(event.reason, max)}` : ''}`, event.outcome === 'approved' ? undefined : 'yellow');
    case 'rollback.started':
      return line(`↺ rollback of ${plural(event.actions, 'action')} (${clean(event.trigger, 16)}${event.by ? ` by ${clean(event.by, 64)}` : ''})`, 'bold');
    case 'action.compensated': {
      const what = { undone: 'undone', failed: 'could not be undone', not_undone: 'has no compensation: not undone', already_undone: 'was already undone' }[event.status] ?? clean(event.status, 16);
      return line(`↺ ${clean(event.tool, 64)} ${what}${event.message ? `: ${clean(event.message, max)}` : ''}`, event.status === 'undone' || event.status === 'already_undone' ? undefined : 'yellow');
    }
    case 'rollback.completed':
      return line(`↺ rollback done: ${event.undone} undone, ${event.failed} failed, ${event.notUndone} not undoable`, event.failed + event.notUndone === 0 ? 'green' : 'yellow');
    case 'run.completed':
      return line(`✓ completed: ${clean(event.output, max)}`, 'green');
    case 'run.failed':
      return line(`✗ failed: ${clean(event.error, max)}`, 'red');
    case 'run.cancelled':
      return line(`✗ cancelled: ${clean(event.reason, max)}`, 'red');
    default: {
      // An event type from a newer runtime: show it rather than drop it.
      const unknown = event as { type?: unknown };
      return line(`· ${clean(unknown.type, 64)}`);
    }
  }
}

export interface FollowOptions extends FormatOptions {
  /** Where progress lines go. */
  out: (line: string) => void;
  /** Cancels the run when it has not ended after this long. */
  timeoutMs?: number;
  /** Cancels the run when aborted (Ctrl-C). */
  signal?: AbortSignal;
}

export interface FollowResult {
  runId: string;
  status: RunStatus | 'unknown';
  output?: string;
  error?: string;
  usage?: { inputTokens: number; outputTokens: number };
  timedOut: boolean;
}

/** Prints a run's events as they happen until it ends, then reports how it ended. */
export async function followRun(run: Run, options: FollowOptions): Promise<FollowResult> {
  let timedOut = false;
  const cancel = (reason: string): void => void run.cancel(reason).catch(() => undefined);
  const timer =
    options.timeoutMs !== undefined
      ? setTimeout(() => {
          timedOut = true;
          cancel(`no result within ${options.timeoutMs} ms`);
        }, options.timeoutMs)
      : undefined;
  const onAbort = (): void => cancel('interrupted');
  options.signal?.addEventListener('abort', onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  // The run's end as this reader saw it: a failure's details as far as they are cleared, which the record leaves out.
  let ended: RunEvent | undefined;
  try {
    for await (const event of run.events({ pollMs: 500 })) {
      options.out(formatEvent(event, options));
      if (event.type === 'run.failed') ended = event;
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onAbort);
  }
  const record = await run.record();
  if (!record) return { runId: run.id, status: 'unknown', error: 'the run record is gone (expired or deleted)', timedOut };
  return {
    runId: run.id,
    status: record.status,
    ...(record.output !== undefined ? { output: record.output } : {}),
    ...(ended?.type === 'run.failed' ? { error: ended.error } : record.error !== undefined ? { error: record.error } : {}),
    usage: record.usage,
    timedOut,
  };
}
