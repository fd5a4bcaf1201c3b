import type { z } from 'zod';
import { BOTTOM, join, type Label } from '../../agents/label.js';
import { outcomeFor, type Reader } from '../event-view.js';
import type { RunEvent } from '../events.js';
import type { RunRecord } from '../stores/run-store.js';
import type { RunDetailOut, RunRecordOut } from './schemas.js';

export type RunOut = z.input<typeof RunRecordOut>;
export type RunDetail = z.input<typeof RunDetailOut>;
type ChainSummary = Pick<RunDetail, 'input' | 'label' | 'chain' | 'hops' | 'decisions' | 'labels' | 'approvals'>;

/**
 * A run's record as `reader` may see it: its error with what its `run.failed` event quotes as far as
 * they are cleared, its output for its principal or a reader cleared for the reply's label (known
 * from `events`; without them only the principal gets it).
 */
export const runOut = (run: RunRecord, reader: Reader, events?: readonly RunEvent[]): RunOut => ({
  runId: run.id,
  agent: run.agent,
  status: run.status,
  principal: run.principal,
  createdAt: run.createdAt,
  updatedAt: run.updatedAt,
  ...outcomeFor(run, events, reader),
  usage: run.usage,
});

/**
 * What happened along the chain, from the run's events (as their reader may see them): who acted and
 * in which order, who handed off or delegated to whom, every guard decision, how sensitive the context
 * became, and approvals.
 */
export function summarizeChain(events: readonly RunEvent[]): ChainSummary {
  const summary: ChainSummary = { label: BOTTOM, chain: [], hops: [], decisions: [], labels: [], approvals: [] };
  let context: Label = BOTTOM;
  for (const e of events) {
    const agent = e.agent !== undefined ? { agent: e.agent } : {};
    switch (e.type) {
      case 'run.started':
        summary.input = e.input;
        break;
      case 'agent.started': {
        const from = e.kind === 'start' ? undefined : e.chain[e.chain.length - 2];
        summary.chain.push({ at: e.at, agent: e.agent ?? e.chain[e.chain.length - 1] ?? '?', kind: e.kind, ...(from !== undefined ? { from } : {}), resumed: e.resumed });
        break;
      }
      case 'handoff':
        summary.hops.push({ type: 'handoff', from: e.agent ?? '?', to: e.to, at: e.at });
        break;
      case 'delegation.started':
        summary.hops.push({ type: 'delegation', from: e.agent ?? '?', to: e.to, at: e.at });
        break;
      case 'delegation.completed': {
        const hop = summary.hops.findLast((h) => h.type === 'delegation' && h.to === e.to && h.from === (e.agent ?? '?') && h.status === undefined);
        if (hop) hop.status = e.status;
        break;
      }
      case 'guard.decision':
        summary.decisions.push({
          at: e.at,
          ...agent,
          stage: e.stage,
          ...(e.subject !== undefined ? { subject: e.subject } : {}),
          verdict: e.verdict,
          reasons: e.reasons,
          ...(e.withheld ? { withheld: e.withheld } : {}),
          risk: e.risk,
          ...(e.monitored !== undefined ? { monitored: e.monitored } : {}),
        });
        break;
      case 'tool.result':
        context = join(context, e.label);
        summary.labels.push({ at: e.at, ...agent, cause: 'tool.result', source: e.tool, label: e.label, context });
        break;
      case 'label.declassified':
        // The cap applies to one answer on its way to the caller; what the run has seen stays seen.
        summary.labels.push({ at: e.at, ...agent, cause: 'label.declassified', source: e.source, label: e.to, context });
        break;
      case 'approval.decided':
        summary.approvals.push({ approvalId: e.approvalId, subject: e.subject, status: e.status, ...(e.by !== undefined ? { by: e.by } : {}), at: e.at });
        break;
      default:
        break;
    }
  }
  summary.label = context;
  return summary;
}

/**
 * A Jaeger UI search for the run's spans by their `palisade.run.id` attribute, so the link works
 * without the trace id. The window spans the run's life, with a minute either side.
 */
export function jaegerSearchUrl(base: string, service: string, runId: string, window: { from: number; to: number }): string {
  const url = new URL(`${base.replace(/\/+$/, '')}/search`);
  url.searchParams.set('service', service);
  url.searchParams.set('tags', JSON.stringify({ 'palisade.run.id': runId }));
  url.searchParams.set('lookback', 'custom');
  // Jaeger takes microseconds.
  url.searchParams.set('start', String((window.from - 60_000) * 1000));
  url.searchParams.set('end', String((window.to + 60_000) * 1000));
  return url.toString();
}
