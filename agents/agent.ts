import { z } from 'zod';
import { LabelSchema, type Label } from './label.js';
import { InvalidDefinitionError, describeIssues } from './errors.js';
import type { ModelProvider } from './model.js';
import type { AnyTool } from './tool.js';

// Agent names become queue names: BullMQ forbids ':' and Redis Cluster hash tags use braces.
const AGENT_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

const AgentMetaSchema = z
  .object({
    name: z.string().regex(AGENT_NAME, 'must start with a lowercase letter and hold only a-z, 0-9, _ or - (at most 63)'),
    description: z.string().min(1).optional(),
    instructions: z.string().min(1, 'must not be empty: it is the system prompt'),
    handoffs: z.array(z.string().regex(AGENT_NAME, 'is not a valid agent name')).default([]),
    delegates: z.array(z.string().regex(AGENT_NAME, 'is not a valid agent name')).default([]),
    clearance: LabelSchema.optional(),
    maxTurns: z.number().int().min(1).max(100).default(10),
  })
  .strict();

export interface AgentOptions {
  name: string;
  /** What the agent is for; other agents' models read it when deciding to hand off or delegate. */
  description?: string;
  instructions: string;
  model: ModelProvider;
  tools?: AnyTool[];
  /** Agents this one may pass the conversation to; it stops and they continue. */
  handoffs?: string[];
  /** Agents this one may call like a tool and wait for. */
  delegates?: string[];
  /** The highest label this agent may receive; the policy may lower it. */
  clearance?: z.input<typeof LabelSchema>;
  /** Model turns per activation before the run fails as runaway. */
  maxTurns?: number;
}

export interface Agent {
  readonly kind: 'agent';
  readonly name: string;
  readonly description: string;
  readonly instructions: string;
  readonly model: ModelProvider;
  readonly tools: ReadonlyMap<string, AnyTool>;
  readonly handoffs: readonly string[];
  readonly delegates: readonly string[];
  readonly clearance: Label | undefined;
  readonly maxTurns: number;
}

export const handoffToolName = (agent: string): string => `transfer_to_${agent}`;
export const delegateToolName = (agent: string): string => `ask_${agent}`;

export function defineAgent(options: AgentOptions): Agent {
  const { model, tools = [], ...meta } = options;
  const subject = `agent '${String(meta.name)}'`;
  const parsed = AgentMetaSchema.safeParse(meta);
  const problems = parsed.success ? [] : describeIssues(parsed.error);
  if (!model || typeof model.generate !== 'function') problems.push('model: must be a ModelProvider (an object with generate())');
  const byName = new Map<string, AnyTool>();
  for (const [i, tool] of tools.entries()) {
    if (!tool || tool.kind !== 'tool') problems.push(`tools.${i}: is not a tool made by defineTool()`);
    else if (byName.has(tool.name)) problems.push(`tools.${i}: duplicate tool name '${tool.name}'`);
    else byName.set(tool.name, tool);
  }
  if (parsed.success) {
    const d = parsed.data;
    for (const target of [...d.handoffs.map(handoffToolName), ...d.delegates.map(delegateToolName)]) {
      if (byName.has(target)) problems.push(`tools: '${target}' clashes with a handoff or delegation tool of the same name`);
    }
    if (d.handoffs.includes(d.name)) problems.push('handoffs: an agent cannot hand off to itself');
  }
  if (!parsed.success || problems.length > 0) throw new InvalidDefinitionError(subject, problems);
  const d = parsed.data;
  return Object.freeze({
    kind: 'agent' as const,
    name: d.name,
    description: d.description ?? d.instructions.slice(0, 200),
    instructions: d.instructions,
    model,
    tools: byName,
    handoffs: Object.freeze([...new Set(d.handoffs)]),
    delegates: Object.freeze([...new Set(d.delegates)]),
    clearance: d.clearance,
    maxTurns: d.maxTurns,
  });
}

/** Checks that every handoff and delegation names an agent in the set; run once when a runtime starts. */
export function checkAgentGraph(agents: readonly Agent[]): void {
  const names = new Set<string>();
  const problems: string[] = [];
  for (const agent of agents) {
    if (names.has(agent.name)) problems.push(`duplicate agent name '${agent.name}'`);
    names.add(agent.name);
  }
  for (const agent of agents) {
    for (const t of agent.handoffs) if (!names.has(t)) problems.push(`agent '${agent.name}' hands off to unknown agent '${t}'`);
    for (const t of agent.delegates) if (!names.has(t)) problems.push(`agent '${agent.name}' delegates to unknown agent '${t}'`);
  }
  if (problems.length > 0) throw new InvalidDefinitionError('agent set', problems);
}
