import { EventEmitter } from 'node:events';
import type { TokenUsage } from '../../agents/model.js';
import type { RunEventInput } from '../events.js';
import type { ApprovalDecision, ApprovalRequest, ApprovalState } from '../approvals/approval.js';
import { firstOfEachKey, markerText, readClaim, type ActionRecord, type ClaimMarker, type CompensationRecord, type EndRecord, type EventCursor, type MessageClaim, type RunClaim, type RunRecord, type RunStatus, type RunStore, type SavedProgress, type StoredEvent, type ToolCallRecord } from './run-store.js';

interface MemoryRun {
  record: RunRecord;
  events: StoredEvent[];
  calls: Map<string, ToolCallRecord>;
  actions: ActionRecord[];
  compensations: Map<string, CompensationRecord>;
}

/** The embedded transport's store: the same semantics as Redis, held in this process only. */
export class MemoryRunStore implements RunStore {
  private readonly runs = new Map<string, MemoryRun>();
  private readonly appended = new EventEmitter().setMaxListeners(0);
  private seq = 0;
  private readonly seen = new Map<string, string>();
  private readonly progress = new Map<string, string>();
  private readonly approvals = new Map<string, ApprovalState>();

  private run(runId: string): MemoryRun {
    const run = this.runs.get(runId);
    if (!run) throw new Error(`unknown run ${runId}`);
    return run;
  }

  async createRun(record: Omit<RunRecord, 'updatedAt' | 'usage' | 'status'>, first?: RunEventInput): Promise<void> {
    if (this.runs.has(record.id)) throw new Error(`run ${record.id} already exists`);
    this.runs.set(record.id, {
      record: { ...record, status: 'running', updatedAt: record.createdAt, usage: { inputTokens: 0, outputTokens: 0 } },
      events: [],
      calls: new Map(),
      actions: [],
      compensations: new Map(),
    });
    if (first) await this.appendEvents(record.id, [{ event: first, at: record.createdAt }]);
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const run = this.runs.get(runId);
    return run ? structuredClone(run.record) : undefined;
  }

  async recordTurn(runId: string, usage: TokenUsage, events: ReadonlyArray<{ event: RunEventInput; at: number }>, saved?: SavedProgress): Promise<RunStatus | undefined> {
    if (saved) await this.saveProgress(saved);
    const r = this.runs.get(runId)?.record;
    if (!r) return undefined;
    r.usage = { inputTokens: r.usage.inputTokens + usage.inputTokens, outputTokens: r.usage.outputTokens + usage.outputTokens };
    await this.appendEvents(runId, events);
    return r.status;
  }

  async finishRun(runId: string, status: Exclude<RunStatus, 'running'>, detail: { output?: string; error?: string }, record: EndRecord = {}): Promise<boolean> {
    const r = this.run(runId).record;
    if (record.events?.length) await this.appendEvents(runId, record.events);
    if (r.status !== 'running') return false;
    const now = Date.now();
    Object.assign(r, { status, updatedAt: now }, detail);
    if (record.ended) await this.appendEvents(runId, [{ event: record.ended, at: now }]);
    this.appended.emit(`${runId}:end`);
    return true;
  }

  async waitForEnd(runId: string, blockMs: number): Promise<boolean> {
    const ended = () => this.runs.get(runId)?.record.status !== 'running';
    if (ended()) return true;
    return new Promise((resolve) => {
      const done = (value: boolean) => {
        clearTimeout(timer);
        this.appended.off(`${runId}:end`, onEnd);
        resolve(value);
      };
      const onEnd = () => done(true);
      const timer = setTimeout(() => done(ended()), blockMs);
      this.appended.on(`${runId}:end`, onEnd);
    });
  }

  async appendEvent(runId: string, event: RunEventInput): Promise<void> {
    await this.appendEvents(runId, [{ event, at: Date.now() }]);
  }

  async appendEvents(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>): Promise<void> {
    const stream = this.run(runId).events;
    for (const { event, at } of events) stream.push({ id: String(++this.seq), event: { ...event, at } } as StoredEvent);
    this.appended.emit(runId);
  }

  async listEvents(runId: string): Promise<StoredEvent[]> {
    return [...(this.runs.get(runId)?.events ?? [])];
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

  async saveProgress(saved: SavedProgress): Promise<void> {
    this.progress.set(`${saved.receiver}:${saved.messageId}`, saved.data);
  }

  async claimForRun(runId: string, receiver: string, messageId: string, held: ClaimMarker): Promise<RunClaim> {
    const run = await this.getRun(runId);
    const key = `${receiver}:${messageId}`;
    const marker = this.seen.get(key);
    if (marker === undefined) this.seen.set(key, markerText(held));
    const saved = this.progress.get(key);
    return { ...readClaim(marker, held.jobId), run, ...(saved !== undefined ? { saved } : {}), ...(marker !== undefined ? { held: marker } : {}) };
  }

  async swapClaim(_runId: string, receiver: string, messageId: string, held: string, next: ClaimMarker): Promise<boolean> {
    const key = `${receiver}:${messageId}`;
    if (this.seen.get(key) !== held) return false;
    this.seen.set(key, markerText(next));
    return true;
  }

  async claimMessage(_runId: string, receiver: string, messageId: string, jobId: string): Promise<Exclude<MessageClaim, 'finished'>> {
    const key = `${receiver}:${messageId}`;
    const current = this.seen.get(key);
    if (current === undefined) {
      this.seen.set(key, jobId);
      return 'new';
    }
    return current === jobId ? 'redelivery' : 'replay';
  }

  async finishMessage(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>, receiver: string, messageId: string, finished: ClaimMarker): Promise<void> {
    await this.appendEvents(runId, events);
    await this.completeMessage(runId, receiver, messageId, finished);
  }

  async completeMessage(_runId: string, receiver: string, messageId: string, finished: ClaimMarker): Promise<void> {
    this.seen.set(`${receiver}:${messageId}`, markerText(finished));
    this.progress.delete(`${receiver}:${messageId}`);
  }

  async getToolCall(runId: string, key: string): Promise<ToolCallRecord | undefined> {
    return this.runs.get(runId)?.calls.get(key);
  }

  async putToolCall(runId: string, key: string, record: ToolCallRecord): Promise<void> {
    this.run(runId).calls.set(key, record);
  }

  async recordAction(runId: string, record: ActionRecord): Promise<void> {
    this.run(runId).actions.push(structuredClone(record));
  }

  async listActions(runId: string): Promise<ActionRecord[]> {
    return firstOfEachKey(this.runs.get(runId)?.actions ?? []);
  }

  async actionsOf(runId: string, key: string): Promise<ActionRecord[]> {
    return (this.runs.get(runId)?.actions ?? []).filter((a) => a.key === key).map((a) => structuredClone(a));
  }

  async getCompensation(runId: string, key: string): Promise<CompensationRecord | undefined> {
    return this.runs.get(runId)?.compensations.get(key);
  }

  async putCompensation(runId: string, key: string, record: CompensationRecord): Promise<void> {
    this.run(runId).compensations.set(key, record);
  }

  async createApproval(request: ApprovalRequest): Promise<boolean> {
    if (this.approvals.has(request.id)) return false;
    this.approvals.set(request.id, { request: structuredClone(request) });
    return true;
  }

  async getApproval(id: string): Promise<ApprovalState | undefined> {
    const state = this.approvals.get(id);
    return state && structuredClone(state);
  }

  async pendingApprovals(): Promise<ApprovalState[]> {
    return [...this.approvals.values()].filter((s) => !s.decision).sort((a, b) => a.request.requestedAt - b.request.requestedAt).map((s) => structuredClone(s));
  }

  async decideApproval(decision: ApprovalDecision): Promise<boolean> {
    const state = this.approvals.get(decision.approvalId);
    if (!state || state.decision) return false;
    state.decision = structuredClone(decision);
    return true;
  }

  async close(): Promise<void> {
    this.appended.removeAllListeners();
  }
}
