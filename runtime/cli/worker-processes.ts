import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * How far a worker process has got in starting, in order. It reports each stage to a parent that
 * spawned it with an IPC channel; before the first report it is still loading its code.
 */
export const WORKER_STAGES = ['loading definitions', 'connecting to Redis', 'starting consumers', 'serving'] as const;
export type WorkerStage = (typeof WORKER_STAGES)[number];

const BEFORE_FIRST_REPORT = 'loading code';

interface StageMessage {
  palisadeWorkerStage: WorkerStage;
}

const isStageMessage = (message: unknown): message is StageMessage =>
  typeof message === 'object' && message !== null && WORKER_STAGES.includes((message as { palisadeWorkerStage?: unknown }).palisadeWorkerStage as WorkerStage);

/** Tells the parent process how far start-up has got; nothing when no parent listens (a worker started by hand). */
export function reportStage(stage: WorkerStage): void {
  // The callback takes send errors (a parent that has gone): stdin closing stops the worker then.
  if (process.send && process.connected) process.send({ palisadeWorkerStage: stage } satisfies StageMessage, undefined, {}, () => undefined);
}

const KEPT_LINES = 20;

/** A worker process serving one agent, as its parent sees it. */
export interface WorkerProcess {
  readonly agent: string;
  readonly child: ChildProcess;
  /** The last lines of its stdout and stderr, for error messages. */
  readonly output: string[];
  /** The stage it last reported. */
  stage: string;
  /** When it was spawned, and when it last reported a stage (its last progress). */
  readonly startedAt: number;
  progressAt: number;
  /** Why it could not be spawned, if it could not. */
  spawnError?: string;
  /** Settles once it has exited and its output has been read. */
  readonly closed: Promise<void>;
}

/**
 * Spawns a worker; it stops when its stdin closes (the worker's `--stop-with-stdin`), so it dies with
 * this process. `now` is the clock for its progress: give `waitForWorkers` the same one.
 */
export function startWorkerProcess(agent: string, command: string, args: string[], now: () => number = Date.now): WorkerProcess {
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe', 'ipc'] });
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const startedAt = now();
  const worker: WorkerProcess = { agent, child, output: [], stage: BEFORE_FIRST_REPORT, startedAt, progressAt: startedAt, closed };
  const keep = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim()) worker.output.push(line);
    }
    worker.output.splice(0, Math.max(0, worker.output.length - KEPT_LINES));
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  child.on('message', (message: unknown) => {
    if (!isStageMessage(message)) return;
    worker.stage = message.palisadeWorkerStage;
    worker.progressAt = now();
  });
  child.on('error', (error) => {
    // Other errors (a failed kill or message) leave it running.
    if (child.pid === undefined) worker.spawnError ??= error.message;
  });
  return worker;
}

export const exited = (worker: WorkerProcess): boolean =>
  worker.spawnError !== undefined || worker.child.exitCode !== null || worker.child.signalCode !== null;

function outputOf(worker: WorkerProcess): string {
  return worker.output.length ? `:\n${worker.output.map((l) => `    [${worker.agent}] ${l}`).join('\n')}` : ' (no output)';
}

export function describeExit(worker: WorkerProcess): string {
  const { child } = worker;
  const how =
    worker.spawnError !== undefined
      ? `could not be started (${worker.spawnError})`
      : child.signalCode
        ? `was killed by ${child.signalCode} while ${worker.stage}`
        : `exited with code ${child.exitCode} while ${worker.stage}`;
  return `the ${worker.agent} worker (pid ${child.pid}) ${how}${outputOf(worker)}`;
}

/** A worker process that exited, or stopped making progress, before it announced itself. */
export class WorkerStartError extends Error {
  override readonly name = 'WorkerStartError';
  constructor(
    readonly agent: string,
    message: string,
  ) {
    super(message);
  }
}

export interface WaitOptions {
  /** The agents whose workers have announced themselves (the demo reads them from Redis). */
  announced: () => Promise<Iterable<string>>;
  /** A worker that reports no new stage for this long is stuck: give up on it. */
  stallMs: number;
  /** How often to say which workers are still awaited. */
  reportEveryMs: number;
  out: (line: string) => void;
  /** Aborting stops the wait with the signal's reason. */
  signal: AbortSignal;
  /** The clock the workers were started with. */
  now?: () => number;
  pollMs?: number;
}

/**
 * Waits until every worker has announced itself, for as long as each is alive and making progress
 * (reporting start-up stages), however slowly. Fails when one exits, or stalls for `stallMs`, naming
 * it with its last stage and output.
 */
export async function waitForWorkers(workers: readonly WorkerProcess[], options: WaitOptions): Promise<void> {
  const now = options.now ?? Date.now;
  const started = now();
  let reportedAt = started;
  for (;;) {
    options.signal.throwIfAborted();
    const dead = workers.find(exited);
    if (dead) {
      // The exit can come before the last of its output: read that, it usually says why.
      await Promise.race([dead.closed, sleep(1000, undefined, { ref: false })]);
      throw new WorkerStartError(dead.agent, describeExit(dead));
    }
    const announced = new Set(await options.announced());
    const waiting = workers.filter((w) => !announced.has(w.agent));
    if (waiting.length === 0) return;
    const at = now();
    const stalled = waiting.find((w) => at - w.progressAt >= options.stallMs);
    if (stalled) {
      throw new WorkerStartError(
        stalled.agent,
        `the ${stalled.agent} worker (pid ${stalled.child.pid}) made no progress for ${Math.round((at - stalled.progressAt) / 1000)} s while ${stalled.stage} ` +
          `(started ${Math.round((at - stalled.startedAt) / 1000)} s ago); stopped waiting for it${outputOf(stalled)}`,
      );
    }
    if (at - reportedAt >= options.reportEveryMs) {
      reportedAt = at;
      options.out(`   still waiting after ${Math.round((at - started) / 1000)} s for ${waiting.map((w) => `${w.agent} (${w.stage})`).join(', ')}`);
    }
    await sleep(options.pollMs ?? 150, undefined, { signal: options.signal }).catch(() => undefined);
  }
}

/** Stops a worker: SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
export async function stopWorkerProcess(worker: WorkerProcess, graceMs = 12_000): Promise<void> {
  const { child } = worker;
  if (exited(worker) || child.pid === undefined) return;
  const done = once(child, 'exit');
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), graceMs)));
  if ((await Promise.race([done, late])) === 'late') {
    child.kill('SIGKILL');
    await done;
  }
  clearTimeout(timer);
}
