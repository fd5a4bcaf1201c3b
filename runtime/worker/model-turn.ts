import { SpanKind } from '@opentelemetry/api';
import { delegateToolName, handoffToolName } from '../../agents/agent.js';
import { ModelCallError, type AssistantMessage, type ModelResponse, type ToolCall, type ToolSpec } from '../../agents/model.js';
import { ATTR, OPERATION } from '../../tracing/attributes.js';
import { recordError, setContent, tracer } from '../../tracing/spans.js';
import { RetryableError } from '../transports/task.js';
import type { ActivationState } from './activation-state.js';
import { recordTurn } from './checkpoint.js';

/**
 * A model's tool calls as the conversation can carry them: a call with a missing or malformed
 * name, id or arguments is kept (the model is told it failed) under a placeholder name, a fresh id
 * and its arguments as text, so one bad reply cannot poison every later hop.
 */
function wellFormedCalls(calls: unknown, turn: number): ToolCall[] {
  if (!Array.isArray(calls)) return [];
  const seen = new Set<string>();
  return calls.map((raw, i) => {
    const c = (raw ?? {}) as { id?: unknown; name?: unknown; arguments?: unknown };
    const name = typeof c.name === 'string' && /^[\w.-]{1,200}$/.test(c.name) ? c.name : 'invalid_tool_name';
    let id = typeof c.id === 'string' && c.id.length > 0 && c.id.length <= 200 ? c.id : `call_${turn}_${i}`;
    if (seen.has(id)) id = `${id.slice(0, 180)}_dup${i}`;
    seen.add(id);
    const args = typeof c.arguments === 'string' ? c.arguments : (JSON.stringify(c.arguments ?? {}) ?? '{}');
    return { id, name, arguments: args };
  });
}

function toolSpecs(act: ActivationState): ToolSpec[] {
  const specs = [...act.agent.tools.values()].map((t) => t.spec);
  const describe = (name: string) => act.options.agents.get(name)?.description ?? name;
  // A delegated agent answers its caller; handing the conversation elsewhere would orphan the caller.
  if (act.envelope.kind !== 'delegate') {
    for (const target of act.agent.handoffs) {
      specs.push({
        name: handoffToolName(target),
        description: `Hand the conversation over to the '${target}' agent, which continues it. ${describe(target)}`,
        parameters: { type: 'object', properties: { reason: { type: 'string' } }, additionalProperties: false },
      });
    }
  }
  for (const target of act.agent.delegates) {
    specs.push({
      name: delegateToolName(target),
      description: `Ask the '${target}' agent and wait for its answer. ${describe(target)}`,
      parameters: { type: 'object', properties: { input: { type: 'string', description: 'What to ask' } }, required: ['input'], additionalProperties: false },
    });
  }
  return specs;
}

/** Asks the model for the next reply and adds it to the conversation, saved with the turn. */
export async function modelTurn(act: ActivationState): Promise<void> {
  let response: ModelResponse;
  const model = act.agent.model;
  const span = tracer().startSpan(
    `${OPERATION.CHAT} ${model.model}`,
    {
      kind: SpanKind.CLIENT,
      attributes: {
        [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.CHAT,
        [ATTR.GEN_AI_REQUEST_MODEL]: model.model,
        [ATTR.GEN_AI_PROVIDER_NAME]: model.provider,
        [ATTR.GEN_AI_AGENT_NAME]: act.agent.name,
      },
    },
    act.ctx,
  );
  try {
    // Serialised only for a span that keeps it: a hop's conversation costs a stringify otherwise thrown away.
    setContent(span, 'gen_ai.input.messages', () => JSON.stringify(act.progress.messages));
    act.events.sendEventsSoon();
    response = await model.generate({ system: act.agent.instructions, messages: act.progress.messages, tools: toolSpecs(act), runId: act.runId });
    setContent(span, 'gen_ai.output.messages', () => JSON.stringify([{ role: 'assistant', content: response.content, toolCalls: response.toolCalls }]));
    if (span.isRecording()) {
      span.setAttributes({
        'gen_ai.response.model': response.model,
        [ATTR.GEN_AI_USAGE_INPUT_TOKENS]: response.usage.inputTokens,
        [ATTR.GEN_AI_USAGE_OUTPUT_TOKENS]: response.usage.outputTokens,
      });
    }
  } catch (error) {
    recordError(span, error);
    if (error instanceof ModelCallError && error.retryable) throw new RetryableError(`model call failed: ${error.message}`, { cause: error });
    throw new Error(`model call failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  } finally {
    span.end();
  }
  act.progress.turns += 1;
  act.progress.usage = {
    inputTokens: act.progress.usage.inputTokens + response.usage.inputTokens,
    outputTokens: act.progress.usage.outputTokens + response.usage.outputTokens,
  };
  const toolCalls = wellFormedCalls(response.toolCalls, act.progress.turns);
  const content = typeof response.content === 'string' ? response.content : null;
  const message: AssistantMessage = { role: 'assistant', content, ...(toolCalls.length ? { toolCalls } : {}) };
  act.progress.messages = [...act.progress.messages, message];
  act.events.emit({
    type: 'model.response',
    model: response.model,
    toolCalls: toolCalls.map((c) => c.name),
    text: Boolean(content),
    inputTokens: response.usage.inputTokens,
    outputTokens: response.usage.outputTokens,
  });
  // Saved with the turn: from here a redelivery replays this reply instead of asking the model again.
  await recordTurn(act, response.usage);
}
