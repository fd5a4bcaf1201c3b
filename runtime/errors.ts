import type { RunStatus } from './stores/run-store.js';

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

/** Whether an error says Redis could not be reached (as opposed to refusing a command). */
export function isRedisUnavailable(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /max retries per request|Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Stream isn't writeable|enableOfflineQueue|LOADING/i.test(message);
}

/** The transport (Redis) did not answer: the run was not started, and may be started again. */
export class TransportUnavailableError extends Error {
  override readonly name = 'TransportUnavailableError';
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
