import type { Context } from '@opentelemetry/api';
import { BOTTOM, join } from '../../agents/label.js';
import type { Decision } from '../../guards/decision.js';
import type { ContextItem, GuardEvent } from '../../guards/guard-event.js';
import { ATTR, GUARD_DECISION_EVENT, OPERATION } from '../../tracing/attributes.js';
import { inSpan, labelAttributes, tracer } from '../../tracing/spans.js';
import type { ActivationState } from './activation-state.js';

/** A guard event as a step states it: the activation adds who, where and how far along. */
export type StepGuardEvent = Omit<GuardEvent, 'runId' | 'principal' | 'agent' | 'chain' | 'depth' | 'hops' | 'label'>;

/** Asks the guard pipeline about one step, in a span of its own; the decision is recorded as a run event. */
export async function guard(act: ActivationState, event: StepGuardEvent, subject?: string, parent: Context = act.ctx): Promise<Decision> {
  const span = tracer().startSpan(
    `${OPERATION.APPLY_GUARDRAIL} ${event.stage}`,
    { attributes: { [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.APPLY_GUARDRAIL, [ATTR.PALISADE_GUARD_STAGE]: event.stage, [ATTR.GEN_AI_AGENT_NAME]: act.agent.name } },
    parent,
  );
  return inSpan(span, async () => {
    const decision = await evaluateGuard(act, event, subject);
    if (span.isRecording()) {
      span.addEvent(GUARD_DECISION_EVENT, {
        [ATTR.PALISADE_GUARD_VERDICT]: decision.verdict,
        [ATTR.PALISADE_GUARD_REASONS]: decision.reasons.join('; '),
        [ATTR.PALISADE_GUARD_RISK]: decision.risk,
        ...labelAttributes(act.progress.label),
      });
      span.setAttribute(ATTR.PALISADE_GUARD_VERDICT, decision.verdict);
    }
    return decision;
  });
}

async function evaluateGuard(act: ActivationState, event: StepGuardEvent, subject?: string): Promise<Decision> {
  const e = act.envelope;
  const spent = act.progress.usage.inputTokens + act.progress.usage.outputTokens;
  const decision: Decision & { decided?: string; mode?: string } = await act.options.pipeline.evaluate({
    ...event,
    runId: e.runId,
    principal: e.principal,
    agent: act.agent.name,
    chain: e.chain,
    depth: e.depth,
    hops: e.hops + act.progress.sent,
    label: act.progress.label,
    budget: { tokensLeft: e.budget.tokens !== undefined ? e.budget.tokens - spent : undefined, deadline: e.budget.deadline },
    agentTools: [...act.agent.tools.keys()],
    ...(event.stage === 'tool_call' ? { history: history(act) } : {}),
  });
  act.events.emit({
    type: 'guard.decision',
    stage: event.stage,
    verdict: decision.verdict,
    reasons: decision.reasons,
    risk: decision.risk,
    subject,
    ...(decision.mode === 'monitor' ? { monitored: decision.decided } : {}),
  });
  if (decision.labels) act.progress.label = join(act.progress.label, decision.labels);
  return decision;
}

/** The context as sources with their own labels: the principal's request, tool results, delegates' answers. */
function history(act: ActivationState): ContextItem[] {
  const e = act.envelope;
  // A delegate's question was written by its caller, whose context may hold untrusted content.
  const asked = e.kind === 'delegate' ? e.label : BOTTOM;
  const items: ContextItem[] = [];
  for (const m of act.progress.messages) {
    if (m.role === 'user') items.push({ source: 'user', content: m.content, label: asked });
    else if (m.role === 'tool' && (!m.isError || m.label)) {
      items.push({ source: m.name.startsWith('ask_') ? 'agent' : 'tool', name: m.name, content: m.content, label: m.label ?? BOTTOM, ...(m.flags ? { flags: m.flags } : {}) });
    }
  }
  return items;
}
