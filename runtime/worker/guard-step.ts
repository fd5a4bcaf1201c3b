import type { Context } from '@opentelemetry/api';
import { BOTTOM, join, type Label } from '../../agents/label.js';
import type { Decision } from '../../guards/decision.js';
import type { ToolCall } from '../../agents/model.js';
import type { ContextItem, GuardEvent } from '../../guards/guard-event.js';
import type { GuardResult } from '../../guards/pipeline.js';
import { ATTR, GUARD_DECISION_EVENT, OPERATION } from '../../tracing/attributes.js';
import { inSpan, labelAttributes, tracer } from '../../tracing/spans.js';
import type { Quote, Stated } from '../events.js';
import type { ActivationState } from './activation-state.js';

/** A guard event as a step states it: the activation adds who, where and how far along. */
export type StepGuardEvent = Omit<GuardEvent, 'runId' | 'principal' | 'agent' | 'chain' | 'depth' | 'hops' | 'label'>;

/**
 * A decision with its reasons sorted by where they come from: `stated`, the fixed templates of our own
 * guards (for any reader of the run and the audit log), and `quote`, what other guards said or threw
 * and what ours quote, with the label of what they judged.
 */
export interface StepDecision extends Decision {
  stated: string[];
  quote?: Quote;
}

/** Asks the guard pipeline about one step, in a span of its own; the decision is recorded as a run event. */
export async function guard(act: ActivationState, event: StepGuardEvent, subject?: string, parent: Context = act.ctx): Promise<StepDecision> {
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
        // Spans carry no content unless the operator opts in: our own reasons only.
        [ATTR.PALISADE_GUARD_REASONS]: decision.stated.join('; '),
        [ATTR.PALISADE_GUARD_RISK]: decision.risk,
        ...labelAttributes(act.progress.label),
      });
      span.setAttribute(ATTR.PALISADE_GUARD_VERDICT, decision.verdict);
    }
    return decision;
  });
}

async function evaluateGuard(act: ActivationState, event: StepGuardEvent, subject?: string): Promise<StepDecision> {
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
    ...(event.stage === 'tool_call' ? { history: contextHistory(act) } : {}),
  });
  if (decision.labels) act.progress.label = join(act.progress.label, decision.labels);
  const sorted = { ...decision, ...sortReasons(decision, act.progress.label) };
  act.events.emit({
    type: 'guard.decision',
    stage: event.stage,
    verdict: decision.verdict,
    reasons: sorted.stated,
    ...(sorted.quote ? { quote: sorted.quote } : {}),
    risk: decision.risk,
    subject,
    ...(decision.mode === 'monitor' ? { monitored: decision.decided } : {}),
  });
  return sorted;
}

/**
 * Our own guards' fixed reasons apart from everything else, which is quoted with the label of what
 * was judged (the context with what the guards found in the step). A pipeline that does not say
 * which guard gave which reason has all its reasons quoted.
 */
function sortReasons(decision: Decision & { results?: readonly GuardResult[] }, label: Label): Pick<StepDecision, 'stated' | 'quote'> {
  const stated: string[] = [];
  const quoted: string[] = [];
  if (!Array.isArray(decision.results)) quoted.push(...decision.reasons);
  for (const r of decision.results ?? []) {
    if (r.error !== undefined) {
      // What a guard threw may quote what it was judging.
      stated.push(`${r.guard}: ${r.failedOpen ? 'failed open' : 'failed, so the step is blocked'}`);
      quoted.push(`${r.guard}: ${r.error}`);
      continue;
    }
    const own = [...(r.fixedReasons ? [] : r.reasons), ...(r.quoted ?? [])];
    if (r.fixedReasons) stated.push(...r.reasons.map((reason) => `${r.guard}: ${reason}`));
    // Who said what stays on record, in our words, when what they said is quoted.
    else if (own.length > 0) stated.push(`${r.guard}: ${r.verdict}`);
    quoted.push(...own.map((reason) => `${r.guard}: ${reason}`));
  }
  return { stated, ...(quoted.length > 0 ? { quote: { text: quoted.join('; '), label } } : {}) };
}

/** Why a step was refused, as `what: reasons`: our own guards' reasons stated, the rest quoted; the model is told every reason in order. */
export function refusal(what: string, d: StepDecision): Stated {
  const told = `${what}: ${d.reasons.join('; ') || d.verdict}`;
  if (d.stated.length === 0 && d.quote) return { message: what, quote: d.quote, told };
  return { message: `${what}: ${d.stated.join('; ') || d.verdict}`, ...(d.quote ? { quote: d.quote } : {}), told };
}

/** The context as sources with their own labels: the principal's request, tool results, delegates' answers. */
export function contextHistory(act: ActivationState): ContextItem[] {
  const e = act.envelope;
  // A delegate's question was written by its caller, whose context may hold untrusted content.
  const asked = e.kind === 'delegate' ? e.label : BOTTOM;
  const items: ContextItem[] = [];
  // What each result answers: a result may repeat its call's arguments, which are the model's words.
  const calls = new Map<string, ToolCall>();
  for (const m of act.progress.messages) {
    if (m.role === 'user') items.push({ source: 'user', content: m.content, label: asked });
    else if (m.role === 'assistant') for (const c of m.toolCalls ?? []) calls.set(c.id, c);
    else if (m.role === 'tool' && (!m.isError || m.label)) {
      const call = calls.get(m.toolCallId);
      const fields = act.agent.tools.get(m.name)?.trustedFields;
      items.push({
        source: m.name.startsWith('ask_') ? 'agent' : 'tool',
        name: m.name,
        content: m.content,
        label: m.label ?? BOTTOM,
        ...(m.flags ? { flags: m.flags } : {}),
        ...(call ? { call: { args: argumentsOf(call) } } : {}),
        ...(fields?.length ? { trustedFields: fields } : {}),
      });
    }
  }
  return items;
}

/** A call's arguments as an object; what is not one (the model may write anything) is kept as text, which results may still echo. */
function argumentsOf(call: ToolCall): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(call.arguments);
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : { value: parsed };
  } catch {
    return { text: call.arguments };
  }
}
