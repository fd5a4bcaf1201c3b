import type { Decision } from '../decision.js';
import { defineGuard, type Guard } from '../guard.js';
import type { GuardEvent } from '../guard-event.js';
import type { CedarPolicies } from '../policy/cedar-policies.js';
import { cedarRequestFor } from '../policy/cedar-request.js';
import { permissionsOf, permits, type GuardContext } from './context.js';
import { assessRisk } from './risk.js';

/** The part of a Cedar policy set this guard uses (see `guards/policy/cedar-request.ts`). */
export type Authorizer = Pick<CedarPolicies, 'authorize' | 'escalates'>;

const block = (reason: string): Decision => ({ verdict: 'block', reasons: [reason], risk: 1 });
/** Cedar's errors may quote the values it was given (the call's arguments): they go as quoted reasons. */
const undecided = (errors: readonly string[]): Decision => ({ verdict: 'block', reasons: ['Cedar could not decide'], quoted: [...errors], risk: 1 });

/** A Cedar deny: a request for approval when every forbid that decided it is marked `@escalate`, else a block. */
function denied(cedar: Authorizer, determining: string[]): Decision {
  if (cedar.escalates(determining)) return { verdict: 'escalate', reasons: [`needs approval under ${determining.join(', ')}`], risk: 0.7 };
  return block(`forbidden by ${determining.join(', ')}`);
}

/**
 * The agent acts with the principal's authority, never more: a tool must be declared by the agent
 * and its permissions held by the principal's roles, or a Cedar rule must permit the call; a Cedar
 * `forbid` overrides both. What nothing permits is denied.
 */
export function permissionsGuard({ policy }: GuardContext, cedar?: Authorizer): Guard {
  const ask = (e: GuardEvent) => {
    const request = cedar && cedarRequestFor(e, e.stage === 'tool_call' ? assessRisk(e, policy).score : 0);
    return request && cedar.authorize(request);
  };
  return defineGuard({
    name: 'permissions',
    stages: ['tool_call', 'handoff'],
    check(e) {
      if (e.stage === 'handoff') {
        if (!e.target) return block('a handoff without a target');
        // Taking a delegate's answer in is no action of the principal's: permissions and Cedar rules governed the asking.
        if (e.target.answerFrom !== undefined) return { verdict: 'allow', reasons: [], risk: 0 };
        const answer = ask(e);
        if (answer?.errors.length) return undecided(answer.errors);
        if (answer?.decision === 'deny' && answer.determining.length > 0) return denied(cedar!, answer.determining);
        return { verdict: 'allow', reasons: [], risk: 0 };
      }
      const tool = e.tool;
      if (!tool) return block('a tool call without a tool');
      if (e.agentTools && !e.agentTools.includes(tool.name)) return block(`'${e.agent}' does not declare the tool '${tool.name}'`);
      const required = policy.tools[tool.name]?.requires ?? tool.requires;
      const granted = permissionsOf(policy, e.principal.roles);
      const missing = required.filter((p) => !permits(granted, p));
      const answer = ask(e);
      if (answer?.errors.length) return undecided(answer.errors);
      if (answer?.decision === 'deny' && answer.determining.length > 0) {
        // Approval can lift a rule's forbid, never a missing permission.
        const verdict = denied(cedar!, answer.determining);
        if (verdict.verdict === 'block' || missing.length === 0) return verdict;
      }
      if (missing.length === 0) return { verdict: 'allow', reasons: [], risk: 0 };
      if (answer?.decision === 'allow') return { verdict: 'allow', reasons: [`permitted by ${answer.determining.join(', ')}`], risk: 0 };
      return block(`'${e.principal.id}' lacks ${missing.join(', ')} for '${tool.name}' and no rule permits it`);
    },
  });
}
