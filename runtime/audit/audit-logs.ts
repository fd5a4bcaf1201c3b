import type { RedisClient } from '../redis-url.js';
import type { Cells } from '../stores/cells.js';
import type { AuditEntryInput, AuditRecord } from './audit-record.js';
import { AuditLog, type AuditLogOptions } from './audit-log.js';

/**
 * A deployment's audit logs: one hash chain per cell (see cells.ts), each a complete {@link AuditLog}
 * under its cell's prefix, so a run's records are one chain in order and appends of runs in different
 * cells never wait on one head. With one cell it is the single log under the prefix, as it always was.
 * Anchors name each log by its prefix, so each chain is anchored and verified on its own.
 */
export class AuditLogs {
  private readonly logs: AuditLog[];

  constructor(
    readonly cells: Cells,
    options: Omit<AuditLogOptions, 'prefix'> & { redis: RedisClient },
  ) {
    this.logs = cells.all.map((prefix) => new AuditLog({ ...options, prefix }));
  }

  /** The log that holds a run's records. */
  of(runId: string): AuditLog {
    return this.logs[this.cells.of(runId)]!;
  }

  /** Every cell's log, in cell order; each one's `prefix` names it in anchors. */
  get all(): ReadonlyArray<{ prefix: string; log: AuditLog }> {
    return this.logs.map((log, cell) => ({ prefix: this.cells.all[cell]!, log }));
  }

  /** Appends as `writer` (see `AuditLog.as`) to the log of each entry's run. */
  as(writer: string, key?: AuditLogOptions['key']): { append(entry: AuditEntryInput): Promise<AuditRecord> } {
    const sinks = this.logs.map((log) => log.as(writer, key));
    return { append: (entry) => sinks[this.cells.of(entry.runId)]!.append(entry) };
  }

  async close(): Promise<void> {
    await Promise.all(this.logs.map((log) => log.close()));
  }
}
