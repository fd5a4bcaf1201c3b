import type { Effect, Risk } from '../agents/tool.js';
import type { Principal } from '../runtime/principal.js';
import type { Stage } from './decision.js';
import type { Label } from './label.js';

/** What a guard sees at one step: who asks, where the run has been, and what is about to happen. */
export interface GuardEvent {
  stage: Stage;
  runId: string;
  principal: Principal;
  /** The agent whose worker is deciding. */
  agent: string;
  chain: readonly string[];
  depth: number;
  hops: number;
  /** The accumulated label of the agent's context before this step. */
  label: Label;
  /** The text the step carries: incoming message, tool result, handoff message or reply. */
  content?: string;
  tool?: { name: string; effect: Effect; risk: Risk; requires: readonly string[]; returns: Label };
  args?: Record<string, unknown>;
  /** For `handoff`: the receiving agent and how it is reached. */
  target?: { agent: string; mode: 'handoff' | 'delegate' };
}

/** Decides each step. The runtime executes nothing and enqueues nothing without asking it first. */
export interface GuardPipeline {
  evaluate(event: GuardEvent): Promise<import('./decision.js').Decision>;
}
