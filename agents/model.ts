import { z } from 'zod';
import { LabelSchema } from './label.js';

/** A tool call as the model produced it; `arguments` stays raw JSON text until the tool validates it. */
export const ToolCallSchema = z.object({
  id: z.string().min(1).max(200),
  name: z.string().min(1).max(200),
  arguments: z.string(),
});
export type ToolCall = z.infer<typeof ToolCallSchema>;

export const ChatMessageSchema = z.discriminatedUnion('role', [
  z.object({ role: z.literal('user'), content: z.string() }),
  z.object({
    role: z.literal('assistant'),
    content: z.string().nullable(),
    toolCalls: z.array(ToolCallSchema).optional(),
  }),
  z.object({
    role: z.literal('tool'),
    toolCallId: z.string(),
    name: z.string(),
    content: z.string(),
    isError: z.boolean().optional(),
    /** The label of this result alone (not the context's): guards trace where argument values came from. */
    label: LabelSchema.optional(),
    /** What the result guard found it carries (e.g. `instructions`). */
    flags: z.array(z.string().max(64)).max(16).optional(),
  }),
]);
export type ChatMessage = z.infer<typeof ChatMessageSchema>;
export type AssistantMessage = Extract<ChatMessage, { role: 'assistant' }>;

/** A tool as offered to a model: its name, description and JSON Schema parameters. */
export interface ToolSpec {
  name: string;
  description: string;
  parameters: Record<string, unknown>;
}

export interface ModelRequest {
  /** The agent's instructions; providers place them where their wire format wants them. */
  system: string;
  messages: ChatMessage[];
  tools: ToolSpec[];
  signal?: AbortSignal;
  /** The run this turn belongs to (for providers that attribute or replay per run). */
  runId?: string;
}

export interface TokenUsage {
  inputTokens: number;
  outputTokens: number;
}

export interface ModelResponse {
  content: string | null;
  toolCalls: ToolCall[];
  usage: TokenUsage;
  /** The model that answered, as the server reported it. */
  model: string;
}

/** One interface for every model: OpenAI, Anthropic, OpenAI-compatible servers, scripted and replay. */
export interface ModelProvider {
  /** `gen_ai.provider.name` in OpenTelemetry terms, e.g. `openai`, `anthropic`, `palisade.scripted`. */
  readonly provider: string;
  readonly model: string;
  generate(request: ModelRequest): Promise<ModelResponse>;
}

/** A model call that failed after the provider's own retries; `retryable` says whether a later attempt may succeed. */
export class ModelCallError extends Error {
  override readonly name = 'ModelCallError';
  constructor(
    message: string,
    readonly provider: string,
    readonly status: number | undefined,
    readonly retryable: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
