import type { Decision } from '../decision.js';
import { defineGuard, type Guard } from '../guard.js';
import type { GuardEvent } from '../guard-event.js';
import type { Policy } from '../policy/policy.js';
import { traceArguments, type TracedValue } from './provenance.js';
import type { GuardContext } from './context.js';

export interface RiskAssessment {
  score: number;
  factors: string[];
  /** Argument values that only untrusted content supplied. */
  unprovenanced: TracedValue[];
}

const assessed = new WeakMap<GuardEvent, RiskAssessment>();

/** The risk of a tool call: effect, declared risk, what the context holds, where the arguments came from, role and repetition. */
export function assessRisk(e: GuardEvent, policy: Policy): RiskAssessment {
  const cached = assessed.get(e);
  if (cached) return cached;
  const w = policy.risk.weights;
  const factors: string[] = [];
  let score = 0;
  const add = (amount: number, why: string) => {
    if (amount === 0) return;
    score += amount;
    factors.push(`${why} ${amount > 0 ? '+' : ''}${amount.toFixed(2)}`);
  };
  const tool = e.tool;
  const effect = (tool && policy.tools[tool.name]?.effect) ?? tool?.effect ?? 'read';
  const declared = (tool && policy.tools[tool.name]?.risk) ?? tool?.risk ?? 'low';
  add(w.effect[effect], `effect ${effect}`);
  add(w.declared[declared], `declared risk ${declared}`);
  if (e.label.integrity === 'untrusted') add(w.untrusted, 'untrusted content in context');
  // A side effect after text that tries to command the agent is the moment an injection pays off.
  if (effect !== 'read' && e.history?.some((i) => i.flags?.includes('instructions'))) add(w.instructions, 'instructions in third-party content');
  if (e.label.level === 'confidential') add(w.confidential, 'confidential context');
  if (e.label.level === 'restricted') add(w.restricted, 'restricted context');
  if (e.priorCalls) add(w.repeatedCall * e.priorCalls, `${e.priorCalls} earlier call(s)`);
  for (const role of e.principal.roles) if (policy.risk.roles[role]) add(policy.risk.roles[role]!, `role ${role}`);
  // Only side effects can carry out an injected instruction; reads are judged by flow and content.
  // Which third-party content makes an argument suspect: any (the default), or only content that reads as instructions.
  const suspect = policy.risk.suspect === 'instructions' ? ['instructed'] : ['untrusted', 'instructed'];
  const unprovenanced = effect === 'read' ? [] : traceArguments(e.args, e.history ?? []).filter((t) => suspect.includes(t.provenance));
  // A count, not the paths: a record's keys are the model's own words, and this reason is our fixed text in
  // events and the audit log. Which values they are, and from where, the approver sees in the request's sources.
  if (unprovenanced.length > 0) add(w.unprovenanced, `${unprovenanced.length} argument value(s) only in untrusted content`);
  const assessment = { score: Math.min(1, Math.max(0, score)), factors, unprovenanced };
  assessed.set(e, assessment);
  return assessment;
}

/** Progressive enforcement: thresholds map the score to allow, validation, human approval or block. */
export function riskGuard({ policy }: GuardContext): Guard {
  const t = policy.risk.thresholds;
  return defineGuard({
    name: 'risk',
    stages: ['tool_call'],
    check(e): Decision {
      const { score, factors, unprovenanced } = assessRisk(e, policy);
      const why = `risk ${score.toFixed(2)} (${factors.join(', ') || 'no factors'})`;
      if (score >= t.block) return { verdict: 'block', reasons: [`${why} is at or above the block threshold ${t.block}`], risk: score };
      if (score >= t.escalate) return { verdict: 'escalate', reasons: [`${why} needs approval (threshold ${t.escalate})`], risk: score };
      if (score >= t.validate) {
        // Additional validation: the call goes ahead only if every identifying argument traces to trusted input.
        if (unprovenanced.length > 0) return { verdict: 'escalate', reasons: [`${why}: arguments from untrusted content need approval`], risk: score };
        return { verdict: 'allow', reasons: [`${why}: validated, arguments trace to trusted input`], risk: score };
      }
      return { verdict: 'allow', reasons: [], risk: score };
    },
  });
}
