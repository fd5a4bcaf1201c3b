import { defineAgent, type Agent } from '../../agents/agent.js';
import type { ModelProvider } from '../../agents/model.js';
import { AnthropicModel } from '../../agents/providers/anthropic.js';
import { OpenAIModel } from '../../agents/providers/openai.js';
import { ScriptedModel, type Script } from '../../agents/providers/scripted.js';
import { SupportBackend } from './backend.js';
import * as scripts from './scripts.js';
import { supportTools } from './tools.js';

/** The real providers when a key is set, the scripted model otherwise. */
export function modelFromEnv(script: Script, env: NodeJS.ProcessEnv = process.env): ModelProvider {
  if (env.OPENAI_API_KEY) return new OpenAIModel({ model: env.OPENAI_MODEL ?? 'gpt-4o-mini' });
  if (env.ANTHROPIC_API_KEY) return new AnthropicModel({ model: env.ANTHROPIC_MODEL ?? 'claude-3-5-haiku-latest' });
  return new ScriptedModel({ script });
}

export interface SupportSystemOptions {
  backend?: SupportBackend;
  model?: (script: Script) => ModelProvider;
}

/** Customer support: triage hands off to billing or tech support; billing delegates to a fraud check. */
export function createSupportAgents(options: SupportSystemOptions = {}): Agent[] {
  const backend = options.backend ?? new SupportBackend();
  const model = options.model ?? ((script: Script) => modelFromEnv(script));
  const tools = supportTools(backend);
  return [
    defineAgent({
      name: 'triage',
      description: 'Front desk: reads the request and routes it.',
      instructions:
        'You are the front desk of an online shop. Do not answer the request yourself. Money matters (refunds, charges, invoices) go to billing; everything else goes to tech_support. Transfer immediately.',
      model: model(scripts.triage),
      handoffs: ['billing', 'tech_support'],
    }),
    defineAgent({
      name: 'billing',
      description: 'Handles refunds, charges and invoices.',
      instructions:
        'You handle refunds. Look up the customer by e-mail and the order by id; check the order belongs to the customer. Before any refund, ask fraud_check and refund only if it answers "risk: low". Refund the order total. Reply briefly with the refund id.',
      model: model(scripts.billing),
      tools: [tools.lookupCustomer, tools.lookupOrder, tools.issueRefund, tools.lookupPaymentMethod],
      delegates: ['fraud_check'],
    }),
    defineAgent({
      name: 'fraud_check',
      description: 'Assesses refund risk for a customer id; answers "risk: low" or "risk: high".',
      instructions: 'Score the customer with fraud_score. Answer exactly "risk: low (score S)" when the score is below 0.5, otherwise "risk: high (score S)".',
      model: model(scripts.fraudCheck),
      tools: [tools.fraudScore],
    }),
    defineAgent({
      name: 'tech_support',
      description: 'Answers product and account problems from the help centre.',
      instructions: 'Search the help centre with search_kb and answer from the best article in two sentences.',
      model: model(scripts.techSupport),
      tools: [tools.searchKb],
    }),
  ];
}

/** What `palisade worker examples/support/system.ts` loads. */
export const agents = createSupportAgents();
export default { agents };
