import type { ToolCall } from '../../agents/model.js';
import type { TaskOutcome } from '../transports/task.js';
import type { ActivationState } from './activation-state.js';
import { approval } from './approval-wait.js';
import { guard } from './guard-step.js';
import { deriveMessageId } from './message-ids.js';
import { nextEnvelope } from './next-envelope.js';
import { byteSize, type JobData } from './progress.js';

/** Hands the conversation to another agent, which continues it; `undefined` when the handoff was refused (the model is told). */
export async function handOff(act: ActivationState, call: ToolCall, target: string, stepKey: string, unanswered: ToolCall[]): Promise<TaskOutcome | undefined> {
  const conversation = conversationText(act);
  const decision = await guard(act, { stage: 'handoff', target: { agent: target, mode: 'handoff' }, content: conversation }, target);
  if (decision.verdict === 'escalate') {
    const id = deriveMessageId(act.envelope.messageId, `${stepKey}\0approval`);
    const approved = await approval(act, { kind: 'handoff', subject: target, callId: call.id, id, shown: conversation, exact: conversation, decision });
    if (approved !== 'approved') {
      act.answer(call, `Error: the handoff to '${target}' was not approved: ${approved.refused}`, true);
      return undefined;
    }
  } else if (decision.verdict !== 'allow') {
    // A handoff carries the whole conversation, which is not rewritten: anything but allow stops it.
    act.answer(call, `Error: the handoff to '${target}' was not allowed: ${decision.reasons.join('; ') || decision.verdict}`, true);
    return undefined;
  }
  const before = act.progress.messages;
  act.answer(call, `Transferred to ${target}.`);
  // Model APIs reject a conversation with unanswered calls, and the receiver must not inherit them.
  for (const other of unanswered) if (!act.progress.messages.some((m) => m.role === 'tool' && m.toolCallId === other.id)) act.answer(other, 'Not executed: the conversation was handed off.', true);
  const envelope = nextEnvelope(act, 'handoff', target, stepKey, act.progress.messages);
  // Checked here: the receiver would refuse it unread, and could not tell anyone why.
  const size = byteSize({ envelope });
  if (size > act.options.maxMessageBytes) {
    act.progress.messages = before;
    act.answer(call, `Error: the conversation (${size} bytes) is over the message limit of ${act.options.maxMessageBytes} and cannot be handed to '${target}'.`, true);
    return undefined;
  }
  act.progress.sent += 1;
  await act.options.transport.enqueue(envelope.runId, target, envelope.messageId, { envelope } satisfies JobData);
  act.events.emit({ type: 'handoff', to: target });
  return { type: 'done', result: { status: 'handed_off', label: act.progress.label, usage: act.progress.usage } };
}

/** What a handoff passes on, as text for the content guards: every message of the conversation. */
function conversationText(act: ActivationState): string {
  return act.progress.messages.map((m) => (m.role === 'assistant' ? [m.content ?? '', ...(m.toolCalls ?? []).map((c) => c.arguments)].join('\n') : m.content)).join('\n');
}
