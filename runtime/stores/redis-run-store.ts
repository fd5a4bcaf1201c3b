import { EndWatcher } from './end-watcher.js';
import { Cells } from './cells.js';
import { duplicateRedis, type RedisClient } from '../redis-url.js';
import type { TokenUsage } from '../../agents/model.js';
import type { RunEvent, RunEventInput } from '../events.js';
import type { ApprovalDecision, ApprovalRequest, ApprovalState } from '../approvals/approval.js';
import { firstOfEachKey, markerText, readClaim, type ActionRecord, type ClaimMarker, type CompensationRecord, type EndRecord, type EventCursor, type MessageClaim, type RunClaim, type RunRecord, type RunStatus, type RunStore, type SavedProgress, type StoredEvent, type ToolCallRecord } from './run-store.js';

export interface RedisRunStoreOptions {
  /** Key prefix shared with the queues. */
  prefix: string;
  /** Which cell each run's keys live in (see cells.ts); default one cell, keys directly under the prefix. */
  cells?: Cells;
  /** How long a finished run's record, events and tool results are kept. */
  retentionMs?: number;
  /** Events kept per run; older ones are trimmed. */
  maxEvents?: number;
}

/** Lua: appends ARGV[from], ARGV[from + 1], … to the event stream KEYS[1] (capped at ARGV[1]) and renews its expiry (ARGV[2]). */
function appendEventsFrom(from: number): string {
  return `for i = ${from}, #ARGV do redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i]) end
if #ARGV >= ${from} then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end`;
}

/**
 * The store's multi-command writes as server-side scripts: one command each on the wire. An ioredis
 * MULTI builds a pipeline object per call, which profiling showed to cost more Node CPU than the
 * rest of a hop's bookkeeping.
 */
const SCRIPTS = {
  // Terminal transitions are compare-and-set so that a cancel racing a completion has one winner.
  // The events before the end are appended either way, the one that says how it ended only by the winner.
  // The end is also written to a one-entry stream that waiters look for (it is the last key), and
  // published on a channel of that name, which works across a cluster's nodes.
  palisadeFinishRun: {
    numberOfKeys: 6,
    lua: `
for i = 8, #ARGV do redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[i]) end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  if #ARGV >= 8 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updatedAt', ARGV[2], ARGV[3], ARGV[4])
if ARGV[7] ~= '' then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[7]) end
redis.call('XADD', KEYS[#KEYS], '*', 's', ARGV[1])
redis.call('PUBLISH', KEYS[#KEYS], ARGV[1])
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return 1`,
  },
  palisadeAppendMany: {
    numberOfKeys: 1,
    lua: `${appendEventsFrom(3)} return 1`,
  },
  palisadeFinishMessage: {
    numberOfKeys: 3,
    lua: `${appendEventsFrom(4)}
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) redis.call('DEL', KEYS[3]) return 1`,
  },
  palisadeCompleteMessage: {
    numberOfKeys: 2,
    lua: `redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) redis.call('DEL', KEYS[2]) return 1`,
  },
  palisadeCreateRun: {
    numberOfKeys: 2,
    lua: `if redis.call('HSETNX', KEYS[1], 'id', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'agent', ARGV[2], 'status', 'running', 'principal', ARGV[3], 'createdAt', ARGV[4], 'updatedAt', ARGV[4], 'inputTokens', 0, 'outputTokens', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if ARGV[7] then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[7]) redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return 1`,
  },
  // The claim's marker is read back as it is (the worker authenticates it), and the saved progress
  // whatever the claim: a new claim that finds some had lost an earlier one.
  palisadeClaimForRun: {
    numberOfKeys: 3,
    lua: `local held = false
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then held = redis.call('GET', KEYS[1]) end
return {held, redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[3])}`,
  },
  palisadeSwapClaim: {
    numberOfKeys: 1,
    lua: `if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1`,
  },
  palisadeClaim: {
    numberOfKeys: 1,
    lua: `if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 'new' end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 'redelivery' end
return 'replay'`,
  },
  palisadeTurn: {
    numberOfKeys: 3,
    lua: `${appendEventsFrom(6)}
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[2]) end
if redis.call('EXISTS', KEYS[2]) == 0 then return false end
redis.call('HINCRBY', KEYS[2], 'inputTokens', ARGV[3]) redis.call('HINCRBY', KEYS[2], 'outputTokens', ARGV[4])
return redis.call('HGET', KEYS[2], 'status')`,
  },
  palisadeHashPut: {
    numberOfKeys: 1,
    lua: `redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 1`,
  },
  palisadeListPush: {
    numberOfKeys: 1,
    lua: `redis.call('RPUSH', KEYS[1], ARGV[1]) redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1`,
  },
} as const;

type ScriptedRedis = RedisClient & {
  [K in keyof typeof SCRIPTS]: (key: string, ...args: Array<string | number>) => Promise<unknown>;
};

/** Events as the stream stores them: each with the time it happened. */
function serialized(events: ReadonlyArray<{ event: RunEventInput; at: number }>): string[] {
  return events.map(({ event, at }) => JSON.stringify({ ...event, at }));
}

/** A run record from its hash's fields; undefined when there is none. */
function runRecord(h: Record<string, string>): RunRecord | undefined {
  if (!h.id) return undefined;
  return {
    id: h.id,
    agent: h.agent ?? '',
    status: (h.status ?? 'running') as RunStatus,
    principal: JSON.parse(h.principal ?? '{}'),
    createdAt: Number(h.createdAt),
    updatedAt: Number(h.updatedAt),
    output: h.output,
    error: h.error,
    usage: { inputTokens: Number(h.inputTokens ?? 0), outputTokens: Number(h.outputTokens ?? 0) },
  };
}

export class RedisRunStore implements RunStore {
  private readonly prefix: string;
  readonly cells: Cells;
  private readonly retentionMs: number;
  private readonly maxEvents: number;

  private readonly scripts: ScriptedRedis;
  private readonly ends: EndWatcher;

  constructor(
    private readonly redis: RedisClient,
    options: RedisRunStoreOptions,
  ) {
    for (const [name, script] of Object.entries(SCRIPTS)) if (!(name in redis)) redis.defineCommand(name, script);
    this.scripts = redis as ScriptedRedis;
    this.ends = new EndWatcher(redis);
    this.prefix = options.prefix;
    this.cells = options.cells ?? new Cells(options.prefix);
    this.retentionMs = options.retentionMs ?? 7 * 24 * 3600_000;
    this.maxEvents = options.maxEvents ?? 10_000;
  }

  private key(runId: string, part?: string): string {
    const prefix = this.cells.prefixOf(runId);
    return part ? `${prefix}:run:${runId}:${part}` : `${prefix}:run:${runId}`;
  }

  /** A message's claim, in its run's cell: the claim scripts also touch the run's keys. */
  private seenKey(runId: string, receiver: string, messageId: string): string {
    return `${this.cells.prefixOf(runId)}:seen:${receiver}:${messageId}`;
  }

  private progressKey(runId: string, receiver: string, messageId: string): string {
    return `${this.cells.prefixOf(runId)}:progress:${receiver}:${messageId}`;
  }

  async createRun(record: Omit<RunRecord, 'updatedAt' | 'usage' | 'status'>, first?: RunEventInput): Promise<void> {
    const event = first ? [JSON.stringify({ ...first, at: record.createdAt })] : [];
    // Retention from the start: a run that never ends (its producer died) must not stay forever.
    const created = await this.scripts.palisadeCreateRun(this.key(record.id), this.key(record.id, 'events'), record.id, record.agent, JSON.stringify(record.principal), record.createdAt, this.retentionMs, this.maxEvents, ...event);
    if (created === 0) throw new Error(`run ${record.id} already exists`);
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    return runRecord(await this.redis.hgetall(this.key(runId)));
  }

  async claimForRun(runId: string, receiver: string, messageId: string, held: ClaimMarker): Promise<RunClaim> {
    const [marker, flat, saved] = (await this.scripts.palisadeClaimForRun(
      this.seenKey(runId, receiver, messageId),
      this.key(runId),
      this.progressKey(runId, receiver, messageId),
      markerText(held),
      this.retentionMs,
    )) as [string | null, string[], string | null];
    const h: Record<string, string> = {};
    for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i]!] = flat[i + 1]!;
    return { ...readClaim(marker, held.jobId), run: runRecord(h), ...(saved ? { saved } : {}), ...(marker ? { held: marker } : {}) };
  }

  async swapClaim(runId: string, receiver: string, messageId: string, held: string, next: ClaimMarker): Promise<boolean> {
    return (await this.scripts.palisadeSwapClaim(this.seenKey(runId, receiver, messageId), held, markerText(next), this.retentionMs)) === 1;
  }

  async recordTurn(runId: string, usage: TokenUsage, events: ReadonlyArray<{ event: RunEventInput; at: number }>, saved?: SavedProgress): Promise<RunStatus | undefined> {
    // Without progress to save, its key is still named (a script's keys are fixed) and left alone.
    const progressKey = saved ? this.progressKey(runId, saved.receiver, saved.messageId) : this.key(runId, 'progress');
    const status = await this.scripts.palisadeTurn(this.key(runId, 'events'), this.key(runId), progressKey, this.maxEvents, this.retentionMs, usage.inputTokens, usage.outputTokens, saved?.data ?? '', ...serialized(events));
    return (status ?? undefined) as RunStatus | undefined;
  }

  async saveProgress(saved: SavedProgress): Promise<void> {
    await this.redis.set(this.progressKey(saved.runId, saved.receiver, saved.messageId), saved.data, 'PX', this.retentionMs);
  }

  async finishRun(runId: string, status: Exclude<RunStatus, 'running'>, detail: { output?: string; error?: string }, record: EndRecord = {}): Promise<boolean> {
    const [field, value] = detail.output !== undefined ? ['output', detail.output] : ['error', detail.error ?? ''];
    const keys = [this.key(runId), this.key(runId, 'events'), this.key(runId, 'calls'), this.key(runId, 'actions'), this.key(runId, 'compensations'), this.key(runId, 'end')];
    const now = Date.now();
    const ended = record.ended ? serialized([{ event: record.ended, at: now }])[0]! : '';
    const done = await this.scripts.palisadeFinishRun(...(keys as [string, ...string[]]), status, now, field, value, this.retentionMs, this.maxEvents, ended, ...serialized(record.events ?? []));
    return done === 1;
  }

  async appendEvent(runId: string, event: RunEventInput): Promise<void> {
    await this.appendEvents(runId, [{ event, at: Date.now() }]);
  }

  async appendEvents(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>): Promise<void> {
    if (events.length === 0) return;
    const key = this.key(runId, 'events');
    await this.scripts.palisadeAppendMany(key, this.maxEvents, this.retentionMs, ...serialized(events));
  }

  async waitForEnd(runId: string, blockMs: number): Promise<boolean> {
    return this.ends.wait(this.key(runId, 'end'), Math.max(1, blockMs));
  }

  async listEvents(runId: string): Promise<StoredEvent[]> {
    const entries = await this.redis.xrange(this.key(runId, 'events'), '-', '+');
    return entries.map(([id, fields]) => ({ id, event: JSON.parse(fields[1] ?? '{}') as RunEvent }));
  }

  openEvents(runId: string): EventCursor {
    // A blocking XREAD occupies its connection, so each reader gets its own.
    const conn = duplicateRedis(this.redis);
    conn.on('error', () => {
      // It reconnects by itself; a read meanwhile rejects with the cause.
    });
    const key = this.key(runId, 'events');
    let last = '0';
    return {
      read: async (blockMs: number): Promise<StoredEvent[]> => {
        const reply = (await conn.xread('COUNT', 500, 'BLOCK', Math.max(1, blockMs), 'STREAMS', key, last)) as
          | [string, [string, string[]][]][]
          | null;
        const entries = reply?.[0]?.[1] ?? [];
        const events = entries.map(([id, fields]) => ({ id, event: JSON.parse(fields[1] ?? '{}') as RunEvent }));
        if (entries.length > 0) last = entries[entries.length - 1]![0];
        return events;
      },
      close: async () => {
        conn.disconnect();
      },
    };
  }

  async claimMessage(runId: string, receiver: string, messageId: string, jobId: string): Promise<Exclude<MessageClaim, 'finished'>> {
    return (await this.scripts.palisadeClaim(this.seenKey(runId, receiver, messageId), jobId, this.retentionMs)) as Exclude<MessageClaim, 'finished'>;
  }

  async completeMessage(runId: string, receiver: string, messageId: string, finished: ClaimMarker): Promise<void> {
    await this.scripts.palisadeCompleteMessage(this.seenKey(runId, receiver, messageId), this.progressKey(runId, receiver, messageId), markerText(finished), this.retentionMs);
  }

  async finishMessage(runId: string, events: ReadonlyArray<{ event: RunEventInput; at: number }>, receiver: string, messageId: string, finished: ClaimMarker): Promise<void> {
    await this.scripts.palisadeFinishMessage(
      this.key(runId, 'events'),
      this.seenKey(runId, receiver, messageId),
      this.progressKey(runId, receiver, messageId),
      this.maxEvents,
      this.retentionMs,
      markerText(finished),
      ...serialized(events),
    );
  }

  async getToolCall(runId: string, key: string): Promise<ToolCallRecord | undefined> {
    const raw = await this.redis.hget(this.key(runId, 'calls'), key);
    return raw ? (JSON.parse(raw) as ToolCallRecord) : undefined;
  }

  async putToolCall(runId: string, key: string, record: ToolCallRecord): Promise<void> {
    await this.scripts.palisadeHashPut(this.key(runId, 'calls'), key, JSON.stringify(record), this.retentionMs);
  }

  async recordAction(runId: string, record: ActionRecord): Promise<void> {
    const key = this.key(runId, 'actions');
    await this.scripts.palisadeListPush(key, JSON.stringify(record), this.retentionMs);
  }

  async listActions(runId: string): Promise<ActionRecord[]> {
    const raw = await this.redis.lrange(this.key(runId, 'actions'), 0, -1);
    return firstOfEachKey(raw.map((r) => JSON.parse(r) as ActionRecord));
  }

  async actionsOf(runId: string, key: string): Promise<ActionRecord[]> {
    const raw = await this.redis.lrange(this.key(runId, 'actions'), 0, -1);
    return raw.flatMap((r) => {
      try {
        const action = JSON.parse(r) as ActionRecord | null;
        return action?.key === key ? [action] : [];
      } catch {
        // Not one this store wrote: it is no call's record.
        return [];
      }
    });
  }

  async getCompensation(runId: string, key: string): Promise<CompensationRecord | undefined> {
    const raw = await this.redis.hget(this.key(runId, 'compensations'), key);
    return raw ? (JSON.parse(raw) as CompensationRecord) : undefined;
  }

  async putCompensation(runId: string, key: string, record: CompensationRecord): Promise<void> {
    const hash = this.key(runId, 'compensations');
    await this.scripts.palisadeHashPut(hash, key, JSON.stringify(record), this.retentionMs);
  }

  private approvalKey(id: string, part?: string): string {
    return part ? `${this.prefix}:approval:${id}:${part}` : `${this.prefix}:approval:${id}`;
  }

  async createApproval(request: ApprovalRequest): Promise<boolean> {
    const created = await this.redis.set(this.approvalKey(request.id), JSON.stringify(request), 'PX', this.retentionMs, 'NX');
    if (created !== 'OK') return false;
    await this.redis.zadd(`${this.prefix}:approvals:pending`, request.requestedAt, request.id);
    return true;
  }

  async getApproval(id: string): Promise<ApprovalState | undefined> {
    // Two reads, not MGET: on a cluster the two keys may live on different nodes. The decision is only
    // ever written after its request, so reading them apart cannot show a decision without its request.
    const [request, decision] = await Promise.all([this.redis.get(this.approvalKey(id)), this.redis.get(this.approvalKey(id, 'decision'))]);
    if (!request) return undefined;
    return { request: JSON.parse(request) as ApprovalRequest, ...(decision ? { decision: JSON.parse(decision) as ApprovalDecision } : {}) };
  }

  async pendingApprovals(): Promise<ApprovalState[]> {
    const ids = await this.redis.zrange(`${this.prefix}:approvals:pending`, 0, 999);
    const states = await Promise.all(ids.map((id) => this.getApproval(id)));
    // Requests past their retention leave their id behind in the index; it is dropped here.
    const gone = ids.filter((_, i) => !states[i]);
    if (gone.length > 0) await this.redis.zrem(`${this.prefix}:approvals:pending`, ...gone);
    return states.filter((s): s is ApprovalState => s !== undefined && !s.decision);
  }

  async decideApproval(decision: ApprovalDecision): Promise<boolean> {
    const set = await this.redis.set(this.approvalKey(decision.approvalId, 'decision'), JSON.stringify(decision), 'PX', this.retentionMs, 'NX');
    if (set !== 'OK') return false;
    await this.redis.zrem(`${this.prefix}:approvals:pending`, decision.approvalId);
    return true;
  }

  async close(): Promise<void> {
    // The shared connection belongs to the transport, which closes it; the watcher's is this store's.
    this.ends.close();
  }
}
