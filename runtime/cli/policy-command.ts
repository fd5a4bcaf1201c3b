import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { z } from 'zod';
import type { Agent } from '../../agents/agent.js';
import { STAGES } from '../../guards/decision.js';
import type { GuardEvent } from '../../guards/guard-event.js';
import { LabelSchema } from '../../agents/label.js';
import { checkPolicyNames, loadPolicy, policyNames } from '../../guards/policy/load-policy.js';
import { policyJsonSchema } from '../../guards/policy/policy.js';
import { createPolicyPipeline } from '../../guards/policy/policy-pipeline.js';
import { PrincipalSchema } from '../../agents/principal.js';

/** An event to explain, as JSON: the fields a guard sees (see GuardEvent), with defaults for the rest. */
const ExplainEventSchema = z
  .object({
    stage: z.enum(STAGES),
    runId: z.string().default('explain'),
    principal: PrincipalSchema,
    agent: z.string().min(1),
    chain: z.array(z.string()).optional(),
    depth: z.number().int().nonnegative().default(0),
    hops: z.number().int().nonnegative().default(0),
    label: LabelSchema.default({ level: 'public', categories: [], integrity: 'trusted' }),
    content: z.string().optional(),
    tool: z
      .object({
        name: z.string(),
        effect: z.enum(['read', 'write', 'external']),
        risk: z.enum(['low', 'medium', 'high', 'critical']).default('low'),
        requires: z.array(z.string()).default([]),
        returns: LabelSchema.default({ level: 'public', categories: [], integrity: 'trusted' }),
      })
      .strict()
      .optional(),
    args: z.record(z.string(), z.unknown()).optional(),
    target: z.object({ agent: z.string(), mode: z.enum(['handoff', 'delegate']), fanOut: z.number().int().positive().optional() }).strict().optional(),
    history: z
      .array(z.object({ source: z.enum(['user', 'tool', 'agent']), name: z.string().optional(), content: z.string(), label: LabelSchema.default({ level: 'public', categories: [], integrity: 'trusted' }) }).strict())
      .optional(),
    budget: z.object({ tokensLeft: z.number().optional(), deadline: z.number().optional() }).strict().optional(),
    priorCalls: z.number().int().nonnegative().optional(),
  })
  .strict();

export interface PolicyCommandIo {
  out: (line: string) => void;
  /** Warnings; standard error when absent. */
  err?: (line: string) => void;
  /** Loads agent definitions for `--agents <module>`, so clearances and the handoff graph are known. */
  loadAgents: (modulePath: string) => Promise<Agent[]>;
  fail: (message: string) => never;
}

/** `palisade policy check | explain | schema`. Exit codes: 0 fine, 1 the event is not allowed, 2 bad input. */
export function registerPolicyCommands(program: Command, io: PolicyCommandIo, setExit: (code: number) => void): void {
  const policy = program.command('policy').description('Check a policy file, explain its decisions, or print its JSON Schema');

  policy
    .command('check')
    .description('Validate a policy file and the Cedar and rules files it names; errors give file, line and column')
    .argument('<file>', 'policy YAML')
    .option('--agents <module>', 'module with the agent definitions: every agent and tool the policy names must be one of them')
    .action(async (file: string, flags: { agents?: string }) => {
      const loaded = await loadPolicy(file);
      const p = loaded.policy;
      const agents = flags.agents ? await io.loadAgents(flags.agents) : undefined;
      // A name that matches no agent or tool is an error, as it is when a runtime starts with these agents.
      if (agents) checkPolicyNames(loaded, agents);
      const named = new Set(policyNames(loaded).flatMap((n) => (n.kind === 'agent' || n.kind === 'tool' ? [`${n.kind} ${n.name}`] : [])));
      const tools = new Set(agents?.flatMap((a) => [...a.tools.keys()]));
      const checked = agents ? `, names checked against ${agents.length} agents and ${tools.size} tools` : '';
      io.out(`${file}: valid (${p.mode} mode, ${Object.keys(p.roles).length} roles, ${loaded.cedar?.size ?? 0} Cedar policies, limits depth ${p.limits.maxDepth} / fan-out ${p.limits.maxFanOut} / hops ${p.limits.maxHops}${checked})`);
      if (!agents && named.size > 0) {
        const warn = io.err ?? ((line: string) => void process.stderr.write(`${line}\n`));
        warn(`${file}: warning: the ${named.size} agent and tool names it writes were not checked against the agents; pass --agents <module> to check that each names one (a rule or clearance for a name that matches nothing does not apply)`);
      }
      setExit(0);
    });

  policy
    .command('explain')
    .description("Run one event through the policy's guards and show each guard's decision and why")
    .argument('<file>', 'policy YAML')
    .argument('<event>', 'event JSON file (stage, principal, agent, tool, args, label, ...)')
    .option('--agents <module>', 'module with the agent definitions (for clearances and the handoff graph)')
    .option('--json', 'print the decision as JSON')
    .action(async (file: string, eventFile: string, flags: { agents?: string; json?: boolean }) => {
      const loaded = await loadPolicy(file);
      let raw: unknown;
      try {
        raw = JSON.parse(await readFile(eventFile, 'utf8'));
      } catch (error) {
        io.fail(`cannot read the event ${eventFile}: ${(error as Error).message}`);
      }
      const parsed = ExplainEventSchema.safeParse(raw);
      if (!parsed.success) io.fail(`${eventFile}: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
      const event: GuardEvent = { ...parsed.data, chain: parsed.data.chain ?? [parsed.data.agent] };
      const agents = flags.agents ? await io.loadAgents(flags.agents) : [];
      checkPolicyNames(loaded, agents);
      const decision = await createPolicyPipeline({ ...loaded, agents }).evaluate(event);
      if (flags.json) io.out(JSON.stringify(decision, null, 2));
      else {
        for (const r of decision.results) io.out(`${r.guard.padEnd(12)} ${r.verdict.padEnd(8)} risk ${r.risk.toFixed(2)}${r.reasons.length ? `  ${r.reasons.join('; ')}` : ''}`);
        io.out(`decision: ${decision.verdict}${decision.mode === 'monitor' ? ` (monitor mode: enforcement would ${decision.decided})` : ''}, risk ${decision.risk.toFixed(2)}`);
        if (decision.content !== undefined) io.out(`content as it may pass: ${decision.content}`);
      }
      setExit(decision.verdict === 'allow' || decision.verdict === 'redact' ? 0 : 1);
    });

  policy
    .command('schema')
    .description('Print the JSON Schema of policy files (for editors)')
    .action(() => {
      io.out(JSON.stringify(policyJsonSchema(), null, 2));
      setExit(0);
    });
}
