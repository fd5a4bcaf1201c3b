import type { Decision } from '../decision.js';
import { defineGuard, type Guard } from '../guard.js';
import type { ContextItem, GuardEvent } from '../guard-event.js';
import type { Policy } from '../policy/policy.js';
import { traceArguments, type TracedValue } from './provenance.js';
import type { GuardContext } from './context.js';

export interface RiskAssessment {
  score: number;
  factors: string[];
  /** Argument values that only untrusted content supplied, or destinations from nowhere. */
  unprovenanced: TracedValue[];
  /** Every identifying argument value with where it came from. */
  traced: TracedValue[];
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
  const targets = (tool && policy.tools[tool.name]?.targets) ?? [];
  const isTarget = underAny(targets);
  const traced = effect === 'read' ? [] : traceArguments(e.args, e.history ?? [], { trustedFields: (name) => policy.tools[name]?.trustedFields, always: (path) => isTarget({ path }) });
  const unprovenanced = suspectValues(traced, isTarget, !!tool && requestNamesAction(tool.name, e.history ?? []));
  // Counts and our own tools' names, not paths or values: a record's keys are the model's own words, and this
  // reason is our fixed text in events and the audit log. The approver sees which values, masked, in the request's sources.
  if (unprovenanced.length > 0) add(w.unprovenanced, describeSuspects(unprovenanced, e.agentTools ?? []));
  const assessment = { score: Math.min(1, Math.max(0, score)), factors, unprovenanced, traced };
  assessed.set(e, assessment);
  return assessment;
}

/**
 * The argument values a side effect must not take on the word of third parties: identifying values
 * found only in untrusted content (whatever the injection detector thought of it); and targets (where
 * the effect goes: addresses, accounts, URLs, phone numbers, and the arguments the policy names as
 * `targets`) unless trusted input supplied them. Content the principal named may supply what is paid
 * or written (an amount, a subject), never where it goes: whoever wrote that file or page chose it.
 * A target found nowhere (decoded from text written to slip past a matcher, or invented) is suspect too.
 */
export function suspectValues(traced: readonly TracedValue[], isTarget: (t: TracedValue) => boolean = () => false, actionRequested = false): TracedValue[] {
  return traced.filter((t) => {
    if (t.provenance === 'untrusted' || t.provenance === 'instructed') return true;
    const target = t.kind !== undefined || isTarget(t);
    if (t.provenance === 'trusted') return target && t.contested === true;
    if (t.provenance === 'designated') return target && (t.searched === true || !actionRequested);
    return target && t.provenance === 'unseen';
  });
}

/**
 * Whether the principal's own request asks for this kind of action: the verb a tool's name starts with
 * (`invite_user_to_slack`: "invite"), as a word of the request. Only then may content the principal named
 * supply where the effect goes ("invite Dora, her address is on her page"); a page they asked to be read
 * authorises no invitation. It reads the principal's words, never a third party's, so a miss only costs
 * an approval.
 */
export function requestNamesAction(tool: string, history: readonly ContextItem[]): boolean {
  const verb = (tool.split(/[_\-.]/)[0] ?? '').toLowerCase();
  if (!/^[a-z]{3,}$/.test(verb)) return false;
  // The verb as a whole word, inflected: "send", "sends", "sending", "sent"; not "sender" or "address".
  const stem = verb.replace(/e$/, '');
  const forms = [verb, `${verb}s`, `${verb}es`, `${stem}ed`, `${stem}ing`, ...(verb.endsWith('d') ? [`${verb.slice(0, -1)}t`] : [])];
  const word = new RegExp(`(?:^|[^a-z])(?:${forms.join('|')})(?![a-z])`, 'i');
  return history.some((i) => i.source === 'user' && i.label.integrity !== 'untrusted' && word.test(i.content));
}

/** Whether a traced value sits under one of the argument names a policy lists (`recipient` covers `recipient` and `recipient.0`). */
const underAny = (names: readonly string[]) => (t: { path: string }) => names.some((n) => t.path === n || t.path.startsWith(`${n}.`));

function describeSuspects(suspects: readonly TracedValue[], declared: readonly string[]): string {
  const third = suspects.filter((t) => t.provenance === 'untrusted' || t.provenance === 'instructed');
  const contested = suspects.filter((t) => t.provenance === 'trusted').length;
  // Only tools the agent declares are named: a result of an unknown tool is named by the model.
  const tools = [...new Set(third.flatMap((t) => (t.from?.name && declared.includes(t.from.name) ? [t.from.name] : [])))].sort();
  const parts: string[] = [];
  if (third.length > 0) parts.push(`${third.length} argument value(s) only in untrusted content${tools.length ? ` (from ${tools.join(', ')})` : ''}`);
  if (contested > 0) parts.push(`${contested} target(s) third-party text also names`);
  const named = suspects.filter((t) => t.provenance === 'designated').length;
  if (named > 0) parts.push(`${named} target(s) only in third-party content the principal named`);
  const nowhere = suspects.filter((t) => t.provenance === 'unseen').length;
  if (nowhere > 0) parts.push(`${nowhere} target(s) found in no source`);
  return parts.join(', ');
}

/** What a validated call's arguments trace to, truthfully. */
function describeValidated(traced: readonly TracedValue[]): string {
  const named = traced.some((t) => t.provenance === 'designated');
  const composed = traced.some((t) => t.provenance === 'unseen');
  if (!named && !composed) return 'arguments trace to trusted input';
  const parts = ['arguments trace to trusted input'];
  if (named) parts.push('content the principal named');
  if (composed) parts.push('values the model composed');
  return `${parts.slice(0, -1).join(', ')}${parts.length > 1 ? ' or ' : ''}${parts.at(-1)}`;
}

/** Progressive enforcement: thresholds map the score to allow, validation, human approval or block. */
export function riskGuard({ policy }: GuardContext): Guard {
  const t = policy.risk.thresholds;
  return defineGuard({
    name: 'risk',
    stages: ['tool_call'],
    check(e): Decision {
      const { score, factors, unprovenanced, traced } = assessRisk(e, policy);
      const why = `risk ${score.toFixed(2)} (${factors.join(', ') || 'no factors'})`;
      if (score >= t.block) return { verdict: 'block', reasons: [`${why} is at or above the block threshold ${t.block}`], risk: score };
      if (score >= t.escalate) return { verdict: 'escalate', reasons: [`${why} needs approval (threshold ${t.escalate})`], risk: score };
      if (score >= t.validate) {
        // Additional validation: the call goes ahead only if every identifying argument traces to trusted input.
        if (unprovenanced.length > 0) return { verdict: 'escalate', reasons: [`${why}: arguments from untrusted content or from no source need approval`], risk: score };
        return { verdict: 'allow', reasons: [`${why}: validated, ${describeValidated(traced)}`], risk: score };
      }
      return { verdict: 'allow', reasons: [], risk: score };
    },
  });
}
