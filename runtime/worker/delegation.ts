import { z } from 'zod';
import { delegateToolName } from '../../agents/agent.js';
import { BOTTOM, flowsTo, join, leq, meet, type Label } from '../../agents/label.js';
import type { AssistantMessage, ToolCall } from '../../agents/model.js';
import { fullText } from '../events.js';
import type { ChildJob, TaskResult } from '../transports/task.js';
import type { ActivationState } from './activation-state.js';
import { approval } from './approval-wait.js';
import { guard, refusal } from './guard-step.js';
import { deriveMessageId } from './message-ids.js';
import { nextEnvelope } from './next-envelope.js';
import { byteSize, type JobData } from './progress.js';

const DelegateArgsSchema = z.object({ input: z.string().min(1) }).strict();

/** Asks another agent a question: the job to wait for, or `undefined` when it was refused (the model is told). */
export async function delegate(act: ActivationState, call: ToolCall, target: string, stepKey: string, fanOut: number): Promise<ChildJob | undefined> {
  let input: string;
  try {
    input = DelegateArgsSchema.parse(JSON.parse(call.arguments)).input;
  } catch {
    act.answer(call, `Error: '${call.name}' takes {"input": "<question>"}.`, true);
    return undefined;
  }
  const decision = await guard(act, { stage: 'handoff', target: { agent: target, mode: 'delegate', fanOut }, content: input }, target);
  if (decision.verdict === 'escalate') {
    const id = deriveMessageId(act.envelope.messageId, `${stepKey}\0approval`);
    const approved = await approval(act, { kind: 'delegate', subject: target, callId: call.id, id, shown: input, exact: input, decision });
    if (approved !== 'approved') {
      act.answer(call, `Error: asking '${target}' was not approved: ${approved.refused}`, true);
      return undefined;
    }
  } else if (decision.verdict === 'block') {
    act.answer(call, `Error: asking '${target}' was not allowed: ${decision.reasons.join('; ') || decision.verdict}`, true);
    return undefined;
  }
  const content = decision.verdict === 'redact' && decision.content !== undefined ? decision.content : input;
  const envelope = nextEnvelope(act, 'delegate', target, stepKey, [{ role: 'user', content }], fanOut);
  const size = byteSize({ envelope });
  if (size > act.options.maxMessageBytes) {
    act.answer(call, `Error: the question (${size} bytes) is over the message limit of ${act.options.maxMessageBytes}.`, true);
    return undefined;
  }
  act.progress.sent += 1;
  act.progress.awaiting = [...act.progress.awaiting, { callId: call.id, agent: target, jobId: envelope.messageId }];
  act.events.emit({ type: 'delegation.started', to: target, callId: call.id });
  return { queue: target, jobId: envelope.messageId, payload: { envelope } satisfies JobData };
}

/** Answers the delegations the activation waited for with what the delegates answered. */
export async function collectDelegations(act: ActivationState): Promise<void> {
  const results = await act.task.childResults();
  const assistant = [...act.progress.messages].reverse().find((m): m is AssistantMessage => m.role === 'assistant');
  const missing = act.progress.awaiting.filter((p) => !results.has(p.jobId));
  for (const pending of act.progress.awaiting) {
    // A child that was never added (the worker died first) is asked again: its job id is deterministic.
    if (!results.has(pending.jobId)) continue;
    let result: TaskResult | undefined = results.get(pending.jobId);
    const auth = act.options.auth;
    // An outcome without an answer (cancelled, refused before the delegate ran) carries nothing to believe and no MAC.
    if (auth && result && result.status !== 'completed' && !result.auth) result = { status: result.status, error: `no answer (${result.status})` };
    const forged = result?.auth || result?.status === 'completed' ? auth?.checkResult(pending.agent, act.agent.name, pending.jobId, result!) : undefined;
    if (forged) {
      act.events.emit({ type: 'envelope.rejected', reason: `answer of '${pending.agent}': ${forged}` });
      result = { status: 'rejected', error: 'its answer failed authentication' };
    }
    const call = assistant?.toolCalls?.find((c) => c.id === pending.callId) ?? { id: pending.callId, name: delegateToolName(pending.agent), arguments: '{}' };
    act.events.emit({ type: 'delegation.completed', to: pending.agent, callId: pending.callId, status: result?.status ?? 'failed' });
    // Declassification comes first: it lowers the answer's label where the policy allows, and the check is of what is left.
    let answerLabel = result?.label;
    const cap = answerLabel && act.options.declassify?.(pending.agent);
    if (answerLabel && cap && !leq(answerLabel, cap.to)) {
      // Declassification lowers confidentiality only: an untrusted answer stays untrusted.
      const lowered = { ...meet(answerLabel, cap.to), integrity: answerLabel.integrity };
      act.events.emit({ type: 'label.declassified', from: answerLabel, to: lowered, reason: cap.reason, source: pending.agent });
      answerLabel = lowered;
    }
    // What the delegate sent counts toward this run's hops, so a limit holds across sibling delegations.
    if (result?.hops) act.progress.sent += result.hops;
    if (result?.usage) {
      act.progress.usage = {
        inputTokens: act.progress.usage.inputTokens + result.usage.inputTokens,
        outputTokens: act.progress.usage.outputTokens + result.usage.outputTokens,
      };
    }
    // Text written by the delegate (an answer, or a failure that may quote its context) joins this context only past the guards.
    const said = result?.status === 'completed' ? (result.output ?? '') : answerLabel ? (result?.error ?? '') : undefined;
    if (said === undefined) {
      act.answer(call, `Error: '${pending.agent}' could not answer: ${result?.error ?? 'it failed'}`, true);
      continue;
    }
    const admitted = await admitAnswer(act, call, pending.agent, said, answerLabel ?? BOTTOM);
    if (!admitted) continue;
    if (result?.status === 'completed') act.answer(call, admitted.content, false, admitted.label, admitted.flags);
    else act.answer(call, `Error: '${pending.agent}' could not answer: ${admitted.content || 'it failed'}`, true);
  }
  act.progress.awaiting = [];
  if (missing.length > 0) act.events.emit({ type: 'model.error', message: `asking ${missing.map((m) => m.agent).join(', ')} again: the delegation was not found`, willRetry: true });
}

const NO_APPROVAL = "approval is not available for a delegate's answer";

/**
 * A delegate's answer as it may join this context, or `undefined` when it was withheld (the model is
 * told, and the context's label does not rise). The guards are asked at the `handoff` stage with this
 * agent as the sink, about the label the context would have with the answer joined: the flow guard
 * holds it to this agent's clearance, as a handoff to it would be held. A decision that asks for
 * approval withholds the answer too. Deterministic in the checkpoint it runs from, so a redelivery
 * that collects the answers again decides the same.
 */
async function admitAnswer(act: ActivationState, call: ToolCall, from: string, text: string, answerLabel: Label): Promise<{ content: string; label: Label; flags?: string[] } | undefined> {
  const before = act.progress.label;
  act.progress.label = join(before, answerLabel);
  const decision = await guard(act, { stage: 'handoff', target: { agent: act.agent.name, mode: 'delegate', answerFrom: from }, content: text }, delegateToolName(from));
  if (decision.verdict === 'block' || decision.verdict === 'escalate') {
    // Nothing of the answer joins, not even what the guards found in it.
    act.progress.label = before;
    const why = decision.verdict === 'escalate' ? { ...decision, stated: [...decision.stated, NO_APPROVAL], reasons: [...decision.reasons, NO_APPROVAL] } : decision;
    const said = refusal(`the answer of '${from}' was withheld`, why);
    act.events.emit({ type: 'tool.error', tool: call.name, callId: call.id, message: said.message, ...(said.quote ? { quote: said.quote } : {}) });
    // What other guards said may quote the answer: the model hears it only when it tells no more than the context already held.
    const told = !said.quote || flowsTo(said.quote.label, before) ? fullText(said) : said.message;
    act.answer(call, `Error: ${told}`, true);
    return undefined;
  }
  // Past every guard (the flow guard allowed the joined label): the answer joins with its own label and what the guards found in it.
  const content = decision.verdict === 'redact' && decision.content !== undefined ? decision.content : text;
  return { content, label: decision.labels ? join(answerLabel, decision.labels) : answerLabel, ...(decision.flags?.length ? { flags: decision.flags } : {}) };
}
