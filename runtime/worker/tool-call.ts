import { SpanStatusCode, trace, type Context } from '@opentelemetry/api';
import { BOTTOM, join, type Label } from '../../agents/label.js';
import type { ToolCall } from '../../agents/model.js';
import type { AnyTool } from '../../agents/tool.js';
import { ATTR, OPERATION } from '../../tracing/attributes.js';
import { inSpan, labelAttributes, setContent, tracer } from '../../tracing/spans.js';
import { fullText, type Stated } from '../events.js';
import type { ActionRecord } from '../stores/run-store.js';
import type { ActivationState } from './activation-state.js';
import { approval } from './approval-wait.js';
import { guard, refusal } from './guard-step.js';
import { deriveMessageId, toolCallKey } from './message-ids.js';

type ToolResult = { content: string; isError: boolean; label: Label; flags?: string[] };

const textOf = (value: unknown): string => (typeof value === 'string' ? value : (JSON.stringify(value) ?? 'null'));

/**
 * What a message left behind (a call's recorded result or effect) turned up on a delivery that found no
 * claim of it: the claim was lost, and going on could repeat what the message did. The activation is refused.
 */
export class ClaimLost extends Error {
  override readonly name = 'ClaimLost';
}

/** Answers one call of a tool: from its recorded result when there is one, else by running it (guarded). */
export async function callTool(act: ActivationState, call: ToolCall, stepKey: string): Promise<void> {
  const tool = act.agent.tools.get(call.name);
  const key = toolCallKey(act.envelope.messageId, stepKey);
  const stored = await act.store.getToolCall(act.runId, key);
  const forged = stored && act.options.auth?.checkToolCall(act.agent.name, key, stored);
  if (forged) {
    // Neither believed nor run again: running it could repeat a side effect.
    act.events.emit({ type: 'envelope.rejected', reason: `tool call ${call.id}: ${forged}` });
    return act.answer(call, `Error: the recorded result of '${call.name}' failed authentication and was discarded.`, true);
  }
  if (stored && act.firstDelivery) throw new ClaimLost(`call ${call.id} to '${call.name}' was answered before (its result is on record), yet the message's claim was gone: it is not acted on again`);
  if (stored) {
    act.events.emit({ type: 'tool.called', tool: call.name, callId: call.id, replayed: true });
    act.progress.label = join(act.progress.label, stored.label);
    return act.answer(call, stored.content, stored.isError, stored.label, stored.flags);
  }
  const result = tool ? await executeTool(act, tool, call, key) : { content: `Error: there is no tool named '${call.name}'.`, isError: true, label: BOTTOM };
  if (!tool) act.events.emit({ type: 'tool.error', tool: call.name, callId: call.id, message: 'unknown tool' });
  await act.store.putToolCall(act.runId, key, act.options.auth ? act.options.auth.sealToolCall(act.agent.name, key, result) : result);
  act.answer(call, result.content, result.isError, result.label, result.flags);
}

async function executeTool(act: ActivationState, tool: AnyTool, call: ToolCall, idempotencyKey: string): Promise<ToolResult> {
  const span = tracer().startSpan(
    `${OPERATION.EXECUTE_TOOL} ${tool.name}`,
    {
      attributes: {
        [ATTR.GEN_AI_OPERATION_NAME]: OPERATION.EXECUTE_TOOL,
        [ATTR.GEN_AI_TOOL_NAME]: tool.name,
        [ATTR.GEN_AI_TOOL_CALL_ID]: call.id,
        [ATTR.GEN_AI_AGENT_NAME]: act.agent.name,
        'palisade.tool.effect': tool.effect,
      },
    },
    act.ctx,
  );
  return inSpan(span, async () => {
    setContent(span, 'gen_ai.tool.call.arguments', call.arguments);
    const result = await runTool(act, tool, call, idempotencyKey, trace.setSpan(act.ctx, span));
    setContent(span, 'gen_ai.tool.call.result', result.content);
    if (span.isRecording()) {
      span.setAttributes(labelAttributes(result.label));
      if (result.isError) span.setStatus({ code: SpanStatusCode.ERROR });
    }
    return result;
  });
}

/** How a call that did not get its tool's output is answered: an error, on record (what it quotes only for readers cleared for it). */
const toolErrors = (act: ActivationState, tool: AnyTool, call: ToolCall) => async (why: string | Stated) => {
  const said: Stated = typeof why === 'string' ? { message: why } : why;
  act.events.emit({ type: 'tool.error', tool: tool.name, callId: call.id, message: said.message, ...(said.quote ? { quote: said.quote } : {}) });
  return { content: `Error: ${fullText(said)}`, isError: true, label: BOTTOM };
};

const metaOf = (tool: AnyTool) => ({ name: tool.name, effect: tool.effect, risk: tool.risk, requires: tool.requires, returns: tool.returns });

async function runTool(act: ActivationState, tool: AnyTool, call: ToolCall, idempotencyKey: string, spanCtx: Context): Promise<ToolResult> {
  const toolError = toolErrors(act, tool, call);
  let raw: unknown;
  try {
    raw = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
  } catch {
    return toolError(`the arguments for '${tool.name}' are not valid JSON`);
  }
  const parsed = tool.input.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    // Validation messages may echo the values the model wrote, from its context.
    return toolError({ message: `invalid arguments for '${tool.name}'`, quote: { text: issues, label: act.progress.label } });
  }
  const args = parsed.data as Record<string, unknown>;
  const meta = metaOf(tool);
  const done = tool.effect === 'read' ? undefined : await recordedEffect(act, tool, idempotencyKey);
  if (done && act.firstDelivery) throw new ClaimLost(`call ${call.id} to '${tool.name}' was made before (it is in the action log), yet the message's claim was gone: it is not acted on again`);
  if (done) {
    // The effect is on record, its result was not (the worker stopped in between): it is not made again.
    act.events.emit({ type: 'tool.called', tool: tool.name, callId: call.id, replayed: true });
    act.progress.label = join(act.progress.label, tool.returns);
    return checkedResult(act, tool, call, args, done.output, spanCtx);
  }
  const priorCalls = act.progress.messages.filter((m) => m.role === 'tool' && m.name === tool.name).length;
  const decision = await guard(act, { stage: 'tool_call', tool: meta, args, priorCalls }, tool.name, spanCtx);
  if (decision.verdict === 'escalate') {
    const shown = JSON.stringify(args);
    const approved = await approval(act, { kind: 'tool', subject: tool.name, callId: call.id, id: deriveMessageId(idempotencyKey, 'approval'), shown, exact: shown, decision });
    if (approved !== 'approved') return toolError({ message: `the call to '${tool.name}' was not approved`, quote: { text: approved.refused, label: act.progress.label } });
  } else if (decision.verdict !== 'allow') {
    // Arguments are not rewritten: a redaction here would run the tool on what the guard withheld.
    return toolError(refusal(`the call to '${tool.name}' was not allowed`, decision));
  }
  act.events.emit({ type: 'tool.called', tool: tool.name, callId: call.id, replayed: false });
  // No effect on the world without its record: the decision that allowed it is in the audit log first.
  if (tool.effect !== 'read') {
    act.events.sendAudit();
    await act.events.awaitAudit();
  }
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let output: unknown;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new Error(`'${tool.name}' did not finish within ${tool.timeoutMs} ms`));
      }, tool.timeoutMs);
    });
    const ctx = { runId: act.runId, agent: act.agent.name, principal: act.envelope.principal, callId: call.id, idempotencyKey, signal: controller.signal };
    act.events.sendEventsSoon();
    output = await Promise.race([Promise.resolve().then(() => tool.run(args, ctx)), timeout]);
  } catch (error) {
    // The error text may come from the outside world (an HTTP body): it carries the tool's labels.
    act.progress.label = join(act.progress.label, tool.returns);
    const failed = await toolError({ message: `'${tool.name}' failed`, quote: { text: error instanceof Error ? error.message : String(error), label: act.progress.label } });
    return { ...failed, label: tool.returns };
  } finally {
    clearTimeout(timer);
  }
  act.progress.label = join(act.progress.label, tool.returns);
  if (tool.effect !== 'read') await recordAction(act, tool, call, idempotencyKey, args, output);
  return checkedResult(act, tool, call, args, output, spanCtx);
}

/** A tool's output as the model gets it, past the tool_result guard. */
async function checkedResult(act: ActivationState, tool: AnyTool, call: ToolCall, args: Record<string, unknown>, output: unknown, spanCtx: Context): Promise<ToolResult> {
  const toolError = toolErrors(act, tool, call);
  const resultDecision = await guard(act, { stage: 'tool_result', tool: metaOf(tool), args, content: textOf(output) }, tool.name, spanCtx);
  const own = resultDecision.labels ? join(tool.returns, resultDecision.labels) : tool.returns;
  if (resultDecision.verdict === 'block' || resultDecision.verdict === 'escalate') {
    return toolError(refusal(`the result of '${tool.name}' was withheld`, resultDecision));
  }
  const content = resultDecision.verdict === 'redact' && resultDecision.content !== undefined ? resultDecision.content : textOf(output);
  act.events.emit({ type: 'tool.result', tool: tool.name, callId: call.id, label: act.progress.label });
  return { content, isError: false, label: own, ...(resultDecision.flags?.length ? { flags: resultDecision.flags } : {}) };
}

/**
 * The effect this call already made, from the run's action log: the first entry under its key that
 * this agent authenticated. One that fails authentication is put on record and not believed.
 */
async function recordedEffect(act: ActivationState, tool: AnyTool, key: string): Promise<ActionRecord | undefined> {
  for (const action of await act.store.actionsOf(act.runId, key)) {
    const mine = action.agent === act.agent.name && action.tool === tool.name && action.runId === act.runId;
    let forged: string | undefined = 'it names another agent, tool or run';
    try {
      if (mine) forged = act.options.auth?.checkAction(action);
    } catch {
      forged = 'it cannot be read';
    }
    if (!forged) return action;
    act.events.emit({ type: 'envelope.rejected', reason: `action log entry ${key}: ${forged}` });
  }
  return undefined;
}

/** Logs a side effect with what a compensation needs, authenticated by this agent. */
async function recordAction(act: ActivationState, tool: AnyTool, call: ToolCall, key: string, args: Record<string, unknown>, output: unknown): Promise<void> {
  const record = {
    runId: act.runId,
    key,
    agent: act.agent.name,
    tool: tool.name,
    callId: call.id,
    principal: act.envelope.principal,
    args,
    output: output === undefined ? null : (JSON.parse(JSON.stringify(output)) as unknown),
    at: Date.now(),
  };
  await act.store.recordAction(act.runId, act.options.auth ? act.options.auth.sealAction(record) : record);
}
