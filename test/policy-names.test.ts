import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { defineAgent, type Agent } from '../agents/agent.js';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { defineTool } from '../agents/tool.js';
import { loadCedarPolicies } from '../guards/policy/cedar-policies.js';
import { CedarPolicyError } from '../guards/policy/cedar-problems.js';
import { checkPolicyNames, compilePolicy } from '../guards/policy/load-policy.js';
import { parsePolicy, parsePolicyText, PolicyError } from '../guards/policy/policy-file.js';
import { knownNames, nameProblem, nearestName, policyNameProblems, skeleton, type NameKind } from '../guards/policy/policy-names.js';
import { PolicySchema } from '../guards/policy/policy.js';
import { Runtime } from '../runtime/runtime.js';
import { EmbeddedTransport } from '../runtime/transports/embedded-transport.js';

const model = new ScriptedModel({ script: () => 'ok' });
const tool = (name: string) => defineTool({ name, description: name, input: z.object({}), effect: 'read', run: () => 'ok' });
const agent = (name: string, tools: string[] = [], handoffs: string[] = []) => defineAgent({ name, instructions: name, model, tools: tools.map(tool), handoffs });

const refusal = (text: string, file = 'team/policy.yaml'): PolicyError => {
  try {
    parsePolicy(text, file);
  } catch (error) {
    if (error instanceof PolicyError) return error;
    throw error;
  }
  throw new Error('expected the policy to be refused');
};

const cedarRefusal = (text: string): CedarPolicyError => {
  try {
    loadCedarPolicies([{ path: 'rules.cedar', text }]);
  } catch (error) {
    if (error instanceof CedarPolicyError) return error;
    throw error;
  }
  throw new Error('expected the Cedar file to be refused');
};

const KINDS: Array<Exclude<NameKind, 'user'>> = ['agent', 'tool', 'role', 'category', 'guard'];
/** A plain name of each kind, as defineAgent, defineTool and the identity provider would give it. */
const plainName: Record<Exclude<NameKind, 'user'>, fc.Arbitrary<string>> = {
  agent: fc.stringMatching(/^[a-z][a-z0-9_-]{0,20}$/),
  tool: fc.stringMatching(/^[A-Za-z0-9_-]{1,20}$/),
  role: fc.stringMatching(/^[A-Za-z0-9_.:@/-]{1,20}$/),
  category: fc.stringMatching(/^[A-Za-z0-9_.:-]{1,20}$/),
  guard: fc.stringMatching(/^[a-z][a-z0-9_.-]{0,20}$/),
};
/** A letter outside ASCII, in any script. */
const foreignLetter = fc
  .integer({ min: 0x80, max: 0x2ffff })
  .map((cp) => String.fromCodePoint(cp))
  .filter((ch) => /^\p{L}$/u.test(ch));

describe('policy names: characters', () => {
  it.each([
    ['tool', 'r\u0435fund_order', /^contains U\+0435 CYRILLIC SMALL LETTER IE; did you mean "refund_order"\?$/],
    ['role', 'fin\u200bance', /^contains U\+200B ZERO WIDTH SPACE, which is invisible; did you mean "finance"\?$/],
    ['agent', 'tech\u2013support', /^contains U\+2013 EN DASH; did you mean "tech-support"\?$/],
    ['agent', '\uff42illing', /^contains U\+FF42, a fullwidth "b"; did you mean "billing"\?$/],
    ['category', 'p\u0456i', /^contains U\+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I; did you mean "pii"\?$/],
    ['tool', 'caf\u00e9_order', /^contains U\+00E9, a form of "e" outside ASCII; did you mean "cafe_order"\?$/],
    ['agent', 'Billing', /^contains "B" \(agent names are a lowercase letter .*\); did you mean "billing"\?$/],
    ['tool', 'refund order', /^contains a space \(tool names are/],
    ['agent', '9lives', /^is not a possible agent name: agent names are a lowercase letter/],
    ['guard', '', /^is empty$/],
  ] as const)('%s name %j: %s', (kind, name, message) => {
    expect(nameProblem(kind, name)).toMatch(message);
  });

  it('user ids may be in another script, but not mixed, hidden or lookalikes of Latin', () => {
    expect(nameProblem('user', 'alice@example.com')).toBeUndefined();
    expect(nameProblem('user', 'auth0|5f1c')).toBeUndefined();
    expect(nameProblem('user', 'иван')).toBeUndefined();
    expect(nameProblem('user', 'jos\u00e9')).toBeUndefined();
    expect(nameProblem('user', '\u0430lice')).toMatch(/^mixes Cyrillic and Latin letters \(U\+0430 CYRILLIC SMALL LETTER A\); did you mean "alice"\?$/);
    expect(nameProblem('user', '\u0430\u04cf\u0456\u0441\u0435')).toMatch(/^is written in lookalikes of Latin letters .*; did you mean "alice"\?$/);
    expect(nameProblem('user', 'ali\u200dce')).toMatch(/ZERO WIDTH JOINER/);
  });

  it('property: every plain name of its kind passes', () => {
    for (const kind of KINDS) fc.assert(fc.property(plainName[kind], (name) => nameProblem(kind, name) === undefined), { numRuns: 200 });
  });

  it('property: any name with a letter outside ASCII is refused, for every kind but users; a user id mixing it into Latin is refused unless it is Latin too', () => {
    fc.assert(
      fc.property(fc.constantFrom(...KINDS), fc.stringMatching(/^[a-z0-9_]{0,10}$/), foreignLetter, fc.string({ maxLength: 10 }), (kind, before, letter, after) => {
        expect(nameProblem(kind, `${before}${letter}${after}`)).toMatch(/^contains (.*, )?U\+/);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z]{1,8}$/), foreignLetter.filter((ch) => !/\p{Script=Latin}/u.test(ch)), (ascii, letter) => {
        expect(nameProblem('user', `${ascii}${letter}`)).toMatch(/^(mixes .* letters|contains )/);
      }),
      { numRuns: 300 },
    );
  });

  it('property: a name with one letter swapped for a lookalike is refused, and the name meant is suggested', () => {
    const lookalikes: Record<string, string> = { a: '\u0430', e: '\u0435', o: '\u043e', p: '\u0440', c: '\u0441', x: '\u0445', i: '\u0456', s: '\u0455' };
    fc.assert(
      fc.property(plainName.agent.filter((n) => /[aeopcxis]/.test(n)), fc.nat(), (name, pick) => {
        const at = [...name.matchAll(/[aeopcxis]/g)].map((m) => m.index!);
        const i = at[pick % at.length]!;
        const spoof = name.slice(0, i) + lookalikes[name[i]!] + name.slice(i + 1);
        expect(skeleton(spoof)).toBe(name);
        expect(nameProblem('agent', spoof)).toMatch(new RegExp(`^contains U\\+[0-9A-F]{4} [A-Z -]+; did you mean ${JSON.stringify(name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\?$`));
        expect(nameProblem('tool', spoof)).toMatch(/did you mean/);
      }),
      { numRuns: 300 },
    );
  });
});

describe('policy names: where they are written', () => {
  it('a YAML key that is not plain is reported at the key, with the section and the character', () => {
    const error = refusal('version: 1\nclearance:\n  agents:\n    t\u0435ch_support: { level: internal }\n');
    expect(error.message).toBe('team/policy.yaml:4:5: clearance.agents: agent name "t\u0435ch_support" contains U+0435 CYRILLIC SMALL LETTER IE; did you mean "tech_support"?');
  });

  it('roles, categories, handoffs, approvals, guards and risk roles are names too; every one is reported', () => {
    const text = [
      'version: 1',
      'roles:',
      '  "fin\u200bance": ["approve:tool:issue_refund"]',
      'handoffs:',
      '  triage: [b\u0456lling]',
      'clearance:',
      '  reply: { level: confidential, categories: [p\u0456i] }',
      'risk:',
      '  roles: { "\u0430dmin": -0.1 }',
      'guards:',
      '  failOpen: [c\u043entent]',
      '',
    ].join('\n');
    const error = refusal(text);
    expect([error.message.split('\n')[0], ...error.others]).toEqual([
      expect.stringMatching(/^team\/policy\.yaml:3:3: roles: role name "fin\\u\{200b\}ance" contains U\+200B ZERO WIDTH SPACE/),
      expect.stringMatching(/^team\/policy\.yaml:5:12: handoffs\.triage: agent name "b\u0456lling" contains U\+0456/),
      expect.stringMatching(/^team\/policy\.yaml:7:46: clearance\.reply\.categories: category name "p\u0456i"/),
      expect.stringMatching(/^team\/policy\.yaml:9:12: risk\.roles: role name "\u0430dmin"/),
      expect.stringMatching(/^team\/policy\.yaml:11:14: guards\.failOpen: guard name "c\u043entent"/),
    ]);
  });

  it('a key the schema refuses for its shape says which key and why', () => {
    const error = refusal('version: 1\ntools:\n  Send_Email: { risk: high }\n');
    expect(error.message).toMatch(/^team\/policy\.yaml:3:3: tools: key "Send_Email" must be a lowercase agent or tool name$/);
  });

  it('parsePolicyText lists every name with its position', () => {
    const { names } = parsePolicyText('version: 1\nclearance:\n  agents:\n    billing: { level: confidential, categories: [pii] }\ndeclassify:\n  fraud_check: { to: { level: internal }, reason: a score only }\n', 'p.yaml');
    expect(names.map((n) => [n.kind, n.name, n.line, n.column])).toEqual([
      ['agent', 'billing', 4, 5],
      ['category', 'pii', 4, 50],
      ['agent', 'fraud_check', 6, 3],
    ]);
  });

  it('Cedar: entity ids, names compared with context.agent, context.chain and resource.agent, and values of closed sets', () => {
    const error = cedarRefusal(
      [
        'forbid (principal in Palisade::Role::"fin\u200bance", action, resource == Palisade::Agent::"bill\u0456ng")',
        'when { context.agent == "tri\u0430ge" || context.chain.contains("Billing") || context.effect == "exteral" || context.label.level like "x*" };',
        '',
      ].join('\n'),
    );
    expect(error.errors.map((e) => `${e.line}:${e.column} ${e.detail}`)).toEqual([
      expect.stringMatching(/^1:22 role name "fin\\u\{200b\}ance" contains U\+200B ZERO WIDTH SPACE, which is invisible; did you mean "finance"\?$/),
      expect.stringMatching(/^1:70 agent name "bill\u0456ng" contains U\+0456 .*; did you mean "billing"\?$/),
      expect.stringMatching(/^2:25 agent name "tri\u0430ge" contains U\+0430 CYRILLIC SMALL LETTER A; did you mean "triage"\?$/),
      expect.stringMatching(/^2:60 agent name "Billing" contains "B" .*; did you mean "billing"\?$/),
      expect.stringMatching(/^2:92 context\.effect is never "exteral": it is one of "read", "write", "external"; did you mean "external"\?$/),
      expect.stringMatching(/^2:\d+ context\.label\.level like "x\*" matches none of "public", "internal", "confidential", "restricted"$/),
    ]);
  });
});

describe('policy names: matching the agents', () => {
  const shop = () => [agent('triage', ['read_vault'], ['billing', 'tech_support']), agent('billing', ['refund_order']), agent('tech_support')];
  const problems = (yaml: string, cedar = '', agents: Agent[] = shop(), elsewhere?: { agents?: string[]; tools?: string[] }) => {
    const { names } = parsePolicyText(yaml, 'p.yaml');
    const cedarNames = cedar ? loadCedarPolicies([{ path: 'r.cedar', text: cedar }]).names : [];
    return policyNameProblems([...names, ...cedarNames], knownNames(agents, elsewhere)).map((p) => `${p.file}:${p.line}:${p.column}: ${p.detail}`);
  };

  it('suggests the nearest name, or lists the names when none is near', () => {
    expect(nearestName('tech-support', ['triage', 'tech_support'])).toBe('tech_support');
    expect(nearestName('refund_ordr', ['refund_order', 'read_vault'])).toBe('refund_order');
    expect(nearestName('Billing', ['billing'])).toBe('billing');
    expect(nearestName('payroll', ['billing', 'triage'])).toBeUndefined();
    expect(problems('version: 1\ntools:\n  payroll_export: { risk: high }\n')).toEqual(['p.yaml:3:3: tools entry "payroll_export" names no tool; the tools are read_vault, refund_order']);
  });

  it('every kind of agent and tool name in YAML and Cedar is matched', () => {
    const yaml = [
      'version: 1',
      'roles:',
      '  finance: ["approve:tool:refund_ordr", "approve:agent:*"]',
      'handoffs:',
      '  triage: [billing, tech-support]',
      'clearance:',
      '  tools: { read_vaults: { level: internal } }',
      'declassify:',
      '  biling: { to: { level: internal }, reason: scores only }',
      '',
    ].join('\n');
    const cedar = 'forbid (principal, action, resource == Palisade::Tool::"refund_ordr") when { resource.agent like "bill*" && context.agent like "fraud*" };\n';
    expect(problems(yaml, cedar)).toEqual([
      'p.yaml:3:13: permission "approve:tool:refund_ordr" of role "finance" names no tool; did you mean "refund_order"?',
      'p.yaml:5:21: handoff target "tech-support" names no agent; did you mean "tech_support"?',
      'p.yaml:7:12: clearance for tool "read_vaults" names no tool; did you mean "read_vault"?',
      'p.yaml:9:3: declassify entry "biling" names no agent; did you mean "billing"?',
      'r.cedar:1:40: Palisade::Tool::"refund_ordr" names no tool; did you mean "refund_order"?',
      expect.stringMatching(/^r\.cedar:1:\d+: context\.agent like "fraud\*" matches no agent; the agents are billing, tech_support, triage$/),
    ]);
  });

  it('names served elsewhere count; roles and users are never matched against agents', () => {
    const yaml = 'version: 1\nclearance:\n  agents: { payroll: { level: internal } }\n  roles: { auditor: { level: internal } }\n';
    const cedar = 'forbid (principal == Palisade::User::"nobody", action, resource == Palisade::Tool::"export_ledger");\n';
    expect(problems(yaml, cedar)).toHaveLength(2);
    expect(problems(yaml, cedar, shop(), { agents: ['payroll'], tools: ['export_ledger'] })).toEqual([]);
  });

  it('property: a policy that names only declared agents and tools, everywhere it can, passes', () => {
    const system = fc
      .uniqueArray(fc.stringMatching(/^[a-z][a-z0-9_-]{0,12}$/), { minLength: 1, maxLength: 4 })
      .chain((agents) => fc.tuple(fc.constant(agents), fc.uniqueArray(fc.stringMatching(/^[a-z][a-z0-9_-]{0,12}$/), { minLength: 1, maxLength: 5 })));
    fc.assert(
      fc.property(system, ([agentNames, toolNames]) => {
        const agents = agentNames.map((name, i) => agent(name, i === 0 ? toolNames : []));
        const q = (s: string | undefined) => JSON.stringify(s);
        const yaml = [
          'version: 1',
          `roles: { approver: [${toolNames.map((t) => q(`approve:tool:${t}`)).join(', ')}] }`,
          `handoffs: { ${q(agentNames[0]!)}: [${agentNames.map(q).join(', ')}] }`,
          `clearance:`,
          `  agents: { ${agentNames.map((a) => `${q(a)}: { level: internal }`).join(', ')} }`,
          `  tools: { ${toolNames.map((t) => `${q(t)}: { level: internal }`).join(', ')} }`,
          `tools: { ${toolNames.map((t) => `${q(t)}: { risk: high }`).join(', ')} }`,
          `declassify: { ${agentNames.map((a) => `${q(a)}: { to: { level: public }, reason: test }`).join(', ')} }`,
          '',
        ].join('\n');
        const cedar = [
          ...toolNames.map((t) => `forbid (principal, action, resource == Palisade::Tool::${q(t)}) when { context.agent == ${q(agentNames[0])} };`),
          ...agentNames.map((a) => `forbid (principal, action, resource == Palisade::Agent::${q(a)}) unless { context.chain.contains(${q(a)}) };`),
        ].join('\n');
        expect(problems(yaml, cedar, agents)).toEqual([]);
      }),
      { numRuns: 40 },
    );
  });
});

describe('policy names: where the policy meets the agents', () => {
  const shop = () => [agent('triage', [], ['tech_support']), agent('tech_support', ['search_kb'])];
  const misnamed = () => compilePolicy(PolicySchema.parse({ version: 1, clearance: { agents: { 'tech-support': { level: 'internal' } } } }));

  it('a runtime with agents refuses a policy naming none of them; the error lists each name', () => {
    expect(() => new Runtime({ agents: shop(), policy: misnamed(), transport: new EmbeddedTransport() })).toThrow(
      /^policy: clearance\.agents: clearance for "tech-support" names no agent; did you mean "tech_support"\?$/,
    );
  });

  it('a runtime that only starts runs (no agents) checks characters only; names served elsewhere are accepted', async () => {
    const edge = new Runtime({ policy: misnamed(), transport: new EmbeddedTransport() });
    await edge.close();
    const part = new Runtime({ agents: shop(), policy: misnamed(), servedElsewhere: { agents: ['tech-support'] }, transport: new EmbeddedTransport() });
    await part.close();
    expect(() => checkPolicyNames(misnamed(), shop(), { agents: ['tech-support'] })).not.toThrow();
  });

  it('a policy built in code with a lookalike name is refused when it is compiled', () => {
    expect(() => compilePolicy(PolicySchema.parse({ version: 1, clearance: { reply: { level: 'confidential', categories: ['p\u0456i'] } } }))).toThrow(PolicyError);
    expect(() => compilePolicy(PolicySchema.parse({ version: 1, roles: { 'fin\u200bance': [] } }))).toThrow(/^policy: roles: role name "fin\\u\{200b\}ance" contains U\+200B ZERO WIDTH SPACE/);
  });
});
