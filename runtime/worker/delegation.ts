import { z } from 'zod';
import { delegateToolName } from '../../agents/agent.js';
import { join, leq, meet } from '../../agents/label.js';
import type { AssistantMessage, ToolCall } from '../../agents/model.js';
import type { ChildJob, TaskResult } from '../transports/task.js';
import type { ActivationState } from './activation-state.js';
import { approval } from './approval-wait.js';
import { guard } from './guard-step.js';
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
    let answerLabel = result?.label;
    const cap = answerLabel && act.options.declassify?.(pending.agent);
    if (answerLabel && cap && !leq(answerLabel, cap.to)) {
      // Declassification lowers confidentiality only: an untrusted answer stays untrusted.
      const lowered = { ...meet(answerLabel, cap.to), integrity: answerLabel.integrity };
      act.events.emit({ type: 'label.declassified', from: answerLabel, to: lowered, reason: cap.reason, source: pending.agent });
      answerLabel = lowered;
    }
    if (answerLabel) act.progress.label = join(act.progress.label, answerLabel);
    // What the delegate sent counts toward this run's hops, so a limit holds across sibling delegations.
    if (result?.hops) act.progress.sent += result.hops;
    if (result?.usage) {
      act.progress.usage = {
        inputTokens: act.progress.usage.inputTokens + result.usage.inputTokens,
        outputTokens: act.progress.usage.outputTokens + result.usage.outputTokens,
      };
    }
    if (result?.status === 'completed') act.answer(call, result.output ?? '', false, answerLabel);
    else act.answer(call, `Error: '${pending.agent}' could not answer: ${result?.error ?? 'it failed'}`, true);
  }
  act.progress.awaiting = [];
  if (missing.length > 0) act.events.emit({ type: 'model.error', message: `asking ${missing.map((m) => m.agent).join(', ')} again: the delegation was not found`, willRetry: true });
}
