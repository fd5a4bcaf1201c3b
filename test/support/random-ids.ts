import { randomBytes } from 'node:crypto';
import type { ModelProvider } from '../../agents/model.js';

/**
 * The model, with call ids as the OpenAI and Anthropic APIs issue them: random, so a model asked the
 * same question again (after a redelivery lost its saved reply) names the same calls differently.
 */
export const withRandomCallIds = (model: ModelProvider): ModelProvider => ({
  provider: model.provider,
  model: model.model,
  generate: async (request) => {
    const response = await model.generate(request);
    return { ...response, toolCalls: response.toolCalls.map((call) => ({ ...call, id: `call_${randomBytes(12).toString('base64url')}` })) };
  },
});
