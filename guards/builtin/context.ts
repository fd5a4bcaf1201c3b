import type { Agent } from '../../agents/agent.js';
import type { Label } from '../../agents/label.js';
import type { Policy } from '../policy/policy.js';

/** What the built-in guards know besides the event: the policy and the agents' declarations. */
export interface GuardContext {
  policy: Policy;
  agents: ReadonlyMap<string, Pick<Agent, 'handoffs' | 'delegates' | 'clearance'>>;
}

/** Does any granted permission cover `needed`? A `*` segment matches any one segment; a trailing `*` matches the rest. */
export function permits(granted: Iterable<string>, needed: string): boolean {
  const want = needed.split(':');
  for (const grant of granted) {
    const have = grant.split(':');
    let ok = true;
    for (let i = 0; i < Math.max(have.length, want.length); i++) {
      if (have[i] === '*' && i === have.length - 1) break;
      if (have[i] !== '*' && have[i] !== want[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

export function permissionsOf(policy: Policy, roles: readonly string[]): Set<string> {
  const granted = new Set<string>();
  // Roles come from tokens: a role named `constructor` or `__proto__` must not reach Object's own members.
  for (const role of roles) for (const p of Object.hasOwn(policy.roles, role) ? policy.roles[role]! : []) granted.add(p);
  return granted;
}

export const describeLabel = (l: Label): string => `${l.level}${l.categories.length ? ` [${l.categories.join(', ')}]` : ''}`;
