/**
 * The guard pipeline's own cost per stage, in process: the support policy (Cedar rules, content
 * scanners, flow, risk) deciding realistic events at 2 KB and 64 KB. `npx tsx bench/pipeline.ts`.
 */
import { fileURLToPath } from 'node:url';
import { createSupportAgents } from '../examples/support/system.js';
import type { GuardEvent } from '../guards/guard-event.js';
import { label } from '../agents/label.js';
import { loadPolicy } from '../guards/policy/load-policy.js';
import { createPolicyPipeline } from '../guards/policy/policy-pipeline.js';
import { fmt, percentile, table } from './stats.js';

const PROSE =
  'Hello, I ordered a pair of noise-cancelling headphones last month and the left ear cup stopped working after a week. ' +
  'I have tried resetting them as the manual says, charging overnight and pairing again, but nothing helps. ';

const text = (bytes: number): string => PROSE.repeat(Math.ceil(bytes / PROSE.length)).slice(0, bytes);

export function eventsFor(bytes: number): Record<string, GuardEvent> {
  const base = {
    runId: 'bench',
    principal: { id: 'ada', roles: ['customer'], attrs: {} },
    agent: 'billing',
    chain: ['triage', 'billing'],
    depth: 0,
    hops: 1,
    label: label({ level: 'confidential', categories: ['pii'] }),
    budget: { tokensLeft: 10_000 },
    agentTools: ['lookup_customer', 'lookup_order', 'issue_refund'],
  };
  const body = text(bytes);
  const history = [
    { source: 'user' as const, content: `Refund ORD-5001 please, ada@example.com. ${body}`, label: label() },
    { source: 'tool' as const, name: 'lookup_order', content: JSON.stringify({ id: 'ORD-5001', customerId: 'C-1001', amountCents: 12900 }), label: label({ level: 'internal', categories: ['financial'] }) },
  ];
  const refund = { name: 'issue_refund', effect: 'write' as const, risk: 'high' as const, requires: ['refunds:issue'], returns: label({ level: 'internal', categories: ['financial'] }) };
  return {
    receive: { ...base, stage: 'receive', content: body },
    tool_call: { ...base, stage: 'tool_call', tool: refund, args: { orderId: 'ORD-5001', amountCents: 12900, reason: body }, history },
    tool_result: { ...base, stage: 'tool_result', tool: refund, args: { orderId: 'ORD-5001' }, content: body },
    handoff: { ...base, stage: 'handoff', target: { agent: 'fraud_check', mode: 'delegate', fanOut: 1 }, content: body },
    output: { ...base, stage: 'output', content: body },
  };
}

export interface StageCost {
  stage: string;
  bytes: number;
  /** Every event from a principal with roles no other has: Cedar decides each one. */
  p50us: number;
  p99us: number;
  /** An equal event again and again: Cedar's answer is the one it keeps for that request. */
  repeatedP50us: number;
  repeatedP99us: number;
  verdict: string;
}

/** Microseconds each event takes, in order. */
async function timings(pipeline: ReturnType<typeof createPolicyPipeline>, events: readonly GuardEvent[]): Promise<{ times: number[]; verdict: string }> {
  const times: number[] = [];
  let verdict = '';
  for (const event of events) {
    const t0 = process.hrtime.bigint();
    verdict = (await pipeline.evaluate(event)).verdict;
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return { times, verdict };
}

export async function benchPipeline(): Promise<{ stages: StageCost[]; table: string }> {
  const policy = await loadPolicy(fileURLToPath(new URL('../examples/support/policy.yaml', import.meta.url)));
  const pipeline = createPolicyPipeline({ ...policy, agents: createSupportAgents() });
  const stages: StageCost[] = [];
  for (const [bytes, iterations] of [
    [2048, 2000],
    [65_536, 200],
  ] as const) {
    for (const [stage, event] of Object.entries(eventsFor(bytes))) {
      // Principals with a role no other event has: warm-up and measurement ask Cedar something new every time.
      const distinct = (round: string) =>
        Array.from({ length: iterations }, (_, i) => ({ ...event, principal: { ...event.principal, id: `${event.principal.id}-${round}-${i}`, roles: [...event.principal.roles, `tier-${round}-${i}`] } }));
      // As many warm-up events as measured ones: new roles reach code (and Cedar memory) that equal requests do not.
      await timings(pipeline, distinct('warm'));
      const fresh = await timings(pipeline, distinct('measured'));
      // Equal events, not the same object: nothing a guard keeps per event object carries over, as in a run.
      const repeated = await timings(pipeline, Array.from({ length: iterations }, () => ({ ...event })));
      stages.push({
        stage,
        bytes,
        p50us: percentile(fresh.times, 50),
        p99us: percentile(fresh.times, 99),
        repeatedP50us: percentile(repeated.times, 50),
        repeatedP99us: percentile(repeated.times, 99),
        verdict: fresh.verdict,
      });
    }
  }
  const rows = stages.map((s) => [s.stage, `${s.bytes / 1024} KB`, fmt(s.p50us, 1), fmt(s.p99us, 1), fmt(s.repeatedP50us, 1), fmt(s.repeatedP99us, 1), s.verdict]);
  const text =
    'Guard pipeline cost per stage — support policy (Cedar, content scanners, flow, risk), in process, µs. ' +
    '"new": every event from a principal with roles no other has, so Cedar decides each; "repeated": an equal event again, which Cedar answers from the decisions it keeps\n\n' +
    table(['stage', 'size', 'new p50 µs', 'new p99 µs', 'repeated p50 µs', 'repeated p99 µs', 'verdict'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'l']);
  return { stages, table: text };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { table: t } = await benchPipeline();
  process.stdout.write(`${t}\n`);
}
