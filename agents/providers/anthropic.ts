import { inspect } from 'node:util';
import Anthropic from '@anthropic-ai/sdk';
import type {
  ContentBlockParam,
  Message,
  MessageCreateParamsNonStreaming,
  MessageParam,
  Tool,
} from '@anthropic-ai/sdk/resources/messages';
import {
  ModelCallError,
  type ChatMessage,
  type ModelProvider,
  type ModelRequest,
  type ModelResponse,
  type ToolCall,
} from '../model.js';

export interface AnthropicModelOptions {
  model: string;
  /** Defaults to `ANTHROPIC_API_KEY`. */
  apiKey?: string;
  /** Defaults to `ANTHROPIC_BASE_URL`. */
  baseURL?: string;
  /** The Messages API requires a cap on output tokens. Defaults to 1024. */
  maxTokens?: number;
  /** Per attempt; the SDK retries timeouts. Defaults to 60 000. */
  timeoutMs?: number;
  /** Retries the SDK makes on 408/409/429/5xx and connection errors, honouring retry-after. Defaults to 3. */
  maxRetries?: number;
  /** A preconfigured client; when given, apiKey, baseURL, timeoutMs and maxRetries are ignored. */
  client?: Anthropic;
}

const PROVIDER = 'anthropic';

/** The Anthropic Messages API, non-streaming, with client tools. */
export class AnthropicModel implements ModelProvider {
  readonly provider = PROVIDER;
  readonly model: string;
  private readonly client: Anthropic;
  private readonly maxTokens: number;

  constructor(options: AnthropicModelOptions) {
    this.model = options.model;
    this.maxTokens = options.maxTokens ?? 1024;
    this.client =
      options.client ??
      new Anthropic({
        apiKey: options.apiKey ?? process.env.ANTHROPIC_API_KEY,
        baseURL: options.baseURL ?? process.env.ANTHROPIC_BASE_URL,
        timeout: options.timeoutMs ?? 60_000,
        maxRetries: options.maxRetries ?? 3,
      });
  }

  async generate(request: ModelRequest): Promise<ModelResponse> {
    const params: MessageCreateParamsNonStreaming = {
      model: this.model,
      max_tokens: this.maxTokens,
      messages: toAnthropicMessages(request.messages),
    };
    if (request.system) params.system = request.system;
    if (request.tools.length > 0) {
      params.tools = request.tools.map(
        (tool): Tool => ({
          name: tool.name,
          description: tool.description,
          // The API insists on an object schema at the top level; a schema that omits `type` means one.
          input_schema: { type: 'object', ...tool.parameters },
        }),
      );
    }

    let message: Message;
    try {
      message = await this.client.messages.create(params, { signal: request.signal });
    } catch (error) {
      throw toModelCallError(error, [this.client.apiKey, this.client.authToken]);
    }
    return fromMessage(message);
  }
}

/**
 * Tool results travel as `tool_result` blocks in a user turn, and the API wants user and assistant
 * turns to alternate, so consecutive messages that land on the same role are merged into one turn.
 */
function toAnthropicMessages(messages: ChatMessage[]): MessageParam[] {
  const out: { role: 'user' | 'assistant'; content: ContentBlockParam[] }[] = [];
  const append = (role: 'user' | 'assistant', blocks: ContentBlockParam[]): void => {
    // The API rejects turns with no content blocks.
    if (blocks.length === 0) return;
    const last = out.at(-1);
    if (last?.role === role) last.content.push(...blocks);
    else out.push({ role, content: blocks });
  };
  for (const message of messages) {
    switch (message.role) {
      case 'user':
        append('user', textBlocks(message.content));
        break;
      case 'assistant':
        append('assistant', [
          ...textBlocks(message.content),
          ...(message.toolCalls ?? []).map(
            (call): ContentBlockParam => ({
              type: 'tool_use',
              id: call.id,
              name: call.name,
              input: parseArguments(call.arguments),
            }),
          ),
        ]);
        break;
      case 'tool':
        append('user', [
          {
            type: 'tool_result',
            tool_use_id: message.toolCallId,
            content: message.content,
            ...(message.isError !== undefined ? { is_error: message.isError } : {}),
          },
        ]);
        break;
    }
  }
  return out;
}

/** The API rejects empty text blocks, which an assistant turn that only called tools would otherwise send. */
function textBlocks(text: string | null): ContentBlockParam[] {
  return text ? [{ type: 'text', text }] : [];
}

/** `tool_use.input` must be an object; arguments the model mangled earlier are sent as `{}` so the history stays valid. */
function parseArguments(raw: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(raw);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
      ? (parsed as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}

function fromMessage(message: Message): ModelResponse {
  const texts: string[] = [];
  const toolCalls: ToolCall[] = [];
  for (const block of message.content) {
    if (block.type === 'text') texts.push(block.text);
    else if (block.type === 'tool_use') {
      toolCalls.push({ id: block.id, name: block.name, arguments: JSON.stringify(block.input) });
    }
  }
  return {
    // Blocks are consecutive pieces of one reply (split at citations, say), so they join without a separator.
    content: texts.length > 0 ? texts.join('') : null,
    toolCalls,
    usage: { inputTokens: message.usage.input_tokens, outputTokens: message.usage.output_tokens },
    model: message.model,
  };
}

/** Runs once the SDK has stopped retrying, so `retryable` is advice for a later, separate attempt. */
function toModelCallError(error: unknown, secrets: (string | null)[]): ModelCallError {
  const keys = secrets.filter((secret): secret is string => Boolean(secret));
  const redact = (text: string): string => keys.reduce((acc, key) => acc.split(key).join('[redacted]'), text);
  // Servers sometimes echo the key back in an error; keep the SDK error as cause only if it cannot leak it.
  const dump = inspect(error, { depth: 6 });
  const cause = keys.some((key) => dump.includes(key)) ? undefined : error;
  const fail = (message: string, status: number | undefined, retryable: boolean): ModelCallError =>
    new ModelCallError(redact(`Anthropic messages call failed: ${message}`), PROVIDER, status, retryable, { cause });

  // Subclasses of APIError, so they are checked first.
  if (error instanceof Anthropic.APIUserAbortError) return fail('request aborted', undefined, false);
  if (error instanceof Anthropic.APIConnectionError) return fail(error.message, undefined, true);
  if (error instanceof Anthropic.APIError) {
    const status = error.status;
    // 529 (overloaded) is covered by the 5xx rule.
    const retryable = status === 408 || status === 429 || (status !== undefined && status >= 500);
    return fail(error.message, status, retryable);
  }
  return fail(error instanceof Error ? error.message : String(error), undefined, false);
}
