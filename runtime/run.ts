import { RunFailedError } from './errors.js';
import { eventFor, outcomeFor, readerOf, type ClearanceOf, type Reader } from './event-view.js';
import { TERMINAL_EVENTS, type RunEvent } from './events.js';
import type { RunRecord, RunStore } from './stores/run-store.js';

export interface RunResult {
  runId: string;
  output: string;
  usage: RunRecord['usage'];
}

/**
 * A handle on one run, wherever its agents execute. It reads the run as the run's principal: events and
 * the error carry what they quote only where the policy clears the principal for it, as for the reply.
 */
export class Run {
  constructor(
    readonly id: string,
    private readonly store: RunStore,
    /** Made by `start` in this process: the run exists, so `result` may wait for its end before reading it. */
    private readonly started = false,
    /** The policy's clearance of a reader; without one nothing is withheld. */
    private readonly clearanceOf?: ClearanceOf,
  ) {}

  /** The run's principal as a reader of it; a run without a record reads as cleared for public text only. */
  private async reader(record?: RunRecord): Promise<Reader> {
    if (!this.clearanceOf) return { clearance: undefined, owner: true };
    const principal = (record ?? (await this.store.getRun(this.id)))?.principal;
    return readerOf(principal, principal, this.clearanceOf);
  }

  async record(): Promise<RunRecord | undefined> {
    return this.store.getRun(this.id);
  }

  /**
   * Every event of the run from its start, live, ending after the terminal one, or after the
   * first for which `until` holds (e.g. `rollback.completed`, which follows the end), or on `signal`.
   */
  async *events(options: { pollMs?: number; until?: (event: RunEvent) => boolean; signal?: AbortSignal } = {}): AsyncGenerator<RunEvent> {
    const reader = await this.reader();
    const cursor = this.store.openEvents(this.id);
    const stop = options.until ?? ((event: RunEvent) => TERMINAL_EVENTS.has(event.type));
    try {
      while (!options.signal?.aborted) {
        const batch = await cursor.read(options.pollMs ?? 1000);
        for (const { event } of batch) {
          const seen = eventFor(event, reader);
          yield seen;
          if (stop(seen)) return;
        }
        // The terminal event may have been trimmed away or never written by a dead producer.
        if (batch.length === 0 && !options.until) {
          const record = await this.store.getRun(this.id);
          if (!record || record.status !== 'running') return;
        }
      }
    } finally {
      await cursor.close();
    }
  }

  /** Waits for the run to end: resolves with its output, or rejects with RunFailedError. */
  async result(options: { timeoutMs?: number } = {}): Promise<RunResult> {
    const deadline = options.timeoutMs !== undefined ? Date.now() + options.timeoutMs : Infinity;
    // The record is read first (unless this process just started the run) and again once the run's end is signalled or the wait times out.
    let wait = this.started;
    for (;;) {
      if (wait) await this.store.waitForEnd(this.id, Math.min(5000, Math.max(1, deadline - Date.now())));
      wait = true;
      const record = await this.store.getRun(this.id);
      if (!record) throw new Error(`run ${this.id} does not exist (or has expired)`);
      if (record.status === 'completed') return { runId: this.id, output: record.output ?? '', usage: record.usage };
      if (record.status !== 'running') throw new RunFailedError(this.id, record.status, (await this.errorOf(record)) ?? record.status);
      if (Date.now() > deadline) throw new Error(`run ${this.id} still running after ${options.timeoutMs} ms`);
    }
  }

  /** The ended run's error as its principal may see it: the record's words, with what its `run.failed` event quotes. */
  private async errorOf(record: RunRecord): Promise<string | undefined> {
    if (record.status !== 'failed') return record.error;
    const events = (await this.store.listEvents(this.id)).map((e) => e.event);
    return outcomeFor(record, events, await this.reader(record)).error;
  }

  /** Stops the run at its next step; work already done stays done. */
  async cancel(reason = 'cancelled by request'): Promise<boolean> {
    return this.store.finishRun(this.id, 'cancelled', { error: reason }, { ended: { type: 'run.cancelled', reason } });
  }
}
