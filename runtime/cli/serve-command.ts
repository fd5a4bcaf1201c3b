import { createPublicKey } from 'node:crypto';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Agent } from '../../agents/agent.js';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import { setupTracing } from '../../tracing/setup.js';
import { FileAnchorStore } from '../audit/anchors.js';
import { ANCHOR_KEY_FILE, loadAuditKeysOr, PUBLIC_KEYS_FILE, type LoadedAuditKeys } from '../audit/audit-keys.js';
import { EDGE, loadKeyring } from '../identity/keyring.js';
import { DEFAULT_REDIS_URL, pingRedis, redactUrl } from '../redis-url.js';
import { Runtime } from '../runtime.js';
import { BullMQTransport } from '../transports/bullmq-transport.js';
import { AuthConfigError, createAuthenticator, loadAuthConfig } from '../server/auth.js';
import { createServer } from '../server/server.js';

export interface ServeCommandIo {
  out(line: string): void;
  err(line: string): void;
  /** Reports a usage or configuration problem (exit 2) and does not return. */
  fail(message: string): never;
  loadAgents(modulePath: string): Promise<Agent[]>;
}

interface ServeFlags {
  host: string;
  port: number;
  redis: string;
  prefix: string;
  policy?: string;
  keys?: string;
  auth: string;
  rateLimit: number;
  rateWindow: number;
  bodyLimit: number;
  jaegerUrl?: string;
  workers?: boolean;
  logLevel: string;
  auditKeys?: string;
  anchorFile?: string;
  anchorKey?: string;
  anchorEvery: number;
}

const exists = (path: string): Promise<boolean> => access(path).then(
  () => true,
  () => false,
);

/**
 * The audit verification keys and anchoring of `serve`: `--audit-keys`, else `<keys>/audit.pub.json`; the
 * anchoring key `--anchor-key`, else `<keys>/anchor.key.json`. Never the workers' own key files.
 */
async function auditSetup(flags: ServeFlags, io: ServeCommandIo): Promise<{ keys?: LoadedAuditKeys; anchors?: Parameters<typeof createServer>[0]['anchors'] }> {
  const load = (path: string): Promise<LoadedAuditKeys> => loadAuditKeysOr(path, io.fail);
  const fallback = async (name: string): Promise<string | undefined> => (flags.keys && (await exists(join(flags.keys, name))) ? join(flags.keys, name) : undefined);
  const keysPath = flags.auditKeys ?? (await fallback(PUBLIC_KEYS_FILE));
  const keys = keysPath !== undefined ? await load(keysPath) : undefined;
  if (!keys || keys.count === 0) io.err(`palisade serve: no writers' audit keys (--audit-keys, or ${PUBLIC_KEYS_FILE} in --keys from palisade audit keys): the API and console call the audit log UNVERIFIED`);
  const foreign = keys?.secretWriters.filter((w) => w !== EDGE) ?? [];
  if (foreign.length > 0) io.err(`palisade serve: --audit-keys holds the audit secrets of ${foreign.join(', ')}: this process could sign as them; give it ${PUBLIC_KEYS_FILE} instead`);
  const anchorKeyPath = flags.anchorKey ?? (await fallback(ANCHOR_KEY_FILE));
  const signer = anchorKeyPath !== undefined ? ((await load(anchorKeyPath)).anchorSigner ?? io.fail(`${anchorKeyPath} holds no anchoring key`)) : undefined;
  if (flags.anchorFile === undefined) {
    io.err("palisade serve: no --anchor-file: the audit log's head is not anchored outside Redis, so whoever can write Redis can cut its end unnoticed; the API calls it unanchored");
    return keys ? { keys } : {};
  }
  const anchorKeys = new Map(keys?.anchorKeys);
  if (signer) anchorKeys.set(signer.kid, createPublicKey(signer.privateKey));
  if (anchorKeys.size === 0) io.fail(`--anchor-file needs the anchoring public key (${PUBLIC_KEYS_FILE}) or key (${ANCHOR_KEY_FILE}): palisade audit keys writes both`);
  if (!signer) io.err(`palisade serve: no anchoring key (--anchor-key or ${ANCHOR_KEY_FILE} in --keys): the anchors in ${flags.anchorFile} are checked but this server takes none (run palisade audit anchor periodically)`);
  const anchors = { store: new FileAnchorStore(flags.anchorFile), keys: anchorKeys, everyMs: flags.anchorEvery * 1000, ...(signer ? { signer } : {}) };
  return { ...(keys ? { keys } : {}), anchors };
}

function whole(min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected a whole number of at least ${min}`);
    return n;
  };
}

function httpUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.protocol === 'http:' || url.protocol === 'https:') return value;
  } catch {
    // Reported below.
  }
  throw new InvalidArgumentError('expected an http(s) URL');
}

async function serve(modulePath: string | undefined, flags: ServeFlags, io: ServeCommandIo): Promise<number> {
  if (flags.workers && modulePath === undefined) io.fail('--workers needs the module whose agents to serve: palisade serve <module> --workers');
  const tracing = setupTracing();
  const agents = modulePath !== undefined ? await io.loadAgents(modulePath) : undefined;
  const policy = flags.policy ? await loadPolicy(flags.policy) : undefined;
  if (!policy) io.err('palisade serve: no --policy: nobody holds approve:..., read:runs, read:audit or rollback:runs, so only own runs can be seen');
  const keys = flags.keys ? await loadKeyring(flags.keys, [EDGE]) : undefined;
  if (!keys) io.err('palisade serve: no --keys: runs are started without the edge key, so envelopes are NOT authenticated (development only)');
  let authenticate;
  try {
    const { config, verifier } = await loadAuthConfig(flags.auth);
    authenticate = createAuthenticator(config, verifier);
  } catch (error) {
    if (error instanceof AuthConfigError) io.fail(error.message);
    throw error;
  }
  const audit = await auditSetup(flags, io);
  const problem = await pingRedis(flags.redis);
  if (problem !== undefined) io.fail(`cannot reach Redis at ${redactUrl(flags.redis)}: ${problem}`);

  let workers: Runtime | undefined;
  if (flags.workers && agents) {
    // Convenience for a single machine: this process then holds every agent's keys and tool credentials.
    io.err('palisade serve: --workers runs the agents in this process, which then holds their keys and tool credentials; run `palisade worker` separately in production');
    workers = new Runtime({
      agents,
      ...(policy ? { policy } : {}),
      ...(flags.keys ? { keys: await loadKeyring(flags.keys, agents.map((a) => a.name)) } : {}),
      transport: new BullMQTransport({ connection: flags.redis, prefix: flags.prefix }),
    });
    await workers.startWorkers();
  }

  const app = await createServer({
    authenticate,
    redisUrl: flags.redis,
    prefix: flags.prefix,
    ...(policy ? { policy } : {}),
    ...(keys ? { keys } : {}),
    ...(agents ? { agents } : {}),
    rateLimit: flags.rateLimit === 0 ? false : { max: flags.rateLimit, windowMs: flags.rateWindow * 1000 },
    bodyLimit: flags.bodyLimit,
    ...(flags.jaegerUrl ? { jaegerUrl: flags.jaegerUrl } : {}),
    ...(audit.keys ? { auditKeys: audit.keys } : {}),
    ...(audit.anchors ? { anchors: audit.anchors } : {}),
    logger: { level: flags.logLevel },
  });
  const address = await app.listen({ host: flags.host, port: flags.port });
  io.out(`palisade serve: listening on ${address} (console ${address}/console/, API ${address}/v1/openapi.json) with Redis ${redactUrl(flags.redis)} prefix '${flags.prefix}'; Ctrl-C to stop`);

  return new Promise<number>((done) => {
    let closing = false;
    const stop = (why: string): void => {
      if (closing) return;
      closing = true;
      io.out(`palisade serve: ${why}: closing`);
      app
        .close()
        .then(() => workers?.close({ timeoutMs: 10_000 }))
        .then(() => tracing.shutdown())
        .then(
          () => done(0),
          (error: unknown) => {
            io.err(`palisade: shutdown failed: ${error instanceof Error ? error.message : String(error)}`);
            done(1);
          },
        );
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
}

/** `palisade serve`: the authenticated HTTP API and console. */
export function registerServeCommand(program: Command, io: ServeCommandIo, setExit: (code: number) => void): void {
  program
    .command('serve')
    .description('Serve the authenticated HTTP API (and console): start runs, follow them, decide approvals, read the audit log')
    .argument('[module]', 'module with the agents (its `agents` or `default.agents` export): checks agent names here, and with --workers serves them')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', whole(0), 8080)
    .addOption(new Option('--redis <url>', 'Redis URL').default(process.env.REDIS_URL ?? DEFAULT_REDIS_URL, '$REDIS_URL or redis://127.0.0.1:6379'))
    .addOption(new Option('--prefix <prefix>', 'key prefix shared by workers and producers').default('palisade'))
    .requiredOption('--auth <file>', 'auth config (YAML or JSON): API key hashes and/or a JWT issuer')
    .option('--policy <file>', 'policy YAML whose roles grant approve:..., read:runs, cancel:runs, rollback:runs, read:audit')
    .option('--keys <dir>', "folder of key files: the edge's (edge.json) vouches for principals and authenticates decisions")
    .option('--rate-limit <n>', 'requests per principal (per IP address unauthenticated) per window; 0 turns it off', whole(0), 120)
    .option('--rate-window <seconds>', 'the rate limit window', whole(1), 60)
    .option('--body-limit <bytes>', 'largest request body', whole(1024), 64 * 1024)
    .option('--jaeger-url <url>', 'base URL of the Jaeger UI, for trace links (e.g. http://localhost:16686)', httpUrl)
    .option('--workers', 'also run the module’s agents as workers in this process (development: it then holds their credentials)')
    .option('--audit-keys <path>', `the writers' public audit keys, to verify every writer's records (default: ${PUBLIC_KEYS_FILE} in --keys, from palisade audit keys)`)
    .option('--anchor-file <path>', "append-only JSONL file where the audit log's head is anchored outside Redis, and checked against")
    .option('--anchor-key <file>', `the anchoring key, to take anchors (default: ${ANCHOR_KEY_FILE} in --keys)`)
    .option('--anchor-every <seconds>', 'how often to anchor: records since the last anchor can be cut unnoticed', whole(1), 60)
    .addOption(new Option('--log-level <level>', 'request log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .action(async (modulePath: string | undefined, flags: ServeFlags) => setExit(await serve(modulePath, flags, io)));
}
