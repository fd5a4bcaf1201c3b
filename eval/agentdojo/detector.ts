import { compilePolicy, type LoadedPolicy } from '../../guards/policy/load-policy.js';
import type { Policy } from '../../guards/policy/policy.js';

export const DETECTOR_MODES = ['on', 'off'] as const;
export type DetectorMode = (typeof DETECTOR_MODES)[number];

/** `--detector`: on, off or both. */
export function parseDetector(value: string): DetectorMode[] {
  if (value === 'both') return ['on', 'off'];
  if (value === 'on' || value === 'off') return [value];
  throw new Error(`--detector must be on, off or both, not '${value}'`);
}

/**
 * The loaded policy with the content guard's prompt-injection detector off and nothing else
 * changed. `action: allow` alone would not do it: the guard still labels what it finds untrusted
 * and flags it as instructions for the risk guard; a finding must also reach `minConfidence`, and
 * the detector reports at most 0.99, so at 1 nothing counts. (The schema's own bounds: this is a
 * policy a user could write.)
 */
export function withoutInjectionDetector(loaded: LoadedPolicy): LoadedPolicy {
  const policy: Policy = { ...loaded.policy, content: { ...loaded.policy.content, injection: { ...loaded.policy.content.injection, action: 'allow', minConfidence: 1 } } };
  const files = loaded.source ?? { file: 'policy', cedarFiles: [] };
  return { ...compilePolicy(policy, files), ...(loaded.source ? { source: { ...loaded.source, policy } } : {}) };
}

/** The policy each detector mode replays with. */
export const policyFor = (loaded: LoadedPolicy, mode: DetectorMode): LoadedPolicy => (mode === 'on' ? loaded : withoutInjectionDetector(loaded));
