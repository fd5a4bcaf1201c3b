import { categoriesOf, type Finding } from '../content/finding.js';
import { redact, scan } from '../content/scanner.js';
import type { SecretRule } from '../content/gitleaks-rules.js';
import type { PiiOptions } from '../content/pii.js';
import type { Decision, Stage, Verdict } from '../decision.js';
import { defineGuard, type Guard } from '../guard.js';
import type { GuardEvent } from '../guard-event.js';
import { join, label, type Label } from '../../agents/label.js';
import type { Policy } from '../policy/policy.js';

type Action = Policy['content']['pii']['action'];

const VERDICT_OF: Record<Action, Verdict> = { allow: 'allow', label: 'allow', redact: 'redact', escalate: 'escalate', block: 'block' };

/** The text a step carries: for a tool call, its arguments. */
const textOf = (e: GuardEvent): string | undefined => (e.stage === 'tool_call' ? (e.args ? JSON.stringify(e.args) : undefined) : e.content);

/** Is this text from a source a third party could have written? Only there do instructions count as injection. */
function untrustedSource(e: GuardEvent, policy: Policy): boolean {
  if (e.stage === 'tool_result' && e.tool) return (policy.tools[e.tool.name]?.returns ?? e.tool.returns).integrity === 'untrusted';
  if (e.stage === 'receive') return e.label.integrity === 'untrusted';
  return false;
}

export interface ContentScanning {
  secretRules?: readonly SecretRule[];
}

const piiOptions = (policy: Policy): PiiOptions => (policy.content.pii.regions === undefined ? {} : { regions: policy.content.pii.regions });

/** The policy's redaction of sensitive values, shared with the flow guard. */
export function contentRedactor(policy: Policy, options: ContentScanning = {}): (text: string) => string {
  return (text) => redact(text, scan(text, { pii: piiOptions(policy), secrets: options.secretRules ?? true, injection: false, maxBytes: policy.content.maxBytes }));
}

/**
 * PII, secrets and prompt-injection signals in whatever a step carries. Findings add labels
 * (PII makes the context confidential, secrets restricted, injection untrusted); the policy says
 * what else to do at which stages.
 */
export function contentGuard(policy: Policy, options: ContentScanning = {}): Guard {
  const c = policy.content;
  const stagesFor = (kind: 'pii' | 'secrets'): ReadonlySet<Stage> => new Set(c[kind].stages);
  const piiStages = stagesFor('pii');
  const secretStages = stagesFor('secrets');
  return defineGuard({
    name: 'content',
    stages: ['receive', 'tool_call', 'tool_result', 'handoff', 'output'],
    check(e): Decision {
      const text = textOf(e);
      if (!text) return { verdict: 'allow', reasons: [], risk: 0 };
      if (Buffer.byteLength(text) > c.maxBytes) return { verdict: 'block', reasons: [`the ${e.stage} text is larger than the scan limit of ${c.maxBytes} bytes`], risk: 1 };
      const injection = untrustedSource(e, policy);
      const findings = scan(text, {
        pii: piiOptions(policy),
        secrets: options.secretRules ?? true,
        injection,
        maxBytes: c.maxBytes,
      }).filter((f) => f.type !== 'injection' || f.confidence >= c.injection.minConfidence);
      if (findings.length === 0) return { verdict: 'allow', reasons: [], risk: 0 };

      const pii = findings.filter((f) => f.type === 'pii');
      const secrets = findings.filter((f) => f.type === 'secret');
      const injected = findings.filter((f) => f.type === 'injection');
      let labels: Label | undefined;
      const addLabel = (l: Label) => (labels = labels ? join(labels, l) : l);
      if (pii.length) addLabel(label({ level: 'confidential', categories: categoriesOf(pii) }));
      if (secrets.length) addLabel(label({ level: 'restricted', categories: ['credentials'] }));
      if (injected.length) addLabel(label({ integrity: 'untrusted' }));

      let verdict = 'allow' as Verdict;
      const reasons: string[] = [];
      const redactable: Finding[] = [];
      const apply = (action: Action, found: Finding[], what: string) => {
        if (found.length === 0) return;
        const kinds = [...new Set(found.map((f) => f.kind))].join(', ');
        reasons.push(`${what} (${kinds}): ${action}`);
        // Arguments cannot be partly rewritten without changing what the call does: block instead.
        const wanted = action === 'redact' && e.stage === 'tool_call' ? 'block' : VERDICT_OF[action];
        if (wanted === 'redact') redactable.push(...found);
        const order: Verdict[] = ['allow', 'redact', 'escalate', 'block'];
        if (order.indexOf(wanted) > order.indexOf(verdict)) verdict = wanted;
      };
      apply(piiStages.has(e.stage) ? c.pii.action : 'label', pii, 'personal data');
      apply(secretStages.has(e.stage) ? c.secrets.action : 'label', secrets, 'secrets');
      apply(c.injection.action, injected, 'instructions in untrusted content');
      const risk = Math.max(0, ...findings.map((f) => (f.type === 'pii' ? 0.2 : f.confidence)));
      const decision: Decision = { verdict, reasons, risk, ...(labels ? { labels } : {}), ...(injected.length ? { flags: ['instructions'] } : {}) };
      if (verdict === 'redact') decision.content = redact(text, redactable);
      return decision;
    },
  });
}
