import { Option, type Command } from 'commander';
import { loadPolicy } from '../../guards/policy/load-policy.js';
import type { ReviewedApproval, ValueSource } from '../approvals/approval.js';
import { ApprovalError } from '../approvals/approvals.js';
import { describeLabel } from '../../guards/builtin/context.js';
import { localDevelopmentPrincipal } from '../identity/jwt-verifier.js';
import { EDGE, loadKeyring } from '../identity/keyring.js';
import { DEFAULT_REDIS_URL, pingRedis, redactUrl } from '../redis-url.js';
import { Runtime } from '../runtime.js';
import { BullMQTransport } from '../transports/bullmq-transport.js';

export interface ApprovalCommandIo {
  out: (line: string) => void;
  err: (line: string) => void;
  fail: (message: string) => never;
}

interface ConnFlags {
  redis: string;
  prefix: string;
}

interface DeciderFlags extends ConnFlags {
  user: string;
  roles?: string[];
  tenant?: string;
  policy: string;
  keys?: string;
  note?: string;
}

const list = (value: string): string[] =>
  value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const ORIGIN_TEXT: Record<ValueSource['origin'], string> = {
  user: "the user's request",
  tool: 'a trusted tool',
  agent: "a delegate's answer",
  third_party: 'THIRD-PARTY content (anyone could have written it)',
  instructions: 'THIRD-PARTY content reading as instructions (a likely injection)',
  model: 'NO SOURCE (the model wrote it)',
};
const originText = (s: ValueSource): string => `${ORIGIN_TEXT[s.origin]}${s.via ? ` via ${s.via}` : ''}`;

function describeState({ request, decision, verification }: ReviewedApproval, now = Date.now()): string[] {
  if (verification.status === 'refused') {
    // Not what the agent wrote: its content is not shown, so nobody reads an attacker's text as the agent's.
    return [
      `request   ${request.id}  FAILED VERIFICATION: ${verification.problem}`,
      `          it was forged or altered after its agent wrote it; its content is withheld and it cannot be decided`,
    ];
  }
  const status = decision ? `${decision.status}${decision.by ? ` by ${decision.by.id}` : ''} at ${new Date(decision.at).toISOString()}` : now >= request.expiresAt ? 'pending, past its deadline' : 'pending';
  return [
    `request   ${request.id}  (${status}${verification.status === 'verified' ? ', verified' : ', NOT VERIFIED: no --keys'})`,
    `run       ${request.runId}, for ${request.principal.id}${request.principal.roles.length ? ` (${request.principal.roles.join(', ')})` : ''}`,
    `chain     ${request.chain.join(' → ')}`,
    `action    ${request.kind} ${request.subject} by ${request.agent}`,
    `arguments ${request.arguments}`,
    ...(request.sources ?? []).map((s, i) => `${i === 0 ? 'sources   ' : '          '}${s.path} = ${s.value}: from ${originText(s)}`),
    `reasons   ${request.reasons.join('; ') || '(none given)'}`,
    // This command reads Redis itself, so its user reads the store whole: the quote is shown with its label, not filtered.
    ...(request.quote ? [`quoted    (${describeLabel(request.quote.label)}) ${request.quote.text}`] : []),
    `risk      ${request.risk.toFixed(2)}   context ${describeLabel(request.label)}${request.label.integrity === 'untrusted' ? ' (untrusted)' : ''}`,
    `needs     ${request.permission}${request.selfApproval ? '' : ` (not ${request.principal.id})`}`,
    `requested ${new Date(request.requestedAt).toISOString()}, expires ${new Date(request.expiresAt).toISOString()}`,
    ...(decision?.note ? [`note      ${decision.note}`] : []),
  ];
}

/** `palisade approvals list|show|approve|deny` and `palisade rollback`. */
export function registerApprovalCommands(program: Command, io: ApprovalCommandIo, setExit: (code: number) => void): void {
  const redisOption = (): Option => new Option('--redis <url>', 'Redis URL').default(process.env.REDIS_URL ?? DEFAULT_REDIS_URL, '$REDIS_URL or redis://127.0.0.1:6379');
  const prefixOption = (): Option => new Option('--prefix <prefix>', 'key prefix shared by workers and producers').default('palisade');

  const withRuntime = async <T>(flags: ConnFlags & { policy?: string; keys?: string }, body: (runtime: Runtime) => Promise<T>): Promise<T> => {
    const problem = await pingRedis(flags.redis);
    if (problem !== undefined) io.fail(`cannot reach Redis at ${redactUrl(flags.redis)}: ${problem}`);
    const runtime = new Runtime({
      transport: new BullMQTransport({ connection: flags.redis, prefix: flags.prefix }),
      ...(flags.policy ? { policy: await loadPolicy(flags.policy) } : {}),
      ...(flags.keys ? { keys: await loadKeyring(flags.keys, [EDGE]) } : {}),
    });
    try {
      return await body(runtime);
    } catch (error) {
      if (error instanceof ApprovalError) io.fail(error.message);
      throw error;
    } finally {
      await runtime.close().catch(() => undefined);
    }
  };

  const decider = (flags: DeciderFlags) => {
    const { principal, warning } = localDevelopmentPrincipal({ id: flags.user, roles: flags.roles ?? [], ...(flags.tenant ? { tenant: flags.tenant } : {}) });
    io.err(`palisade: ${warning}`);
    return principal;
  };

  const approvals = program.command('approvals').description('Requests for human approval of escalated actions: list, inspect, approve or deny');

  const keysOption = (): Option => new Option('--keys <dir>', "folder of key files: the edge's (edge.json) checks that each request is what its agent wrote");
  const unverified = (flags: { keys?: string }) => {
    if (!flags.keys) io.err('palisade: NOT VERIFIED without --keys: what is shown may have been altered in Redis');
  };

  approvals
    .command('list')
    .description('Requests waiting for a decision, oldest first')
    .option('--json', 'one JSON request per line, with its verification')
    .addOption(keysOption())
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (flags: ConnFlags & { json?: boolean; keys?: string }) => {
      unverified(flags);
      await withRuntime(flags, async (runtime) => {
        const pending = await runtime.approvals.pending();
        if (flags.json) pending.forEach((s) => io.out(JSON.stringify(s.verification.status === 'refused' ? { id: s.request.id, verification: s.verification } : { ...s.request, verification: s.verification })));
        else if (pending.length === 0) io.out('No requests wait for a decision.');
        else {
          for (const { request, verification } of pending) {
            const left = Math.round((request.expiresAt - Date.now()) / 1000);
            if (verification.status === 'refused') io.out(`${request.id}  FAILED VERIFICATION (${verification.problem}): not shown, cannot be decided`);
            else io.out(`${request.id}  ${request.kind} ${request.subject}  run ${request.runId}  for ${request.principal.id}  risk ${request.risk.toFixed(2)}  ${left > 0 ? `${left} s left` : 'past its deadline'}`);
          }
        }
      });
      setExit(0);
    });

  approvals
    .command('show')
    .description('Everything an approver needs to decide on one request')
    .argument('<id>', 'the request id (from `approvals list` or the run’s events)')
    .option('--json', 'the request, its decision and its verification as JSON')
    .addOption(keysOption())
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (id: string, flags: ConnFlags & { json?: boolean; keys?: string }) => {
      unverified(flags);
      const refused = await withRuntime(flags, async (runtime) => {
        const state = await runtime.approvals.get(id);
        if (flags.json) io.out(JSON.stringify(state.verification.status === 'refused' ? { request: { id }, verification: state.verification } : state));
        else describeState(state).forEach((line) => io.out(line));
        return state.verification.status === 'refused';
      });
      setExit(refused ? 1 : 0);
    });

  for (const verb of ['approve', 'deny'] as const) {
    approvals
      .command(verb)
      .description(verb === 'approve' ? 'Approve a request: the waiting run checks it again and goes on' : 'Deny a request: the agent is told, or the run fails (policy approvals.onDeny)')
      .argument('<id>', 'the request id')
      .requiredOption('--user <id>', 'the approver (a local development identity: not verified)')
      .option('--roles <roles>', "the approver's roles, comma-separated", list)
      .option('--tenant <tenant>', "the approver's tenant")
      .requiredOption('--policy <file>', 'the policy whose roles grant approve:... permissions')
      .option('--keys <dir>', "folder of key files: the edge's (edge.json) checks the request and signs the decision for the waiting worker")
      .option('--note <text>', 'why: recorded with the decision and shown to the run')
      .addOption(redisOption())
      .addOption(prefixOption())
      .action(async (id: string, flags: DeciderFlags) => {
        const by = decider(flags);
        await withRuntime(flags, async (runtime) => {
          const decision = await runtime.approvals.decide(id, { by, approve: verb === 'approve', ...(flags.note ? { note: flags.note } : {}) });
          io.out(`${id}: ${decision.status} by ${by.id}; the waiting run resumes now`);
        });
        setExit(0);
      });
  }

  program
    .command('rollback')
    .description("Undo a run's side effects, newest first, each in the worker of the agent that did it")
    .argument('<runId>', 'the run')
    .requiredOption('--user <id>', 'the operator (a local development identity: not verified)')
    .option('--reason <text>', 'why: recorded in the run’s events and the audit log')
    .option('--keys <dir>', "folder of key files: the edge's (edge.json) signs the order for each worker")
    .option('--timeout <ms>', 'how long to wait for the outcome', (v) => Number(v), 60_000)
    .addOption(redisOption())
    .addOption(prefixOption())
    .action(async (runId: string, flags: ConnFlags & { user: string; reason?: string; keys?: string; timeout: number }) => {
      io.err(`palisade: acting as '${flags.user}', a local development identity taken from the command line, not verified`);
      const outcome = await withRuntime(flags, async (runtime) => {
        const started = await runtime.rollback(runId, { by: flags.user, ...(flags.reason ? { reason: flags.reason } : {}) });
        io.out(`rollback ${started.rollbackId}: ${started.actions} action(s) to undo`);
        const stop = AbortSignal.timeout(flags.timeout);
        for await (const event of runtime.run(runId).events({ pollMs: 200, signal: stop, until: (e) => e.type === 'rollback.completed' && e.rollbackId === started.rollbackId })) {
          if (event.type === 'action.compensated' && event.rollbackId === started.rollbackId) io.out(`  ${event.tool} (${event.callId}): ${event.status}${event.message ? ` — ${event.message}` : ''}`);
          if (event.type === 'rollback.completed' && event.rollbackId === started.rollbackId) {
            io.out(`done: ${event.undone} undone, ${event.failed} failed, ${event.notUndone} without a compensation`);
            return event.failed + event.notUndone === 0 ? 'complete' : 'partial';
          }
        }
        return 'unfinished';
      });
      if (outcome === 'unfinished') io.err(`palisade: the rollback had not finished after ${flags.timeout} ms; it goes on in the workers`);
      setExit(outcome === 'complete' ? 0 : 1);
    });
}
