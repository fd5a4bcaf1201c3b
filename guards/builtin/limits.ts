import type { Decision } from '../decision.js';
import { defineGuard, type Guard } from '../guard.js';
import type { GuardEvent } from '../guard-event.js';
import type { GuardContext } from './context.js';

const block = (reason: string): Decision => ({ verdict: 'block', reasons: [reason], risk: 1 });
const ALLOW: Decision = { verdict: 'allow', reasons: [], risk: 0 };

/**
 * Delegation limits: depth, fan-out, hops, cycles, the allowed graph and budgets. Checked by the
 * sender before a handoff or delegation and again by the receiver, which trusts no one's arithmetic.
 */
export function limitsGuard({ policy, agents }: GuardContext): Guard {
  const limits = policy.limits;
  const budgetLeft = (e: GuardEvent): Decision | undefined => {
    if (e.budget?.tokensLeft !== undefined && e.budget.tokensLeft <= 0) return block('the run has no token budget left');
    if (e.budget?.deadline !== undefined && Date.now() > e.budget.deadline) return block('the run passed its deadline');
    return undefined;
  };
  return defineGuard({
    name: 'limits',
    stages: ['receive', 'handoff', 'tool_call'],
    check(e) {
      // An answer coming back sends nothing: the limits held when it was asked, and the budget is checked before the next model turn.
      if (e.stage === 'handoff' && e.target?.answerFrom !== undefined) return ALLOW;
      const overBudget = budgetLeft(e);
      if (overBudget) return overBudget;
      if (e.stage === 'tool_call') return ALLOW;
      if (e.stage === 'receive') {
        if (e.depth > limits.maxDepth) return block(`delegation depth ${e.depth} exceeds the limit of ${limits.maxDepth}`);
        if (e.hops > limits.maxHops) return block(`${e.hops} hops exceed the limit of ${limits.maxHops}`);
        if (!limits.allowCycles && new Set(e.chain).size !== e.chain.length) return block(`the chain ${e.chain.join(' → ')} repeats an agent`);
        return ALLOW;
      }
      const target = e.target;
      if (!target) return block('a handoff without a target');
      const depth = e.depth + (target.mode === 'delegate' ? 1 : 0);
      if (depth > limits.maxDepth) return block(`delegating to '${target.agent}' would reach depth ${depth}, over the limit of ${limits.maxDepth}`);
      if (e.hops + 1 > limits.maxHops) return block(`the run has made ${e.hops} hops, the limit is ${limits.maxHops}`);
      if ((target.fanOut ?? 1) > limits.maxFanOut) return block(`${target.fanOut} delegations in one turn exceed the fan-out limit of ${limits.maxFanOut}`);
      if (!limits.allowCycles && e.chain.includes(target.agent)) return block(`'${target.agent}' is already in the chain ${e.chain.join(' → ')}: cycles are not allowed`);
      const declared = agents.get(e.agent);
      const allowed = policy.handoffs?.[e.agent] ?? [...(declared?.handoffs ?? []), ...(declared?.delegates ?? [])];
      if (!allowed.includes(target.agent)) return block(`'${e.agent}' may not pass work to '${target.agent}' (allowed: ${allowed.join(', ') || 'none'})`);
      return ALLOW;
    },
  });
}
