/**
 * The peers workload, the same for every system: agents a → b → c; each makes one tool call with a small
 * JSON argument, then hands off to the next; c replies with a fixed text. The scripted model's decisions
 * and the tools live here, so every system runs the same script, and a `WorkCount` says what each did.
 */
import { z } from 'zod';
import { OUTPUT } from './scenarios.js';

export const CHAIN = ['a', 'b', 'c'] as const;
export type ChainAgent = (typeof CHAIN)[number];

/** Distinct names, so an agent that sees an earlier agent's tool result in the conversation does not take it for its own. */
export const TOOLS: Readonly<Record<ChainAgent, { name: string; description: string }>> = {
  a: { name: 'lookup_order', description: 'Looks an order up by its id.' },
  b: { name: 'check_stock', description: 'Checks that the items of an order are in stock.' },
  c: { name: 'get_shipping', description: 'Gets the shipping status of an order.' },
};

export const toolInput = z.object({ orderId: z.string().regex(/^[A-Z]-\d{4}$/) });
export type ToolArgs = z.output<typeof toolInput>;
export const TOOL_ARGS: ToolArgs = { orderId: 'A-1042' };
export const REPLY = OUTPUT;

export const nextAgent = (agent: ChainAgent): ChainAgent | undefined => CHAIN[CHAIN.indexOf(agent) + 1];

export type Step = { kind: 'tool'; name: string; args: ToolArgs } | { kind: 'handoff'; to: ChainAgent } | { kind: 'reply'; text: string };

/** Tool calls and model turns per chain that every system with a model must show. */
export const EXPECTED = { toolCallsPerAgent: 1, modelTurns: 2 * CHAIN.length } as const;

export interface WorkTotals {
  tools: Record<ChainAgent, number>;
  modelTurns: number;
  guardrails: number;
}

/** What one system did: tool calls per agent, scripted model turns, guardrail checks. */
export class WorkCount {
  private readonly totals: WorkTotals = { tools: { a: 0, b: 0, c: 0 }, modelTurns: 0, guardrails: 0 };

  /** The scripted model of `agent`: its tool first; once its result is in the conversation, a handoff or, at the end, the reply. */
  model(agent: ChainAgent, toolDone: boolean): Step {
    this.totals.modelTurns += 1;
    if (!toolDone) return { kind: 'tool', name: TOOLS[agent].name, args: TOOL_ARGS };
    const to = nextAgent(agent);
    return to ? { kind: 'handoff', to } : { kind: 'reply', text: REPLY };
  }

  /** The tool of `agent` (its arguments already validated by the system's own tool layer). */
  tool(agent: ChainAgent, args: ToolArgs): { orderId: string; status: string; items: number; checkedBy: ChainAgent } {
    this.totals.tools[agent] += 1;
    return { orderId: args.orderId, status: 'shipped', items: 2, checkedBy: agent };
  }

  guardrail(): void {
    this.totals.guardrails += 1;
  }

  snapshot(): WorkTotals {
    return { ...this.totals, tools: { ...this.totals.tools } };
  }
}

/** Per chain, what a system did between two snapshots. */
export function workPerChain(before: WorkTotals, after: WorkTotals, chains: number) {
  return {
    toolCalls: CHAIN.reduce((sum, agent) => sum + after.tools[agent] - before.tools[agent], 0) / chains,
    toolCallsByAgent: Object.fromEntries(CHAIN.map((agent) => [agent, (after.tools[agent] - before.tools[agent]) / chains])) as Record<ChainAgent, number>,
    modelTurns: (after.modelTurns - before.modelTurns) / chains,
    guardrails: (after.guardrails - before.guardrails) / chains,
  };
}
export type WorkPerChain = ReturnType<typeof workPerChain>;
