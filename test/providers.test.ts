import { inspect } from 'node:util';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelCallError, type ChatMessage, type ModelRequest, type ToolSpec } from '../agents/model.js';
import { AnthropicModel, type AnthropicModelOptions } from '../agents/providers/anthropic.js';
import { OpenAIModel, type OpenAIModelOptions } from '../agents/providers/openai.js';
import {
  anthropicError,
  anthropicMessage,
  openaiCompletion,
  openaiError,
  startModelServer,
  type ModelServer,
} from './support/model-server.js';

const OPENAI_KEY = 'sk-test-openai-7f3a9c';
const ANTHROPIC_KEY = 'sk-ant-test-2b8e41';

const weatherTool: ToolSpec = {
  name: 'get_weather',
  description: 'Current weather for a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string', description: 'City name' } },
    required: ['city'],
    additionalProperties: false,
  },
};

const hello: ModelRequest = { system: 'Be brief.', messages: [{ role: 'user', content: 'Hi' }], tools: [] };

let server: ModelServer;
beforeEach(async () => {
  server = await startModelServer();
});
afterEach(async () => {
  await server.close();
});

/** Awaits a call that must fail and returns its ModelCallError. */
async function failure(call: Promise<unknown>): Promise<ModelCallError> {
  const error = await call.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(ModelCallError);
  return error as ModelCallError;
}

describe('OpenAIModel', () => {
  const model = (options: Partial<OpenAIModelOptions> = {}): OpenAIModel =>
    new OpenAIModel({ model: 'gpt-test', apiKey: OPENAI_KEY, baseURL: `${server.url}/v1`, maxRetries: 2, ...options });
  // OpenAI's SDK honours `retry-after: 0` literally, so retries cost no time.
  const retryNow = { 'retry-after': '0' };

  it('returns a plain text reply and sends the system prompt as the first message', async () => {
    server.enqueue('openai', openaiCompletion({ text: 'Hello!', model: 'gpt-test-0613', usage: { prompt: 20, completion: 3 } }));

    const response = await model().generate(hello);

    expect(response).toEqual({
      content: 'Hello!',
      toolCalls: [],
      usage: { inputTokens: 20, outputTokens: 3 },
      model: 'gpt-test-0613',
    });
    const [request] = server.requests;
    expect(request?.path).toBe('/v1/chat/completions');
    expect(request?.headers.authorization).toBe(`Bearer ${OPENAI_KEY}`);
    expect(request?.body).toEqual({
      model: 'gpt-test',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ],
    });
  });

  it('maps tool calls and sends tools as function tools with their JSON Schema', async () => {
    server.enqueue(
      'openai',
      openaiCompletion({
        toolCalls: [
          { id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
          { id: 'call_2', name: 'get_weather', arguments: '{"city":"Oslo"' },
        ],
      }),
    );

    const response = await model({ temperature: 0.2 }).generate({ ...hello, tools: [weatherTool] });

    expect(response.content).toBeNull();
    // Arguments stay raw, even when malformed: validating them is the tool's job.
    expect(response.toolCalls).toEqual([
      { id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
      { id: 'call_2', name: 'get_weather', arguments: '{"city":"Oslo"' },
    ]);
    expect(server.requests[0]?.body).toEqual({
      model: 'gpt-test',
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
      ],
      tools: [
        {
          type: 'function',
          function: { name: 'get_weather', description: 'Current weather for a city', parameters: weatherTool.parameters },
        },
      ],
      tool_choice: 'auto',
      temperature: 0.2,
    });
  });

  it('sends assistant tool calls and tool results in the Chat Completions shape', async () => {
    server.enqueue('openai', openaiCompletion({ text: 'Paris is sunny; Oslo is unknown.' }));
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Weather in Paris and Oslo?' },
      {
        role: 'assistant',
        content: null,
        toolCalls: [
          { id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
          { id: 'call_2', name: 'get_weather', arguments: '{"city":"Oslo"}' },
        ],
      },
      { role: 'tool', toolCallId: 'call_1', name: 'get_weather', content: 'sunny, 21C' },
      { role: 'tool', toolCallId: 'call_2', name: 'get_weather', content: 'service down', isError: true },
      { role: 'assistant', content: 'Paris is sunny.' },
      { role: 'user', content: 'Thanks' },
    ];

    const response = await model().generate({ system: 'Be brief.', messages, tools: [weatherTool] });

    expect(response.content).toBe('Paris is sunny; Oslo is unknown.');
    expect((server.requests[0]?.body as { messages: unknown }).messages).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Weather in Paris and Oslo?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
          { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 21C' },
      { role: 'tool', tool_call_id: 'call_2', content: 'service down' },
      { role: 'assistant', content: 'Paris is sunny.' },
      { role: 'user', content: 'Thanks' },
    ]);
  });

  it('retries a 429 and returns the answer that follows', async () => {
    server.enqueue('openai', openaiError(429, 'Rate limit reached', { headers: retryNow }), openaiCompletion({ text: 'ok' }));

    const response = await model().generate(hello);

    expect(response.content).toBe('ok');
    expect(server.requests).toHaveLength(2);
    expect(server.requests[1]?.headers['x-stainless-retry-count']).toBe('1');
  });

  it('gives up on repeated 500s after maxRetries with a retryable ModelCallError', async () => {
    const boom = openaiError(500, 'The server had an error', { headers: retryNow });
    server.enqueue('openai', boom, boom, boom, boom);

    const error = await failure(model({ maxRetries: 2 }).generate(hello));

    expect(error).toMatchObject({ provider: 'openai', status: 500, retryable: true });
    expect(error.message).toContain('The server had an error');
    expect(server.requests).toHaveLength(3);
  });

  it('fails a 400 at once as not retryable', async () => {
    server.enqueue('openai', openaiError(400, "Invalid schema for function 'get_weather'"), openaiCompletion({ text: 'unused' }));

    const error = await failure(model().generate(hello));

    expect(error).toMatchObject({ provider: 'openai', status: 400, retryable: false });
    expect(error.message).toContain("Invalid schema for function 'get_weather'");
    expect(error.cause).toBeInstanceOf(OpenAI.BadRequestError);
    expect(server.requests).toHaveLength(1);
  });

  it('reports a timeout as retryable', async () => {
    server.enqueue('openai', { ...openaiCompletion({ text: 'too late' }), delayMs: 2_000 });

    const error = await failure(model({ timeoutMs: 100, maxRetries: 0 }).generate(hello));

    expect(error).toMatchObject({ provider: 'openai', status: undefined, retryable: true });
    expect(server.requests).toHaveLength(1);
  });

  it('keeps the API key out of errors even when the server echoes it', async () => {
    server.enqueue('openai', openaiError(401, `Incorrect API key provided: ${OPENAI_KEY}.`, { code: 'invalid_api_key' }));

    const error = await failure(model().generate(hello));

    expect(error).toMatchObject({ status: 401, retryable: false });
    expect(error.message).toContain('[redacted]');
    expect(error.message).not.toContain(OPENAI_KEY);
    // The SDK error repeats the key, so it must not ride along as the cause.
    expect(inspect(error, { depth: 10 })).not.toContain(OPENAI_KEY);
  });

  it('passes the abort signal through', async () => {
    server.enqueue('openai', { ...openaiCompletion({ text: 'too late' }), delayMs: 2_000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);

    const error = await failure(model().generate({ ...hello, signal: controller.signal }));

    expect(error).toMatchObject({ status: undefined, retryable: false });
    expect(server.requests).toHaveLength(1);
  });

  it('works against an OpenAI-compatible server mounted under another base path', async () => {
    server.enqueue('openai', openaiCompletion({ text: 'from a compatible server', model: 'llama-3-8b' }));

    const response = await model({ model: 'llama-3-8b', baseURL: `${server.url}/compat/v1` }).generate(hello);

    expect(response).toMatchObject({ content: 'from a compatible server', model: 'llama-3-8b' });
    expect(server.requests[0]?.path).toBe('/compat/v1/chat/completions');
  });

  it('defaults the key and base URL to OPENAI_API_KEY and OPENAI_BASE_URL', async () => {
    server.enqueue('openai', openaiCompletion({ text: 'ok' }));
    const saved = { key: process.env.OPENAI_API_KEY, url: process.env.OPENAI_BASE_URL };
    process.env.OPENAI_API_KEY = 'sk-from-env';
    process.env.OPENAI_BASE_URL = `${server.url}/env/v1`;
    try {
      await new OpenAIModel({ model: 'gpt-test' }).generate(hello);
    } finally {
      restoreEnv('OPENAI_API_KEY', saved.key);
      restoreEnv('OPENAI_BASE_URL', saved.url);
    }

    expect(server.requests[0]?.path).toBe('/env/v1/chat/completions');
    expect(server.requests[0]?.headers.authorization).toBe('Bearer sk-from-env');
  });
});

describe('AnthropicModel', () => {
  const model = (options: Partial<AnthropicModelOptions> = {}): AnthropicModel =>
    new AnthropicModel({ model: 'claude-test', apiKey: ANTHROPIC_KEY, baseURL: server.url, maxRetries: 2, ...options });
  // Anthropic's SDK treats `retry-after: 0` as no hint and backs off ~0.5s; `retry-after-ms` is honoured.
  const retryNow = { 'retry-after-ms': '1' };

  it('returns a plain text reply, joining text blocks, with the system prompt as `system`', async () => {
    server.enqueue(
      'anthropic',
      anthropicMessage({ text: ['Hello', ' there!'], model: 'claude-test-20250101', usage: { input: 30, output: 4 } }),
    );

    const response = await model().generate(hello);

    expect(response).toEqual({
      content: 'Hello there!',
      toolCalls: [],
      usage: { inputTokens: 30, outputTokens: 4 },
      model: 'claude-test-20250101',
    });
    const [request] = server.requests;
    expect(request?.path).toBe('/v1/messages');
    // SDK 1.x sends the API key as a bearer token rather than `x-api-key`.
    expect(request?.headers.authorization).toBe(`Bearer ${ANTHROPIC_KEY}`);
    expect(request?.headers['anthropic-version']).toBeTruthy();
    expect(request?.body).toEqual({
      model: 'claude-test',
      max_tokens: 1024,
      system: 'Be brief.',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }],
    });
  });

  it('maps tool_use blocks and sends tools with input_schema', async () => {
    server.enqueue(
      'anthropic',
      anthropicMessage({
        text: 'Let me check.',
        toolUses: [{ id: 'toolu_1', name: 'get_weather', input: { city: 'Paris', units: { temp: 'C' } } }],
      }),
    );

    const response = await model({ maxTokens: 256 }).generate({ ...hello, tools: [weatherTool] });

    expect(response.content).toBe('Let me check.');
    expect(response.toolCalls).toEqual([
      { id: 'toolu_1', name: 'get_weather', arguments: '{"city":"Paris","units":{"temp":"C"}}' },
    ]);
    expect(server.requests[0]?.body).toEqual({
      model: 'claude-test',
      max_tokens: 256,
      system: 'Be brief.',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }],
      tools: [{ name: 'get_weather', description: 'Current weather for a city', input_schema: weatherTool.parameters }],
    });
  });

  it('sends tool calls as tool_use, tool results as one user turn, and merges same-role turns', async () => {
    server.enqueue('anthropic', anthropicMessage({ toolUses: [{ id: 'toolu_9', name: 'get_weather', input: {} }] }));
    const messages: ChatMessage[] = [
      { role: 'user', content: 'Weather in Paris and Oslo?' },
      {
        role: 'assistant',
        content: 'Checking both.',
        toolCalls: [
          { id: 'toolu_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
          { id: 'toolu_2', name: 'get_weather', arguments: '{"city": Oslo' },
        ],
      },
      { role: 'tool', toolCallId: 'toolu_1', name: 'get_weather', content: 'sunny, 21C' },
      { role: 'tool', toolCallId: 'toolu_2', name: 'get_weather', content: 'bad arguments', isError: true },
      { role: 'user', content: 'Also Rome?' },
      { role: 'assistant', content: 'Paris is sunny.' },
      { role: 'assistant', content: null, toolCalls: [{ id: 'toolu_3', name: 'get_weather', arguments: '{"city":"Rome"}' }] },
      { role: 'tool', toolCallId: 'toolu_3', name: 'get_weather', content: 'rain', isError: false },
    ];

    const response = await model().generate({ system: 'Be brief.', messages, tools: [weatherTool] });

    expect(response.content).toBeNull();
    expect(response.toolCalls).toEqual([{ id: 'toolu_9', name: 'get_weather', arguments: '{}' }]);
    expect((server.requests[0]?.body as { messages: unknown }).messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Weather in Paris and Oslo?' }] },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Checking both.' },
          { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } },
          // Unparsable arguments become {} so the history stays acceptable to the API.
          { type: 'tool_use', id: 'toolu_2', name: 'get_weather', input: {} },
        ],
      },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: 'toolu_1', content: 'sunny, 21C' },
          { type: 'tool_result', tool_use_id: 'toolu_2', content: 'bad arguments', is_error: true },
          { type: 'text', text: 'Also Rome?' },
        ],
      },
      {
        role: 'assistant',
        content: [
          { type: 'text', text: 'Paris is sunny.' },
          { type: 'tool_use', id: 'toolu_3', name: 'get_weather', input: { city: 'Rome' } },
        ],
      },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_3', content: 'rain', is_error: false }] },
    ]);
  });

  it('retries a 429 and returns the answer that follows', async () => {
    server.enqueue(
      'anthropic',
      anthropicError(429, 'rate_limit_error', 'Number of request tokens has exceeded your rate limit', retryNow),
      anthropicMessage({ text: 'ok' }),
    );

    const response = await model().generate(hello);

    expect(response.content).toBe('ok');
    expect(server.requests).toHaveLength(2);
    expect(server.requests[1]?.headers['x-stainless-retry-count']).toBe('1');
  });

  it('gives up on repeated 500s after maxRetries with a retryable ModelCallError', async () => {
    const boom = anthropicError(500, 'api_error', 'Internal server error', retryNow);
    server.enqueue('anthropic', boom, boom, boom, boom);

    const error = await failure(model({ maxRetries: 2 }).generate(hello));

    expect(error).toMatchObject({ provider: 'anthropic', status: 500, retryable: true });
    expect(error.message).toContain('Internal server error');
    expect(server.requests).toHaveLength(3);
  });

  it('fails a 400 at once as not retryable', async () => {
    server.enqueue(
      'anthropic',
      anthropicError(400, 'invalid_request_error', 'messages: roles must alternate'),
      anthropicMessage({ text: 'unused' }),
    );

    const error = await failure(model().generate(hello));

    expect(error).toMatchObject({ provider: 'anthropic', status: 400, retryable: false });
    expect(error.message).toContain('messages: roles must alternate');
    expect(error.cause).toBeInstanceOf(Anthropic.BadRequestError);
    expect(server.requests).toHaveLength(1);
  });

  it('reports a timeout as retryable', async () => {
    server.enqueue('anthropic', { ...anthropicMessage({ text: 'too late' }), delayMs: 2_000 });

    const error = await failure(model({ timeoutMs: 100, maxRetries: 0 }).generate(hello));

    expect(error).toMatchObject({ provider: 'anthropic', status: undefined, retryable: true });
    expect(server.requests).toHaveLength(1);
  });

  it('keeps the API key out of errors even when the server echoes it', async () => {
    server.enqueue('anthropic', anthropicError(401, 'authentication_error', `invalid x-api-key: ${ANTHROPIC_KEY}`));

    const error = await failure(model().generate(hello));

    expect(error).toMatchObject({ status: 401, retryable: false });
    expect(error.message).toContain('[redacted]');
    expect(error.message).not.toContain(ANTHROPIC_KEY);
    expect(inspect(error, { depth: 10 })).not.toContain(ANTHROPIC_KEY);
  });

  it('passes the abort signal through', async () => {
    server.enqueue('anthropic', { ...anthropicMessage({ text: 'too late' }), delayMs: 2_000 });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);

    const error = await failure(model().generate({ ...hello, signal: controller.signal }));

    expect(error).toMatchObject({ status: undefined, retryable: false });
    expect(server.requests).toHaveLength(1);
  });
});

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
