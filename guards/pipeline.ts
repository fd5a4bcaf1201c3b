import { VERDICTS, type Decision, type Verdict } from './decision.js';
import type { Guard } from './guard.js';
import type { GuardEvent, GuardPipeline } from './guard-event.js';
import { join, type Label } from '../agents/label.js';

export type PolicyMode = 'enforce' | 'monitor';

/** What one guard said, or what happened when it could not say. */
export interface GuardResult {
  guard: string;
  verdict: Verdict;
  reasons: string[];
  risk: number;
  labels?: Label;
  flags?: string[];
  /** Reasons that quote what was judged (see `Decision.quoted`). */
  quoted?: string[];
  /** Set when the guard threw, timed out or returned something that is not a decision. */
  error?: string;
  /** The guard failed and the policy let it fail open (monitor mode only). */
  failedOpen?: boolean;
  /** Its reasons are fixed templates that never quote what it judged (see `PipelineOptions.fixedReasons`). */
  fixedReasons?: boolean;
}

export interface PipelineDecision extends Decision {
  mode: PolicyMode;
  /** What enforcement would have done; differs from `verdict` only in monitor mode. */
  decided: Verdict;
  results: GuardResult[];
}

export interface PipelineOptions {
  guards: readonly Guard[];
  mode?: PolicyMode;
  /** Time budget of an asynchronous guard that sets none of its own. */
  timeoutMs?: number;
  /** Guards that may fail open, and only while the mode is `monitor`. */
  failOpen?: readonly string[];
  /**
   * Guards whose `reasons` are fixed templates over names, kinds, labels and numbers, never quoting
   * what they judge: the runtime shows them to every reader of a run and writes them to the audit
   * log. Any other guard's reasons count as content.
   */
  fixedReasons?: readonly Guard[];
}

const rank = (v: Verdict): number => VERDICTS.indexOf(v);

class GuardTimeoutError extends Error {}

function isDecision(value: unknown): value is Decision {
  const d = value as Decision | undefined;
  return (
    typeof d === 'object' &&
    d !== null &&
    VERDICTS.includes(d.verdict) &&
    Array.isArray(d.reasons) &&
    typeof d.risk === 'number' &&
    d.risk >= 0 &&
    d.risk <= 1 &&
    (d.content === undefined || typeof d.content === 'string') &&
    (d.flags === undefined || (Array.isArray(d.flags) && d.flags.every((f) => typeof f === 'string'))) &&
    (d.quoted === undefined || (Array.isArray(d.quoted) && d.quoted.every((q) => typeof q === 'string')))
  );
}

/**
 * Runs the guards of a stage in order and combines what they say: the most restrictive verdict
 * wins, reasons and labels accumulate, and each redaction applies to the content the next guard
 * sees. A guard that throws, times out or answers nonsense counts as `block`.
 */
export class Pipeline implements GuardPipeline {
  readonly mode: PolicyMode;
  private readonly guards: readonly Guard[];
  private readonly timeoutMs: number;
  private readonly failOpen: ReadonlySet<string>;
  private readonly fixedReasons: ReadonlySet<Guard>;

  constructor(options: PipelineOptions) {
    this.guards = options.guards;
    this.mode = options.mode ?? 'enforce';
    this.timeoutMs = options.timeoutMs ?? 1000;
    this.failOpen = new Set(options.failOpen ?? []);
    this.fixedReasons = new Set(options.fixedReasons ?? []);
  }

  async evaluate(event: GuardEvent): Promise<PipelineDecision> {
    let verdict: Verdict = 'allow';
    let risk = 0;
    let labels: Label | undefined;
    const flags = new Set<string>();
    let content = event.content;
    let redacted = false;
    const reasons: string[] = [];
    const results: GuardResult[] = [];
    for (const guard of this.guards) {
      if (!guard.stages.has(event.stage)) continue;
      const result = await this.ask(guard, content === event.content ? event : { ...event, content });
      results.push(result);
      if (rank(result.verdict) > rank(verdict)) verdict = result.verdict;
      risk = Math.max(risk, result.risk);
      if (result.labels) labels = labels ? join(labels, result.labels) : result.labels;
      for (const flag of result.flags ?? []) flags.add(flag);
      for (const reason of result.reasons) reasons.push(`${guard.name}: ${reason}`);
      if (result.verdict === 'redact' && result.content !== undefined) {
        content = result.content;
        redacted = true;
      }
      // Once blocked under enforcement nothing later can change the outcome.
      if (verdict === 'block' && this.mode === 'enforce') break;
    }
    const decision: PipelineDecision = { verdict, decided: verdict, reasons, risk, mode: this.mode, results };
    if (labels) decision.labels = labels;
    if (flags.size > 0) decision.flags = [...flags].sort();
    if (redacted && verdict === 'redact') decision.content = content;
    // Monitor mode records what would have happened and lets the step through unchanged.
    if (this.mode === 'monitor') {
      decision.verdict = 'allow';
      delete decision.content;
    }
    return decision;
  }

  private async ask(guard: Guard, event: GuardEvent): Promise<GuardResult & { content?: string }> {
    let timer: NodeJS.Timeout | undefined;
    try {
      let answer = guard.check(event);
      // Synchronous guards pay for no timer; asynchronous ones race their time budget.
      if (answer instanceof Promise) {
        const budget = guard.timeoutMs ?? this.timeoutMs;
        answer = await Promise.race([
          answer,
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new GuardTimeoutError(`timed out after ${budget} ms`)), budget);
          }),
        ]);
      }
      if (!isDecision(answer)) throw new Error('returned something that is not a decision');
      if (answer.verdict === 'redact' && answer.content === undefined && event.content !== undefined) throw new Error('redacted without the rewritten content');
      return { guard: guard.name, ...answer, ...(this.fixedReasons.has(guard) ? { fixedReasons: true } : {}) };
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (this.mode === 'monitor' && this.failOpen.has(guard.name)) {
        return { guard: guard.name, verdict: 'allow', reasons: [`failed open: ${message}`], risk: 0, error: message, failedOpen: true };
      }
      return { guard: guard.name, verdict: 'block', reasons: [`failed, so the step is blocked: ${message}`], risk: 1, error: message };
    } finally {
      clearTimeout(timer);
    }
  }
}
