import { inspect } from 'node:util';
import OpenAI from 'openai';
import type {
  ChatCompletion,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageParam,
  ChatCompletionTool,
} from 'openai/resources/chat/completions';
import {
  ModelCallError,
  type ChatMessage,
  type ModelProvider,
  type ModelRequest,
  type ModelResponse,
  type ToolCall,
} from '../model.js';

export interface OpenAIModelOptions {
  model: string;
  /** Defaults to `OPENAI_API_KEY`. */
  apiKey?: string;
  /** Defaults to `OPENAI_BASE_URL`; pointing it elsewhere makes any OpenAI-compatible server work. */
  baseURL?: string;
  /** Per attempt; the SDK retries timeouts. Defaults to 60 000. */
  timeoutMs?: number;
  /** Retries the SDK makes on 408/409/429/5xx and connection errors, honouring retry-after. Defaults to 3. */
  maxRetries?: number;
  temperature?: number;
  /** A preconfigured client; when given, apiKey, baseURL, timeoutMs and maxRetries are ignored. */
  client?: OpenAI;
}

const PROVIDER = 'openai';

/** Chat Completions with function tools: the wire format OpenAI and most compatible servers share. */
export class OpenAIModel implements ModelProvider {
  readonly provider = PROVIDER;
  readonly model: string;
  private readonly client: OpenAI;
  private readonly temperature: number | undefined;

  constructor(options: OpenAIModelOptions) {
    this.model = options.model;
    this.temperature = options.temperature;
    this.client =
      options.client ??
      new OpenAI({
        apiKey: options.apiKey ?? process.env.OPENAI_API_KEY,
        baseURL: options.baseURL ?? process.env.OPENAI_BASE_URL,
        timeout: options.timeoutMs ?? 60_000,
        maxRetries: options.maxRetries ?? 3,
      });
  }

  async generate(request: ModelRequest): Promise<ModelResponse> {
    const params: ChatCompletionCreateParamsNonStreaming = {
      model: this.model,
      messages: toOpenAIMessages(request.system, request.messages),
    };
    // The API rejects an empty `tools` array, and `tool_choice` without tools.
    if (request.tools.length > 0) {
      params.tools = request.tools.map(
        (tool): ChatCompletionTool => ({
          type: 'function',
          function: { name: tool.name, description: tool.description, parameters: tool.parameters },
        }),
      );
      params.tool_choice = 'auto';
    }
    if (this.temperature !== undefined) params.temperature = this.temperature;

    let completion: ChatCompletion;
    try {
      completion = await this.client.chat.completions.create(params, { signal: request.signal });
    } catch (error) {
      throw toModelCallError(error, this.client.apiKey);
    }
    return fromCompletion(completion);
  }
}

function toOpenAIMessages(system: string, messages: ChatMessage[]): ChatCompletionMessageParam[] {
  const out: ChatCompletionMessageParam[] = [];
  if (system) out.push({ role: 'system', content: system });
  for (const message of messages) {
    switch (message.role) {
      case 'user':
        out.push({ role: 'user', content: message.content });
        break;
      case 'assistant':
        out.push({
          role: 'assistant',
          content: message.content,
          // An empty `tool_calls` array is rejected, so omit it when the turn had none.
          ...(message.toolCalls?.length
            ? {
                tool_calls: message.toolCalls.map((call) => ({
                  id: call.id,
                  type: 'function' as const,
                  function: { name: call.name, arguments: call.arguments },
                })),
              }
            : {}),
        });
        break;
      case 'tool':
        // Chat Completions has no error flag on tool results; the content has to say it.
        out.push({ role: 'tool', tool_call_id: message.toolCallId, content: message.content });
        break;
    }
  }
  return out;
}

function fromCompletion(completion: ChatCompletion): ModelResponse {
  const choice = completion.choices[0];
  if (!choice) {
    throw new ModelCallError('OpenAI response had no choices', PROVIDER, undefined, false);
  }
  const toolCalls: ToolCall[] = [];
  for (const call of choice.message.tool_calls ?? []) {
    // Custom (free-text) tools are never offered, so only function calls can answer ours.
    if (call.type === 'function') {
      toolCalls.push({ id: call.id, name: call.function.name, arguments: call.function.arguments });
    }
  }
  return {
    content: choice.message.content ?? null,
    toolCalls,
    usage: {
      // Compatible servers do not all report usage.
      inputTokens: completion.usage?.prompt_tokens ?? 0,
      outputTokens: completion.usage?.completion_tokens ?? 0,
    },
    model: completion.model,
  };
}

/** Runs once the SDK has stopped retrying, so `retryable` is advice for a later, separate attempt. */
function toModelCallError(error: unknown, apiKey: string | null): ModelCallError {
  const redact = (text: string): string => (apiKey ? text.split(apiKey).join('[redacted]') : text);
  // Servers sometimes echo the key back in an error; keep the SDK error as cause only if it cannot leak it.
  const cause = apiKey && inspect(error, { depth: 6 }).includes(apiKey) ? undefined : error;
  const fail = (message: string, status: number | undefined, retryable: boolean): ModelCallError =>
    new ModelCallError(redact(`OpenAI chat completion failed: ${message}`), PROVIDER, status, retryable, { cause });

  // Subclasses of APIError, so they are checked first.
  if (error instanceof OpenAI.APIUserAbortError) return fail('request aborted', undefined, false);
  if (error instanceof OpenAI.APIConnectionError) return fail(error.message, undefined, true);
  if (error instanceof OpenAI.APIError) {
    const status = error.status;
    const retryable = status === 408 || status === 429 || (status !== undefined && status >= 500);
    return fail(error.message, status, retryable);
  }
  return fail(error instanceof Error ? error.message : String(error), undefined, false);
}
