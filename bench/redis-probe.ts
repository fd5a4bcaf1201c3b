import { createHash } from 'node:crypto';
import { Redis } from 'ioredis';

/**
 * Client-side accounting of every Redis command this process sends, by name, with BullMQ's Lua scripts
 * named (EVALSHA → `evalsha:moveToFinished-14`). It patches `Redis.prototype.sendCommand` once, so it
 * sees the connections BullMQ and Palisade create internally, and only this process's traffic: other
 * clients of a shared Redis do not pollute it (unlike INFO commandstats).
 *
 * Round trips: a command sent alone is one; the commands of one pipeline or MULTI/EXEC block are
 * written together and count as one.
 */
export interface CommandCounts {
  /** Commands by name (scripts by script name). */
  commands: Record<string, number>;
  totalCommands: number;
  roundTrips: number;
  /** Distinct connections that sent at least one command while counting. */
  connections: number;
  /** With attribution: round trips by the code that issued them (Palisade frames of the stack), then by command. */
  sites?: Record<string, Record<string, number>>;
}

interface SentCommand {
  name: string;
  args: unknown[];
}

interface ScriptLike {
  sha?: string;
  lua?: string;
}

class Counter {
  active = false;
  attribute = false;
  private sites = new Map<string, Map<string, number>>();
  private commands = new Map<string, number>();
  private totalCommands = 0;
  private roundTrips = 0;
  private pipelines = new WeakSet<object>();
  private seen = new WeakSet<object>();
  private clients = new WeakSet<object>();
  private connections = 0;
  /** sha1 → script name, learned from each client's `scriptsSet` (ioredis defineCommand). */
  private readonly scripts = new Map<string, string>();

  reset(): void {
    this.sites = new Map();
    this.commands = new Map();
    this.totalCommands = 0;
    this.roundTrips = 0;
    this.pipelines = new WeakSet();
    this.seen = new WeakSet();
    this.clients = new WeakSet();
    this.connections = 0;
  }

  private scriptName(client: unknown, sha: string): string {
    let name = this.scripts.get(sha);
    if (name) return name;
    const set = (client as { scriptsSet?: Record<string, ScriptLike> }).scriptsSet ?? {};
    for (const [scriptName, script] of Object.entries(set)) if (script.sha) this.scripts.set(script.sha, scriptName);
    name = this.scripts.get(sha) ?? `sha:${sha.slice(0, 8)}`;
    this.scripts.set(sha, name);
    return name;
  }

  private label(client: unknown, command: SentCommand): string {
    const name = String(command.name).toLowerCase();
    const first = command.args[0];
    if (name === 'client' && typeof first === 'string') return `client ${first.toLowerCase()}`;
    if (name === 'evalsha' && typeof first === 'string') return `evalsha:${this.scriptName(client, first)}`;
    if (name === 'eval' && typeof first === 'string') {
      const sha = createHash('sha1').update(first).digest('hex');
      const known = this.scripts.get(sha);
      if (known) return `eval:${known}`;
      // An ad-hoc EVAL (not defineCommand): name it by its first statement.
      return `eval:"${first.trim().split('\n')[0]!.slice(0, 36)}"`;
    }
    return name;
  }

  record(client: object, command: SentCommand & object, stream: unknown): void {
    // A command queued while its connection was still connecting is passed to sendCommand again on
    // connect: count it once.
    if (this.seen.has(command)) return;
    this.seen.add(command);
    const label = this.label(client, command);
    this.commands.set(label, (this.commands.get(label) ?? 0) + 1);
    this.totalCommands += 1;
    const pipeline = stream && typeof stream === 'object' && (stream as { isPipeline?: boolean }).isPipeline ? stream : undefined;
    let roundTrip = false;
    if (!pipeline) roundTrip = true;
    else if (!this.pipelines.has(pipeline)) {
      this.pipelines.add(pipeline);
      roundTrip = true;
    }
    if (roundTrip) {
      this.roundTrips += 1;
      if (this.attribute) {
        const site = callSite();
        const bySite = this.sites.get(site) ?? new Map<string, number>();
        // A pipeline is named by its first command (MULTI for a transaction).
        bySite.set(label, (bySite.get(label) ?? 0) + 1);
        this.sites.set(site, bySite);
      }
    }
    if (!this.clients.has(client)) {
      this.clients.add(client);
      this.connections += 1;
    }
  }

  snapshot(): CommandCounts {
    const commands = Object.fromEntries([...this.commands].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])));
    const snapshot: CommandCounts = { commands, totalCommands: this.totalCommands, roundTrips: this.roundTrips, connections: this.connections };
    if (this.attribute) {
      const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
      snapshot.sites = Object.fromEntries(
        [...this.sites].sort((a, b) => total(b[1]) - total(a[1])).map(([site, m]) => [site, Object.fromEntries(m)]),
      );
    }
    return snapshot;
  }
}

/**
 * Who issued the command being sent: the innermost Palisade frames (runtime/, agents/) of the
 * synchronous stack, e.g. `RedisRunStore.getRun ← Run.result`; else the BullMQ or ioredis internals.
 * Costly (captures a stack): only used in the untimed probe.
 */
function callSite(): string {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 60;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  const frames = stack
    .split('\n')
    .slice(1)
    .map((line) => /^\s*at (?:async )?(.*?) \((.*)\)$/.exec(line) ?? /^\s*at (?:async )?()(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ fn: m[1] || '<anonymous>', file: m[2] ?? '' }));
  const own = frames
    .filter((f) => /\/(runtime|agents)\/[^/]*(\/[^/]*)?\.ts/.test(f.file))
    // Callbacks named after their whole property path (`consumers.push.transport.consume.concurrency`) say little.
    .filter((f) => f.fn.split('.').length <= 2)
    .map((f) => {
      const fn = f.fn.replace(/^Object\./, '');
      // Closures and object-literal methods (an event cursor's `read`) are named with their file.
      return fn.includes('.') ? fn : `${fn}@${(/([^/]+)\.ts/.exec(f.file) ?? [])[1] ?? '?'}`;
    });
  if (own.length > 0) return [...new Set(own)].slice(0, 3).join(' ← ');
  // BullMQ's own code breaks the async stack, so its scripts are named by script, not by caller.
  if (frames.some((f) => f.file.includes('/bullmq/'))) return 'BullMQ (Queue.add, worker job lifecycle)';
  return 'ioredis connection handshake';
}

const counter = new Counter();
let installed = false;

/** Installs the sendCommand hook (idle until `startCounting`). */
export function installCommandCounter(): void {
  if (installed) return;
  installed = true;
  const proto = Redis.prototype as unknown as { sendCommand: (this: object, command: SentCommand, stream?: unknown, ...rest: unknown[]) => unknown };
  const original = proto.sendCommand;
  proto.sendCommand = function (this: object, command: SentCommand, stream?: unknown, ...rest: unknown[]) {
    if (counter.active) counter.record(this, command, stream);
    return original.call(this, command, stream, ...rest);
  };
}

export function startCounting(options: { attribute?: boolean } = {}): void {
  counter.reset();
  counter.attribute = options.attribute ?? false;
  counter.active = true;
}

export function stopCounting(): CommandCounts {
  counter.active = false;
  return counter.snapshot();
}

/** Parses `INFO <section>` into key → value. */
export async function info(redis: Redis, section: string): Promise<Record<string, string>> {
  const text = await redis.info(section);
  const out: Record<string, string> = {};
  for (const line of text.split('\r\n')) {
    const at = line.indexOf(':');
    if (at > 0 && !line.startsWith('#')) out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

/** Server-side view: INFO commandstats calls per command, connections received, Redis CPU seconds and bytes read from and written to clients. */
export interface ServerStats {
  calls: Record<string, number>;
  connectionsReceived: number;
  cpuSeconds: number;
  netInputBytes: number;
  netOutputBytes: number;
}

export async function serverStats(redis: Redis): Promise<ServerStats> {
  const [commandstats, stats, cpu] = await Promise.all([info(redis, 'commandstats'), info(redis, 'stats'), info(redis, 'cpu')]);
  const calls: Record<string, number> = {};
  for (const [key, value] of Object.entries(commandstats)) {
    const m = /^calls=(\d+)/.exec(value);
    if (key.startsWith('cmdstat_') && m) calls[key.slice('cmdstat_'.length)] = Number(m[1]);
  }
  return {
    calls,
    connectionsReceived: Number(stats.total_connections_received ?? 0),
    cpuSeconds: Number(cpu.used_cpu_user ?? 0) + Number(cpu.used_cpu_sys ?? 0),
    netInputBytes: Number(stats.total_net_input_bytes ?? 0),
    netOutputBytes: Number(stats.total_net_output_bytes ?? 0),
  };
}

/** after − before, dropping zeros. */
export function diffStats(before: ServerStats, after: ServerStats): ServerStats {
  const calls: Record<string, number> = {};
  for (const [name, n] of Object.entries(after.calls)) {
    const d = n - (before.calls[name] ?? 0);
    if (d > 0) calls[name] = d;
  }
  return {
    calls: Object.fromEntries(Object.entries(calls).sort((a, b) => b[1] - a[1])),
    connectionsReceived: after.connectionsReceived - before.connectionsReceived,
    cpuSeconds: after.cpuSeconds - before.cpuSeconds,
    netInputBytes: after.netInputBytes - before.netInputBytes,
    netOutputBytes: after.netOutputBytes - before.netOutputBytes,
  };
}

export { deleteKeysUnder as deleteKeys } from '../runtime/redis-keys.js';
