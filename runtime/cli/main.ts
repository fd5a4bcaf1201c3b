#!/usr/bin/env node
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { InvalidDefinitionError } from '../../agents/errors.js';
import type { Agent } from '../../agents/agent.js';
import { DEFAULT_REDIS_URL, pingRedis, redactUrl } from '../redis-url.js';
import { InvalidRunInputError, UnknownAgentError } from '../errors.js';
import { followRun, wantsColor } from './progress.js';
import { Runtime } from '../runtime.js';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import { PolicyError } from '../../guards/policy/policy-file.js';
import { setupTracing } from '../../tracing/setup.js';
import { EDGE, generateKeys, KeyError, loadKeyring } from '../identity/keyring.js';
import { BullMQTransport } from '../transports/bullmq-transport.js';
import { reportStage } from './worker-processes.js';

/** A problem with what the user asked for: printed as `palisade: <message>`, no stack trace. */
class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.usage,
  ) {
    super(message);
  }
}

const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

const EXIT_CODES_HELP = `
Exit codes:
  0    success: the run completed, the worker stopped cleanly, every demo run ended as expected
  1    the run failed, was cancelled or timed out; a demo run did not end as expected; an unexpected error
  2    bad usage or configuration: invalid arguments, unknown agent, a module without agents,
       Redis unreachable
  130  the demo was interrupted (Ctrl-C)`;

const stdout = (line: string): void => void process.stdout.write(`${line}\n`);
const stderr = (line: string): void => void process.stderr.write(`${line}\n`);

function list(value: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (items.length === 0) throw new InvalidArgumentError('expected a comma-separated list');
  return items;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive whole number');
  return n;
}

const redisOption = (): Option =>
  new Option('--redis <url>', 'Redis URL').default(process.env.REDIS_URL ?? DEFAULT_REDIS_URL, '$REDIS_URL or redis://127.0.0.1:6379');
const prefixOption = (): Option => new Option('--prefix <prefix>', 'key prefix shared by workers and producers').default('palisade');

async function requireRedis(url: string): Promise<void> {
  const problem = await pingRedis(url);
  if (problem !== undefined) {
    throw new CliError(`cannot reach Redis at ${redactUrl(url)}: ${problem}\n  Start Redis (e.g. docker run -p 6379:6379 redis:7) or pass --redis <url>.`);
  }
}

const isAgent = (value: unknown): value is Agent =>
  typeof value === 'object' && value !== null && (value as { kind?: unknown }).kind === 'agent' && typeof (value as { name?: unknown }).name === 'string';

/** The agents a module exports as `default.agents` or as a named `agents`. */
async function loadAgents(modulePath: string): Promise<Agent[]> {
  const file = resolve(process.cwd(), modulePath);
  if (!existsSync(file)) throw new CliError(`module '${modulePath}' not found (looked for ${file})`);
  let mod: { default?: { agents?: unknown }; agents?: unknown };
  try {
    mod = (await import(pathToFileURL(file).href)) as typeof mod;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code === 'ERR_UNKNOWN_FILE_EXTENSION' && file.endsWith('.ts')) {
      throw new CliError(`cannot load '${modulePath}': this palisade runs on plain Node; compile the module to JavaScript or run the CLI with tsx`);
    }
    throw new CliError(`cannot load module '${modulePath}': ${error instanceof Error ? error.message : String(error)}`);
  }
  const exported = mod.default?.agents !== undefined ? { name: 'default.agents', value: mod.default.agents } : { name: 'agents', value: mod.agents };
  if (exported.value === undefined) {
    throw new CliError(`module '${modulePath}' exports no agents: export an Agent[] as 'agents' or as 'default.agents' (export default { agents })`);
  }
  if (!Array.isArray(exported.value) || exported.value.length === 0) {
    throw new CliError(`the '${exported.name}' export of module '${modulePath}' is not a non-empty array of agents made with defineAgent()`);
  }
  const bad = exported.value.findIndex((a) => !isAgent(a));
  if (bad >= 0) throw new CliError(`item ${bad} of the '${exported.name}' export of module '${modulePath}' is not an agent made with defineAgent()`);
  return exported.value as Agent[];
}

interface WorkerFlags {
  agents?: string[];
  /** Set by the demo: stop when the parent's end of stdin closes, so a parent that dies leaves no workers behind. */
  stopWithStdin?: boolean;
  concurrency: number;
  redis: string;
  prefix: string;
  policy?: string;
  keys?: string;
}

async function workerCommand(modulePath: string, flags: WorkerFlags): Promise<number> {
  reportStage('loading definitions');
  // Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set.
  const tracing = setupTracing();
  const agents = await loadAgents(modulePath);
  const defined = agents.map((a) => a.name);
  const serve = flags.agents ?? defined;
  const unknown = serve.filter((name) => !defined.includes(name));
  if (unknown.length > 0) {
    throw new CliError(`unknown agent ${unknown.map((n) => `'${n}'`).join(', ')} in --agents; module '${modulePath}' defines: ${defined.join(', ')}`);
  }
  const policy = flags.policy ? await loadPolicy(flags.policy) : undefined;
  const keys = flags.keys ? await loadKeyring(flags.keys, serve) : undefined;
  if (!keys) stderr('palisade worker: no --keys: envelopes are NOT authenticated (development only); see `palisade keys generate`');
  reportStage('connecting to Redis');
  await requireRedis(flags.redis);
  reportStage('starting consumers');
  let runtime: Runtime;
  try {
    runtime = new Runtime({ agents, policy, keys, transport: new BullMQTransport({ connection: flags.redis, prefix: flags.prefix }) });
  } catch (error) {
    if (error instanceof InvalidDefinitionError) throw new CliError(`module '${modulePath}': ${error.message}`);
    throw error;
  }
  const stopped = new Promise<number>((done) => {
    let closing = false;
    const stop = (why: string, force: boolean): void => {
      if (closing) {
        if (!force) return;
        stderr(`palisade worker: ${why} again, exiting without waiting (unfinished jobs will be redelivered)`);
        process.exit(EXIT.failed);
      }
      closing = true;
      stdout(`palisade worker: ${why}: finishing jobs in hand (up to 10 s), then exiting`);
      runtime
        .close({ timeoutMs: 10_000 })
        .then(() => tracing.shutdown())
        .then(
          () => {
            stdout('palisade worker: stopped');
            done(EXIT.ok);
          },
          (error: unknown) => {
            stderr(`palisade: worker shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
            done(EXIT.failed);
          },
        );
    };
    process.on('SIGINT', () => stop('SIGINT', true));
    process.on('SIGTERM', () => stop('SIGTERM', true));
    if (flags.stopWithStdin) {
      process.stdin.on('end', () => stop('stdin closed', false)).on('error', () => stop('stdin closed', false));
      process.stdin.resume();
    }
  });
  try {
    await runtime.startWorkers({ agents: serve, concurrency: flags.concurrency });
  } catch (error) {
    await runtime.close({ timeoutMs: 1000 }).catch(() => undefined);
    if (error instanceof UnknownAgentError) throw new CliError(error.message);
    throw error;
  }
  reportStage('serving');
  stdout(
    `palisade worker: serving ${serve.join(', ')}${flags.policy ? ` under policy ${flags.policy}` : ' with no policy (every step allowed)'} on Redis ${redactUrl(flags.redis)} with prefix '${flags.prefix}' ` +
      `(pid ${process.pid}, concurrency ${flags.concurrency}); Ctrl-C to stop`,
  );
  return stopped;
}

interface RunFlags {
  user: string;
  roles?: string[];
  tenant?: string;
  redis: string;
  prefix: string;
  timeout: number;
  keys?: string;
}

async function runCommand(agent: string, input: string, flags: RunFlags): Promise<number> {
  const tracing = setupTracing();
  const roles = flags.roles ?? [];
  const principal = { id: flags.user, roles, ...(flags.tenant !== undefined ? { tenant: flags.tenant } : {}) };
  stderr(
    `palisade: using a local development identity (user '${flags.user}', roles: ${roles.length ? roles.join(', ') : 'none'}` +
      `${flags.tenant !== undefined ? `, tenant '${flags.tenant}'` : ''}) taken from the command line, not verified; ` +
      'production runs must take the principal from verified credentials',
  );
  await requireRedis(flags.redis);
  const keys = flags.keys ? await loadKeyring(flags.keys, [EDGE]) : undefined;
  const runtime = new Runtime({ keys, transport: new BullMQTransport({ connection: flags.redis, prefix: flags.prefix }) });
  const interrupt = new AbortController();
  const onSigint = (): void => {
    if (!interrupt.signal.aborted) stderr('palisade: interrupted: cancelling the run');
    interrupt.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    let run;
    try {
      run = await runtime.start(agent, input, { principal });
    } catch (error) {
      if (error instanceof UnknownAgentError || error instanceof InvalidRunInputError) throw new CliError(error.message);
      throw error;
    }
    const result = await followRun(run, { out: stdout, color: wantsColor(process.stdout), timeoutMs: flags.timeout, signal: interrupt.signal });
    const usage = result.usage ? ` (${result.usage.inputTokens} in / ${result.usage.outputTokens} out tokens)` : '';
    if (result.status === 'completed') {
      stdout('');
      stdout(result.output ?? '');
      stderr(`palisade: run ${run.id} completed${usage}`);
      return EXIT.ok;
    }
    const why = result.timedOut ? `timed out after ${flags.timeout} ms and was cancelled` : `${result.status}: ${result.error ?? 'no reason given'}`;
    stderr(`palisade: run ${run.id} ${why}`);
    return EXIT.failed;
  } finally {
    process.off('SIGINT', onSigint);
    await runtime.close().catch(() => undefined);
    await tracing.shutdown().catch(() => undefined);
  }
}

async function demoCommand(flags: { embedded?: boolean }): Promise<number> {
  const { DemoInterruptedError, runDemo } = await import('./demo.js');
  const tracing = setupTracing({ serviceName: process.env.OTEL_SERVICE_NAME ?? 'palisade-demo' });
  try {
    const result = await runDemo({ embedded: flags.embedded === true });
    return result.runs.every((r) => r.asExpected) ? EXIT.ok : EXIT.failed;
  } catch (error) {
    if (error instanceof DemoInterruptedError) throw new CliError(error.message, EXIT.interrupted);
    throw new CliError(`demo failed: ${error instanceof Error ? error.message : String(error)}`, EXIT.failed);
  } finally {
    await tracing.shutdown().catch(() => undefined);
  }
}

/**
 * The commands, or only `worker` when that is the one asked for: the demo starts four workers at once,
 * and each then loads only what serving needs, not the HTTP server, the demo or the audit tools.
 */
async function buildProgram(command: string | undefined, setExit: (code: number) => void): Promise<Command> {
  const program = new Command('palisade')
    .description('Multi-agent AI runtime with guardrails at every hop: run agent workers, start runs, try the demo.')
    .exitOverride()
    .configureOutput({ outputError: (message, write) => write(message.replace(/^error: /, 'palisade: ')) })
    .showHelpAfterError('(see palisade --help)')
    .addHelpText('after', EXIT_CODES_HELP);

  program
    .command('worker')
    .description('Serve agents from a module (its `agents` or `default.agents` export) as BullMQ workers on Redis')
    .argument('<module>', 'path of the module, relative to the current directory')
    .option('--agents <names>', 'comma-separated agents to serve (default: all in the module)', list)
    .option('--concurrency <n>', 'jobs per agent processed at once', positiveInt, 8)
    .option('--policy <file>', 'policy YAML whose guards decide every step (without it every step is allowed)')
    .option('--keys <dir>', "folder of key files: the worker loads only its agents' own (<agent>.json)")
    .addOption(redisOption())
    .addOption(prefixOption())
    .addOption(new Option('--stop-with-stdin', 'stop when stdin closes (for a parent process)').hideHelp())
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (modulePath: string, flags: WorkerFlags) => setExit(await workerCommand(modulePath, flags)));
  if (command === 'worker') return program;
  const [{ registerPolicyCommands }, { registerScanCommand }, { registerAuditCommands }, { registerApprovalCommands }, { registerServeCommand }] = await Promise.all([
    import('./policy-command.js'),
    import('./scan-command.js'),
    import('./audit-command.js'),
    import('./approvals-command.js'),
    import('./serve-command.js'),
  ]);

  program
    .command('run')
    .description('Start a run at an agent served by workers on Redis and print its progress live')
    .argument('<agent>', 'the agent that receives the input')
    .argument('<input>', 'the request, e.g. "My headphones won\'t pair"')
    .requiredOption('--user <id>', 'principal id (a local development identity: not verified)')
    .option('--roles <roles>', 'comma-separated roles of the principal', list)
    .option('--tenant <tenant>', 'tenant of the principal')
    .addOption(redisOption())
    .addOption(prefixOption())
    .option('--timeout <ms>', 'cancel the run if it has not ended after this long', positiveInt, 120_000)
    .option('--keys <dir>', "folder of key files: the CLI loads the edge's (edge.json) to vouch for the principal")
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (agent: string, input: string, flags: RunFlags) => setExit(await runCommand(agent, input, flags)));

  program
    .command('demo')
    .description('The customer-support example end to end: on Redis with a worker process per agent, else in process')
    .option('--embedded', 'use the in-process transport even if Redis answers')
    .addHelpText('after', EXIT_CODES_HELP)
    .action(async (flags: { embedded?: boolean }) => setExit(await demoCommand(flags)));

  registerPolicyCommands(
    program,
    {
      out: stdout,
      loadAgents,
      fail: (message) => {
        throw new CliError(message);
      },
    },
    setExit,
  );
  registerScanCommand(program, setExit);
  registerAuditCommands(
    program,
    {
      out: stdout,
      fail: (message) => {
        throw new CliError(message);
      },
    },
    setExit,
  );

  registerApprovalCommands(
    program,
    {
      out: stdout,
      err: stderr,
      fail: (message) => {
        throw new CliError(message);
      },
    },
    setExit,
  );

  registerServeCommand(
    program,
    {
      out: stdout,
      err: stderr,
      loadAgents,
      fail: (message) => {
        throw new CliError(message);
      },
    },
    setExit,
  );

  program
    .command('keys')
    .description("Provision keys: one file per component, holding only the links it sends or receives on and the edge's public keys")
    .command('generate')
    .description("Write <dir>/edge.json and <dir>/<agent>.json for the agents of a module; run again to rotate (old keys stay valid; the edge's old signing keys are kept for verification only)")
    .argument('<module>', 'module with the agents (its `agents` or `default.agents` export)')
    .requiredOption('--out <dir>', 'folder for the key files (created with mode 0700)')
    .action(async (modulePath: string, flags: { out: string }) => {
      const written = await generateKeys(flags.out, await loadAgents(modulePath));
      for (const file of written) stdout(`wrote ${file}`);
      stdout('Give each worker only its own file (palisade worker ... --keys <dir> reads <agent>.json), and the edge only edge.json: it alone holds the private key that signs grants, decisions and rollback orders.');
      stdout('After a rotation, give the workers their new files before the edge its new edge.json: workers must know a new key before anything is signed or sent with it.');
      stdout(`Then run 'palisade audit keys --keys ${flags.out}' for the audit log's public keys (audit.pub.json, for verifiers) and its anchoring key (anchor.key.json, for the edge).`);
      setExit(EXIT.ok);
    });

  return program;
}

async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  try {
    const program = await buildProgram(argv[2], (c) => (code = c));
    await program.parseAsync(argv);
    return code;
  } catch (error) {
    // Commander has printed its own message (usage errors) or the help text.
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    if (error instanceof PolicyError || error instanceof KeyError) {
      stderr(`palisade: ${error.message}`);
      return EXIT.usage;
    }
    if (error instanceof CliError) {
      stderr(`palisade: ${error.message}`);
      return error.exitCode;
    }
    stderr(`palisade: ${error instanceof Error ? error.message : String(error)}`);
    if (process.env.PALISADE_DEBUG && error instanceof Error && error.stack) stderr(error.stack);
    return EXIT.failed;
  }
}

// Output piped into `head` and closed early: stop writing, but finish (and clean up) normally.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
}

process.exit(await main(process.argv));
