import type { Effect, Risk } from '../agents/tool.js';
import type { Principal } from '../agents/principal.js';
import type { Decision, Stage } from './decision.js';
import type { Label } from '../agents/label.js';

/** One piece of what is in the agent's context, with where it came from. */
export interface ContextItem {
  source: 'user' | 'tool' | 'agent';
  /** Tool or agent name for `tool` and `agent` items. */
  name?: string;
  content: string;
  /** The item's own label: `untrusted` when a third party could have written it. */
  label: Label;
  /** What a guard found it carries, e.g. `instructions`. */
  flags?: readonly string[];
  /** For a tool's result: the arguments of the call that produced it (the model's words, which the result may repeat). */
  call?: { args: Record<string, unknown> };
  /** For a structured tool result: keys whose values the tool's own system vouches for, as the tool declares them. */
  trustedFields?: readonly string[];
}

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
  /** For `handoff`: the receiving agent, how it is reached, and how many delegations this turn makes. */
  target?: { agent: string; mode: 'handoff' | 'delegate'; fanOut?: number; /** Set when a delegate's answer comes back: `agent` is the caller it would join (the sink), `answerFrom` the delegate. */ answerFrom?: string };
  /** What the agent's context holds, for tracing argument values to their sources. */
  history?: readonly ContextItem[];
  /** Tokens left for the rest of the run (after this activation's spending), and its deadline. */
  budget?: { tokensLeft?: number; deadline?: number };
  /** Earlier calls of this tool in this activation, for rate-based risk. */
  priorCalls?: number;
  /** The tools the acting agent declares: it may use no others, whatever the principal holds. */
  agentTools?: readonly string[];
}

/** Decides each step. The runtime executes nothing and enqueues nothing without asking it first. */
export interface GuardPipeline {
  evaluate(event: GuardEvent): Promise<Decision>;
}
