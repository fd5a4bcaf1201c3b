import type { Agent } from '../../agents/agent.js';
import { flowGuard, type Redactor } from '../builtin/flow.js';
import { limitsGuard } from '../builtin/limits.js';
import { permissionsGuard, type Authorizer } from '../builtin/permissions.js';
import { riskGuard } from '../builtin/risk.js';
import { defineGuard, type Guard } from '../guard.js';
import { Pipeline } from '../pipeline.js';
import type { Policy } from './policy.js';
import type { NameUse } from './policy-names.js';

/** A policy with what its files compile to. */
export interface CompiledPolicy {
  policy: Policy;
  /** Parsed Cedar rules, when the policy names any. */
  cedar?: Authorizer;
  /** Content guards (PII, secrets, injection), placed after permissions and before flow. */
  content?: readonly Guard[];
  redactor?: Redactor;
  /** The agent, tool, role, ... names the policy and its Cedar files write, where (see policy-names.ts). */
  names?: readonly NameUse[];
}

export interface PolicyPipelineOptions extends CompiledPolicy {
  agents: readonly Agent[];
  /** The user's own guards, run last. */
  guards?: readonly Guard[];
}

/** A tool's result labels as the policy restates them (e.g. a feed the security team knows is third-party). */
function returnsGuard(policy: Policy): Guard {
  return defineGuard({
    name: 'labels',
    stages: ['tool_result'],
    check(e) {
      const override = e.tool && policy.tools[e.tool.name]?.returns;
      return override ? { verdict: 'allow', reasons: [], risk: 0, labels: override } : { verdict: 'allow', reasons: [], risk: 0 };
    },
  });
}

/** The built-in guards in the order that makes them cheap: limits, permissions, content, flow, risk; then the user's. */
export function createPolicyPipeline(options: PolicyPipelineOptions): Pipeline {
  const { policy } = options;
  const context = { policy, agents: new Map(options.agents.map((a) => [a.name, a])) };
  const builtIn: Guard[] = [
    limitsGuard(context),
    permissionsGuard(context, options.cedar),
    returnsGuard(policy),
    ...(options.content ?? []),
    flowGuard(context, options.redactor),
    riskGuard(context),
  ];
  const guards: Guard[] = [...builtIn, ...(options.guards ?? [])];
  const names = new Set<string>();
  for (const g of guards) {
    if (names.has(g.name)) throw new Error(`two guards are named '${g.name}'`);
    names.add(g.name);
  }
  return new Pipeline({ guards, mode: policy.mode, timeoutMs: policy.guards.timeoutMs, failOpen: policy.guards.failOpen, fixedReasons: builtIn });
}
