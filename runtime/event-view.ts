import { BOTTOM, flowsTo, join, type Label } from '../agents/label.js';
import type { Principal } from '../agents/principal.js';
import { replyClearance } from '../guards/builtin/flow.js';
import type { Policy } from '../guards/policy/policy.js';
import { fullText, type Quote, type RunEvent, type Withheld } from './events.js';
import type { RunRecord } from './stores/run-store.js';

/** Who reads a run, and how far they are cleared. */
export interface Reader {
  /** The highest label of what they may read; `undefined` without a policy, where nothing is withheld (nor is anything from the reply). */
  clearance: Label | undefined;
  /** The run's own principal: the reply was given to them, so they get the output whatever its label. */
  owner: boolean;
}

/** How a process that knows the policy clears a reader; `undefined` when it has no policy. */
export type ClearanceOf = (reader: Principal) => Label | undefined;

export const WITHHELD: Withheld = Object.freeze({ code: 'above_clearance', reason: 'details withheld: they may quote content above your clearance' });

/**
 * How the policy clears a reader of a run: as a reply to them (their roles' `clearance.roles`, else
 * `clearance.reply`). An operator sees more than the run's principal only when the policy clears the
 * operator's roles for more.
 */
export function clearanceFor(policy: Policy | undefined): ClearanceOf | undefined {
  return policy && ((reader) => replyClearance(policy.clearance, reader.roles));
}

/** `caller` as a reader of a run of `owner`; a caller who cannot be named (a run without a record) is cleared for public text only. */
export function readerOf(caller: Principal | undefined, owner: Principal | undefined, clearanceOf: ClearanceOf | undefined): Reader {
  if (!caller) return { clearance: clearanceOf ? BOTTOM : undefined, owner: false };
  return { clearance: clearanceOf?.(caller), owner: owner !== undefined && caller.id === owner.id && caller.tenant === owner.tenant };
}

/** Whether `reader` may read content of `label` (everything, without a policy). */
export const cleared = (reader: Reader, label: Label | undefined): boolean => reader.clearance === undefined || (label !== undefined && flowsTo(label, reader.clearance));

type Quoting = Extract<RunEvent, { quote?: Quote }>;

/** Joins a quote the reader is cleared for to the event's own text. */
function withQuote(event: Quoting, quote: Quote): RunEvent {
  switch (event.type) {
    case 'guard.decision':
    case 'approval.requested':
      return { ...event, reasons: [...event.reasons, quote.text] };
    case 'run.failed':
      return { ...event, error: fullText({ message: event.error, quote }) };
    case 'approval.resolved':
      return { ...event, reason: fullText({ message: event.reason ?? '', quote }) };
    case 'approval.decided':
      return { ...event, note: quote.text };
    default:
      return { ...event, message: fullText({ message: event.message ?? '', quote }) };
  }
}

/**
 * An event as `reader` may see it: a quote they are cleared for joined to the event's text, one they
 * are not replaced by {@link WITHHELD}; a reply's output for its principal, or a reader cleared for its label.
 */
export function eventFor(event: RunEvent, reader: Reader): RunEvent {
  if (event.type === 'run.completed') return reader.owner || cleared(reader, event.label) ? event : { ...event, output: '', withheld: WITHHELD };
  if (!('quote' in event) || event.quote === undefined) return event;
  const { quote, ...rest } = event;
  // An event of a kind this version does not know to carry a quote gets no quote at all.
  if (!cleared(reader, quote.label) || !isQuoting(rest)) return { ...rest, withheld: WITHHELD } as RunEvent;
  return withQuote(rest, quote);
}

const QUOTING: ReadonlySet<string> = new Set(['model.error', 'guard.decision', 'tool.error', 'approval.requested', 'approval.decided', 'approval.resolved', 'action.compensated', 'run.failed']);
const isQuoting = (event: { type: string }): event is Quoting => QUOTING.has(event.type);

/**
 * A run's output and error as `reader` may see them. The record holds our own words only; the
 * `run.failed` event adds what they quote, and the `run.completed` event the label of the reply.
 */
export function outcomeFor(run: Pick<RunRecord, 'status' | 'output' | 'error'>, events: readonly RunEvent[] | undefined, reader: Reader): { output?: string; error?: string; withheld?: Withheld } {
  const ended = events?.findLast((e) => e.type === (run.status === 'failed' ? 'run.failed' : 'run.completed'));
  const error = ended?.type === 'run.failed' ? eventFor(ended, reader) : undefined;
  const shownError = error?.type === 'run.failed' ? error.error : run.error;
  const outputShown = run.output === undefined || reader.owner || (ended?.type === 'run.completed' && cleared(reader, ended.label)) || reader.clearance === undefined;
  const withheld = error?.withheld ?? (outputShown ? undefined : WITHHELD);
  return {
    ...(outputShown && run.output !== undefined ? { output: run.output } : {}),
    ...(shownError !== undefined ? { error: shownError } : {}),
    ...(withheld ? { withheld } : {}),
  };
}

/** The most sensitive a run's context has been, from its events: `from` with every tool result joined in. */
export function contextLabel(events: readonly RunEvent[], from: Label = BOTTOM): Label {
  return events.reduce((label, e) => (e.type === 'tool.result' ? join(label, e.label) : label), from);
}
