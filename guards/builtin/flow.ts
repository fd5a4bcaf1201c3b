import type { Decision } from '../decision.js';
import { defineGuard, type Guard } from '../guard.js';
import type { GuardEvent } from '../guard-event.js';
import { BOTTOM, flowsTo, levelRank, type Label } from '../../agents/label.js';
import { describeLabel, type GuardContext } from './context.js';
import type { Policy } from '../policy/policy.js';

/** Rewrites content so that it may reach a sink below its label (the content guard knows how). */
export type Redactor = (content: string) => string;

/**
 * What a reply to a principal with these roles may carry: the highest of their roles' clearances, or
 * the policy's `reply`. The edge shows a reader of a run's events no more than this either.
 */
export function replyClearance(c: Policy['clearance'], roles: readonly string[]): Label {
  // Roles come from tokens: a role named `constructor` must not reach Object's own members.
  const granted = roles.flatMap((r) => (Object.hasOwn(c.roles, r) ? [c.roles[r]!] : []));
  if (granted.length === 0) return c.reply;
  return granted.reduce((a, b) => (levelRank(b.level) > levelRank(a.level) || (b.level === a.level && b.categories.length > a.categories.length) ? b : a));
}

/**
 * Information flow: the context's label against the clearance of where it is going — another
 * agent, a tool's arguments (external tools especially), or the reply to the principal.
 *
 * - An agent's clearance is the policy's `clearance.agents` entry, else the agent's own
 *   declaration, else the lowest label (public, no categories): an agent nobody cleared, or one
 *   this process does not know, receives only what anyone may. A name that matches no agent is
 *   refused when the policy is loaded against the agents, so a misspelt entry cannot leave the
 *   agent meant without a limit.
 * - A tool's arguments are limited by the policy's `clearance.tools` entry, else, for a tool whose
 *   effect is `external`, by `clearance.external`. Other tools (`read`, `write`) keep what they are
 *   given inside our systems and have no limit unless the policy lists them.
 */
export function flowGuard({ policy, agents }: GuardContext, redactor?: Redactor): Guard {
  const c = policy.clearance;
  // Names come from the model and from envelopes: `constructor` must not reach Object's own members.
  const own = <T>(table: Record<string, T>, name: string): T | undefined => (Object.hasOwn(table, name) ? table[name] : undefined);
  const sinkFor = (e: GuardEvent): { name: string; clearance: Label; note?: string } | undefined => {
    if (e.stage === 'handoff' && e.target) {
      const target = e.target.agent;
      const clearance = own(c.agents, target) ?? agents.get(target)?.clearance;
      if (clearance) return { name: `agent '${target}'`, clearance };
      return { name: `agent '${target}'`, clearance: BOTTOM, note: `'${target}' has no clearance, so it gets the lowest; declare one under the policy's clearance.agents or in its definition` };
    }
    if (e.stage === 'tool_call' && e.tool) {
      const effect = own(policy.tools, e.tool.name)?.effect ?? e.tool.effect;
      const clearance = own(c.tools, e.tool.name) ?? (effect === 'external' ? c.external : undefined);
      return clearance && { name: `tool '${e.tool.name}'`, clearance };
    }
    if (e.stage === 'output') return { name: `the reply to '${e.principal.id}'`, clearance: replyClearance(c, e.principal.roles) };
    return undefined;
  };
  return defineGuard({
    name: 'flow',
    stages: ['handoff', 'tool_call', 'output'],
    check(e): Decision {
      const sink = sinkFor(e);
      if (!sink || flowsTo(e.label, sink.clearance)) return { verdict: 'allow', reasons: [], risk: 0 };
      const reason = `the context is ${describeLabel(e.label)}, above the clearance of ${sink.name} (${describeLabel(sink.clearance)})${sink.note ? ` (${sink.note})` : ''}`;
      // Only text can be rewritten to fit: arguments and handoffs carry the whole context.
      if (c.onViolation === 'redact' && e.stage === 'output' && redactor && e.content !== undefined) {
        return { verdict: 'redact', reasons: [`${reason}: sensitive values redacted`], risk: 0.5, content: redactor(e.content) };
      }
      return { verdict: c.onViolation === 'escalate' ? 'escalate' : 'block', reasons: [reason], risk: 0.8 };
    },
  });
}
