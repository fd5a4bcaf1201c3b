import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent } from '../agents/agent.js';
import type { ModelProvider } from '../agents/model.js';
import { AnthropicModel } from '../agents/providers/anthropic.js';
import { OpenAIModel } from '../agents/providers/openai.js';
import { defineTool } from '../agents/tool.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { anthropicError, anthropicMessage, openaiCompletion, openaiError, startModelServer, type ModelServer } from './support/model-server.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

/** The agent loop driving the real SDKs over HTTP, through BullMQ workers on Redis. */
describe('agents on the real OpenAI and Anthropic SDKs', () => {
  let server: ModelServer;
  const prefix = uniquePrefix('providers');
  let runtime: Runtime;
  const lookups: string[] = [];

  const weather = defineTool({
    name: 'weather',
    description: 'Current weather for a city',
    input: z.object({ city: z.string() }),
    effect: 'read',
    run: ({ city }) => (lookups.push(city), { city, sky: 'clear', celsius: 21 }),
  });

  beforeAll(async () => {
    server = await startModelServer();
    const agent = (name: string, model: ModelProvider, extra: object = {}) => defineAgent({ name, instructions: `You are ${name}.`, model, tools: [weather], ...extra });
    runtime = new Runtime({
      agents: [
        agent('oai', new OpenAIModel({ model: 'gpt-test', apiKey: 'sk-test-not-a-secret', baseURL: `${server.url}/v1`, maxRetries: 2 }), { handoffs: ['claude'] }),
        agent('claude', new AnthropicModel({ model: 'claude-test', apiKey: 'sk-ant-test', baseURL: server.url, maxRetries: 2 })),
      ],
      transport: new BullMQTransport({ connection: REDIS_URL, prefix }),
    });
    await runtime.startWorkers();
  });

  afterAll(async () => {
    await runtime.close();
    await server.close();
    await deleteKeys(prefix);
  });

  it('runs multi-turn tool calls over OpenAI chat completions, retrying a 429', async () => {
    server.enqueue(
      'openai',
      openaiError(429, 'slow down', { headers: { 'retry-after': '0' } }),
      openaiCompletion({ toolCalls: [{ id: 'call_w1', name: 'weather', arguments: '{"city":"Paris"}' }] }),
      openaiCompletion({ text: 'Paris is clear and 21 °C.' }),
    );
    const run = await runtime.start('oai', 'Weather in Paris?', { principal: { id: 'u' } });
    await expect(run.result()).resolves.toMatchObject({ output: 'Paris is clear and 21 °C.' });
    expect(lookups).toContain('Paris');
    const sent = server.requestsFor('openai').slice(-1)[0]!.body as { messages: Array<{ role: string; tool_call_id?: string; content?: string }>; tools: unknown[] };
    expect(sent.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'tool']);
    expect(sent.messages[3]).toMatchObject({ tool_call_id: 'call_w1', content: JSON.stringify({ city: 'Paris', sky: 'clear', celsius: 21 }) });
    expect(sent.tools).toHaveLength(2); // weather and transfer_to_claude
  });

  it('hands off from an OpenAI agent to an Anthropic agent that uses a tool', async () => {
    server.enqueue('openai', openaiCompletion({ toolCalls: [{ id: 'call_h', name: 'transfer_to_claude', arguments: '{"reason":"prefers claude"}' }] }));
    server.enqueue(
      'anthropic',
      anthropicError(529, 'overloaded_error', 'busy', { 'retry-after-ms': '1' }),
      anthropicMessage({ toolUses: [{ id: 'toolu_1', name: 'weather', input: { city: 'Oslo' } }] }),
      anthropicMessage({ text: 'Oslo is clear.' }),
    );
    const before = server.requestsFor('anthropic').length;
    const run = await runtime.start('oai', 'Let Claude tell me the weather in Oslo', { principal: { id: 'u' } });
    await expect(run.result()).resolves.toMatchObject({ output: 'Oslo is clear.' });
    const last = server.requestsFor('anthropic').slice(-1)[0]!.body as { system: string; messages: Array<{ role: string; content: unknown }> };
    expect(server.requestsFor('anthropic').length - before).toBe(3);
    expect(last.system).toBe('You are claude.');
    // The conversation arrived whole: the user's request, the transfer, then Claude's own tool use and result.
    expect(JSON.stringify(last.messages)).toContain('Let Claude tell me the weather in Oslo');
    expect(JSON.stringify(last.messages)).toContain('"tool_use_id":"toolu_1"');
    expect(lookups).toContain('Oslo');
  });

  it('fails the run with the provider error when the model rejects the request', async () => {
    server.enqueue('openai', openaiError(400, 'context too long'));
    const run = await runtime.start('oai', 'hi', { principal: { id: 'u' } });
    await expect(run.result()).rejects.toThrow(/model call failed: .*context too long/);
  });
});
