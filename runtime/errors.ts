import type { RunStatus } from './run-store.js';

export class UnknownAgentError extends Error {
  override readonly name = 'UnknownAgentError';
  constructor(
    readonly agent: string,
    readonly known: readonly string[],
  ) {
    super(`unknown agent '${agent}'; ${known.length ? `known agents: ${known.join(', ')}` : 'no agent workers have announced themselves'}`);
  }
}

export class InvalidRunInputError extends Error {
  override readonly name = 'InvalidRunInputError';
}

/** `run.result()` rejects with this when the run did not complete. */
export class RunFailedError extends Error {
  override readonly name = 'RunFailedError';
  constructor(
    readonly runId: string,
    readonly status: Exclude<RunStatus, 'running' | 'completed'>,
    readonly reason: string,
  ) {
    super(`run ${runId} ${status}: ${reason}`);
  }
}
