import type { Label } from '../agents/label.js';

export const STAGES = ['receive', 'handoff', 'tool_call', 'tool_result', 'output'] as const;
export type Stage = (typeof STAGES)[number];

/** Ordered from least to most restrictive: combining decisions keeps the later one. */
export const VERDICTS = ['allow', 'redact', 'escalate', 'block'] as const;
export type Verdict = (typeof VERDICTS)[number];

export interface Decision {
  verdict: Verdict;
  reasons: string[];
  /** 0 (none) to 1 (certain harm). */
  risk: number;
  /** Labels the content carries from now on (joined into the context). */
  labels?: Label;
  /** With `redact`: the content as it may pass. */
  content?: string;
  /** What the content was found to carry, for later checks (`instructions`: text that reads as commands to the agent). */
  flags?: string[];
  /**
   * Reasons that quote what was judged (a value, a service's error text): the runtime shows them only
   * to readers cleared for the step's label and never writes them to the audit log.
   */
  quoted?: string[];
}

export const ALLOW: Decision = Object.freeze({ verdict: 'allow', reasons: [], risk: 0 }) as Decision;
