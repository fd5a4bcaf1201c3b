/** Span attribute names: the OpenTelemetry GenAI semantic conventions, and Palisade's own under `palisade.`. */
export const ATTR = {
  GEN_AI_OPERATION_NAME: 'gen_ai.operation.name',
  GEN_AI_AGENT_NAME: 'gen_ai.agent.name',
  GEN_AI_REQUEST_MODEL: 'gen_ai.request.model',
  GEN_AI_PROVIDER_NAME: 'gen_ai.provider.name',
  GEN_AI_USAGE_INPUT_TOKENS: 'gen_ai.usage.input_tokens',
  GEN_AI_USAGE_OUTPUT_TOKENS: 'gen_ai.usage.output_tokens',
  GEN_AI_TOOL_NAME: 'gen_ai.tool.name',
  GEN_AI_TOOL_CALL_ID: 'gen_ai.tool.call.id',
  PALISADE_RUN_ID: 'palisade.run.id',
  PALISADE_PRINCIPAL_ID: 'palisade.principal.id',
  PALISADE_CHAIN: 'palisade.chain',
  PALISADE_LABEL_LEVEL: 'palisade.label.level',
  PALISADE_LABEL_CATEGORIES: 'palisade.label.categories',
  PALISADE_LABEL_INTEGRITY: 'palisade.label.integrity',
  PALISADE_GUARD_STAGE: 'palisade.guard.stage',
  PALISADE_GUARD_VERDICT: 'palisade.guard.verdict',
  PALISADE_GUARD_REASONS: 'palisade.guard.reasons',
  PALISADE_GUARD_RISK: 'palisade.guard.risk',
} as const;

/** Operation names (`gen_ai.operation.name`), which also begin span names. */
export const OPERATION = {
  INVOKE_AGENT: 'invoke_agent',
  CHAT: 'chat',
  EXECUTE_TOOL: 'execute_tool',
  APPLY_GUARDRAIL: 'apply_guardrail',
} as const;

/** The span event a guard evaluation records its decision with. */
export const GUARD_DECISION_EVENT = 'guard.decision';
/** The root span of a run, started where it is enqueued. */
export const RUN_SPAN = 'palisade.run';
