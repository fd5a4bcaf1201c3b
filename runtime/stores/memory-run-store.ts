import { EventEmitter } from 'node:events';
import type { TokenUsage } from '../../agents/model.js';
import type { RunEventInput } from '../events.js';
import type { EventCursor, RunRecord, RunStatus, RunStore, StoredEvent, ToolCallRecord } from '../run-store.js';

interface MemoryRun {
  record: RunRecord;
  events: StoredEvent[];
  calls: Map<string, ToolCallRecord>;
}

/** The embedded transport's store: the same semantics as Redis, held in this process only. */
export class MemoryRunStore implements RunStore {
  private readonly runs = new Map<string, MemoryRun>();
  private readonly appended = new EventEmitter().setMaxListeners(0);
  private seq = 0;
  private readonly seen = new Map<string, string>();

  private run(runId: string): MemoryRun {
    const run = this.runs.get(runId);
    if (!run) throw new Error(`unknown run ${runId}`);
    return run;
  }

  async createRun(record: Omit<RunRecord, 'updatedAt' | 'usage' | 'status'>): Promise<void> {
    if (this.runs.has(record.id)) throw new Error(`run ${record.id} already exists`);
    this.runs.set(record.id, {
      record: { ...record, status: 'running', updatedAt: record.createdAt, usage: { inputTokens: 0, outputTokens: 0 } },
      events: [],
      calls: new Map(),
    });
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const run = this.runs.get(runId);
    return run ? structuredClone(run.record) : undefined;
  }

  async addUsage(runId: string, usage: TokenUsage): Promise<void> {
    const r = this.run(runId).record;
    r.usage = { inputTokens: r.usage.inputTokens + usage.inputTokens, outputTokens: r.usage.outputTokens + usage.outputTokens };
  }

  async finishRun(runId: string, status: Exclude<RunStatus, 'running'>, detail: { output?: string; error?: string }): Promise<boolean> {
    const r = this.run(runId).record;
    if (r.status !== 'running') return false;
    Object.assign(r, { status, updatedAt: Date.now() }, detail);
    return true;
  }

  async appendEvent(runId: string, event: RunEventInput): Promise<void> {
    const stored = { id: String(++this.seq), event: { ...event, at: Date.now() } } as StoredEvent;
    this.run(runId).events.push(stored);
    this.appended.emit(runId);
  }

  openEvents(runId: string): EventCursor {
    let next = 0;
    let wake: (() => void) | undefined;
    const onAppend = () => wake?.();
    this.appended.on(runId, onAppend);
    return {
      read: async (blockMs: number) => {
        const events = this.runs.get(runId)?.events ?? [];
        if (next >= events.length) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, blockMs);
            wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          wake = undefined;
        }
        const fresh = (this.runs.get(runId)?.events ?? []).slice(next);
        next += fresh.length;
        return fresh;
      },
      close: async () => {
        this.appended.off(runId, onAppend);
        wake?.();
      },
    };
  }

  async claimMessage(receiver: string, messageId: string, jobId: string): Promise<'new' | 'redelivery' | 'replay'> {
    const key = `${receiver}:${messageId}`;
    const current = this.seen.get(key);
    if (current === undefined) {
      this.seen.set(key, jobId);
      return 'new';
    }
    return current === jobId ? 'redelivery' : 'replay';
  }

  async completeMessage(receiver: string, messageId: string): Promise<void> {
    this.seen.set(`${receiver}:${messageId}`, '\0done');
  }

  async getToolCall(runId: string, key: string): Promise<ToolCallRecord | undefined> {
    return this.runs.get(runId)?.calls.get(key);
  }

  async putToolCall(runId: string, key: string, record: ToolCallRecord): Promise<void> {
    this.run(runId).calls.set(key, record);
  }

  async close(): Promise<void> {
    this.appended.removeAllListeners();
  }
}
