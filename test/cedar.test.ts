import { readFileSync } from 'node:fs';
import * as cedarWasm from '@cedar-policy/cedar-wasm/nodejs';
import fc from 'fast-check';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { loadCedarPolicies, type CedarPolicies } from '../guards/policy/cedar-policies.js';
import { CedarPolicyError } from '../guards/policy/cedar-problems.js';
import { cedarRequestFor, type CedarRequest } from '../guards/policy/cedar-request.js';
import type { GuardEvent } from '../guards/guard-event.js';

// Wrap the wasm entry points in spies (calling through) to prove authorize() never re-parses.
vi.mock('@cedar-policy/cedar-wasm/nodejs', async (importOriginal) => {
  const actual = await importOriginal<typeof import('@cedar-policy/cedar-wasm/nodejs')>();
  return {
    ...actual,
    policySetTextToParts: vi.fn(actual.policySetTextToParts),
    policyToJson: vi.fn(actual.policyToJson),
    preparsePolicySet: vi.fn(actual.preparsePolicySet),
    checkParsePolicySet: vi.fn(actual.checkParsePolicySet),
    isAuthorized: vi.fn(actual.isAuthorized),
    statefulIsAuthorized: vi.fn(actual.statefulIsAuthorized),
  };
});

const SUPPORT = readFileSync(new URL('./fixtures/cedar/support.cedar', import.meta.url), 'utf8');

type Overrides = {
  principal?: Partial<CedarRequest['principal']>;
  action?: CedarRequest['action'];
  agent?: string;
  context?: Partial<CedarRequest['context']>;
};

/** A support user's read-only tool call, with overrides. */
function request(o: Overrides = {}): CedarRequest {
  return {
    principal: { id: 'alice', roles: ['support'], attrs: {}, ...o.principal },
    action: o.action ?? { kind: 'tool', name: 'lookup_order' },
    agent: o.agent ?? 'triage',
    context: {
      label: { level: 'public', categories: [], integrity: 'trusted' },
      chain: ['triage'],
      depth: 0,
      hops: 1,
      risk: 0.1,
      effect: 'read',
      toolRisk: 'low',
      stage: 'tool_call',
      ...o.context,
    },
  };
}

const refund = (amountCents: number | undefined, roles: string[], context: Partial<CedarRequest['context']> = {}) =>
  request({
    principal: { roles },
    action: { kind: 'tool', name: 'issue_refund' },
    context: { effect: 'write', toolRisk: 'high', args: amountCents === undefined ? { orderId: 'o-1' } : { orderId: 'o-1', amountCents }, ...context },
  });

/** The load error for one file, asserting it is a CedarPolicyError. */
function loadError(text: string, path = 'rules.cedar'): CedarPolicyError {
  try {
    loadCedarPolicies([{ path, text }]);
  } catch (error) {
    expect(error).toBeInstanceOf(CedarPolicyError);
    return error as CedarPolicyError;
  }
  throw new Error('expected a CedarPolicyError');
}

describe('Cedar policies: the support example', () => {
  let policies: CedarPolicies;
  beforeAll(() => {
    policies = loadCedarPolicies([{ path: 'support.cedar', text: SUPPORT }]);
  });

  it('loads every policy, named by @id or by file and index', () => {
    expect(policies.size).toBe(15);
    expect(policies.policyIds).toContain('refund-cap');
    expect(policies.policyIds).toContain('no-pii-egress');
    expect(policies.policyIds.at(-1)).toBe('support.cedar:14');
    expect(policies.source('refund-cap')).toEqual({ id: 'refund-cap', file: 'support.cedar', line: 31, column: 1, effect: 'forbid', escalate: false });
    expect(policies.source('handoffs')?.effect).toBe('permit');
    expect(policies.source('nope')).toBeUndefined();
  });

  it('permits what a rule permits and names the rule', () => {
    expect(policies.authorize(request())).toEqual({ decision: 'allow', determining: ['support-read-tools'], errors: [] });
  });

  it('denies by default when no rule permits', () => {
    expect(policies.authorize(refund(100, ['support']))).toEqual({ decision: 'deny', determining: [], errors: [] });
    const write = request({ action: { kind: 'tool', name: 'update_address' }, context: { effect: 'write' } });
    expect(policies.authorize(write)).toEqual({ decision: 'deny', determining: [], errors: [] });
  });

  it('tests role membership through the principal\'s parents', () => {
    expect(policies.authorize(refund(1000, ['finance']))).toMatchObject({ decision: 'allow', determining: ['finance-refunds'] });
    expect(policies.authorize(refund(1000, ['support', 'finance']))).toMatchObject({ decision: 'allow' });
    expect(policies.authorize(refund(1000, []))).toMatchObject({ decision: 'deny', determining: [] });
  });

  it('compares integer arguments as Longs', () => {
    expect(policies.authorize(refund(50_000, ['finance']))).toMatchObject({ decision: 'allow', errors: [] });
    expect(policies.authorize(refund(50_001, ['finance']))).toEqual({ decision: 'deny', determining: ['refund-cap'], errors: [] });
    expect(policies.authorize(refund(50_001, ['finance', 'finance_manager']))).toMatchObject({ decision: 'allow', determining: ['finance-refunds'] });
    // `has` in the rule makes a missing amount a clean deny, not an evaluation error.
    expect(policies.authorize(refund(undefined, ['finance']))).toEqual({ decision: 'deny', determining: ['refund-cap'], errors: [] });
  });

  it('compares string arguments (== and like)', () => {
    const lookup = (tenant: string | undefined, argTenant: string) =>
      request({ principal: tenant === undefined ? {} : { tenant }, context: { args: { tenant: argTenant, orderId: 'o-1' } } });
    expect(policies.authorize(lookup('acme', 'acme'))).toMatchObject({ decision: 'allow', errors: [] });
    expect(policies.authorize(lookup('acme', 'globex'))).toEqual({ decision: 'deny', determining: ['tenant-isolation'], errors: [] });
    expect(policies.authorize(lookup(undefined, 'acme'))).toEqual({ decision: 'deny', determining: ['tenant-isolation'], errors: [] });

    const mail = (to: string, level: string) =>
      request({ action: { kind: 'tool', name: 'send_email' }, context: { effect: 'external', args: { to, body: 'hi' }, label: { level, categories: [], integrity: 'trusted' } } });
    expect(policies.authorize(mail('bob@example.com', 'confidential'))).toMatchObject({ decision: 'allow', determining: ['support-send-email'] });
    expect(policies.authorize(mail('bob@evil.test', 'confidential'))).toMatchObject({ decision: 'deny', determining: ['confidential-mail-internal-only'] });
  });

  it('compares fractional arguments as decimals', () => {
    const discount = (rate: number, roles = ['finance']) =>
      policies.authorize(request({ principal: { roles }, action: { kind: 'tool', name: 'apply_discount' }, context: { effect: 'write', args: { orderId: 'o-1', rate } } }));
    expect(discount(0.2)).toEqual({ decision: 'allow', determining: ['finance-discounts'], errors: [] });
    expect(discount(0.25)).toMatchObject({ decision: 'allow', errors: [] });
    expect(discount(0.3)).toEqual({ decision: 'deny', determining: ['discount-cap'], errors: [] });
    expect(discount(0.3, ['finance', 'finance_manager'])).toMatchObject({ decision: 'allow', errors: [] });
    // Rounded to Cedar's 4 decimal places: 0.25004 is 0.25, 0.25006 is 0.2501.
    expect(discount(0.25004)).toMatchObject({ decision: 'allow', errors: [] });
    expect(discount(0.25006)).toMatchObject({ decision: 'deny', determining: ['discount-cap'] });
    // An integral number is a Long: decimal comparison errors, and the caller fails closed.
    const whole = discount(1);
    expect(whole.errors).toHaveLength(1);
    expect(whole.errors[0]).toMatch(/^policy discount-cap \(support\.cedar:58:\d+\): .*type/);
  });

  it('tests label categories, level rank and integrity', () => {
    const mail = (label: CedarRequest['context']['label']) =>
      policies.authorize(request({ action: { kind: 'tool', name: 'send_email' }, context: { effect: 'external', args: { to: 'x@evil.test' }, label } }));
    expect(mail({ level: 'internal', categories: ['financial'], integrity: 'trusted' })).toMatchObject({ decision: 'allow' });
    expect(mail({ level: 'internal', categories: ['financial', 'pii'], integrity: 'trusted' })).toEqual({ decision: 'deny', determining: ['no-pii-egress'], errors: [] });
    expect(mail({ level: 'restricted', categories: [], integrity: 'trusted' })).toMatchObject({ decision: 'deny', determining: ['confidential-mail-internal-only'] });
    expect(mail({ level: 'restricted', categories: ['pii'], integrity: 'trusted' })).toMatchObject({
      decision: 'deny',
      determining: ['no-pii-egress', 'confidential-mail-internal-only'],
    });
  });

  it('lets a forbid override a permit', () => {
    const untrusted = refund(1000, ['finance'], { label: { level: 'internal', categories: [], integrity: 'untrusted' } });
    expect(policies.authorize(untrusted)).toEqual({ decision: 'deny', determining: ['refund-needs-trusted-context'], errors: [] });
    const both = refund(90_000, ['finance'], { label: { level: 'internal', categories: [], integrity: 'untrusted' } });
    expect(policies.authorize(both).determining).toEqual(['refund-cap', 'refund-needs-trusted-context']);
    expect(policies.authorize(refund(1000, ['finance'], { risk: 0.85 }))).toMatchObject({ decision: 'deny', determining: ['risky-writes'] });
    expect(policies.authorize(request({ context: { risk: 0.95 } }))).toMatchObject({ decision: 'allow' }); // reads stay allowed
  });

  it('governs handoffs and delegations', () => {
    const handoff = request({ action: { kind: 'handoff', name: 'billing' }, context: { stage: 'handoff', effect: undefined, toolRisk: undefined } });
    expect(policies.authorize(handoff)).toEqual({ decision: 'allow', determining: ['handoffs'], errors: [] });

    const delegate = (name: string, depth: number, agent = 'triage') =>
      policies.authorize(request({ agent, action: { kind: 'delegate', name }, context: { stage: 'handoff', depth, effect: undefined, toolRisk: undefined } }));
    expect(delegate('billing', 2)).toEqual({ decision: 'allow', determining: ['delegation'], errors: [] });
    expect(delegate('billing', 3)).toEqual({ decision: 'deny', determining: ['delegation-depth'], errors: [] });
    expect(delegate('billing', 0, 'faq')).toEqual({ decision: 'deny', determining: ['support.cedar:14'], errors: [] });
    expect(delegate('shipping', 0, 'faq')).toMatchObject({ decision: 'allow' });
  });

  it('uses the preparsed policy set: authorize never parses', () => {
    const spies = cedarWasm as unknown as Record<string, ReturnType<typeof vi.fn>>;
    const parsing = ['policySetTextToParts', 'policyToJson', 'preparsePolicySet', 'checkParsePolicySet', 'isAuthorized'];
    const before = Object.fromEntries(parsing.map((name) => [name, spies[name]!.mock.calls.length]));
    const stateful = spies.statefulIsAuthorized!.mock.calls.length;
    // Amounts no other test asks about: every request is new, so none is answered from the kept answers.
    for (let i = 0; i < 1000; i++) {
      const amount = i * 100 + 37;
      expect(policies.authorize(refund(amount, ['finance'])).decision).toBe(amount > 50_000 ? 'deny' : 'allow');
    }
    expect(Object.fromEntries(parsing.map((name) => [name, spies[name]!.mock.calls.length]))).toEqual(before);
    expect(spies.statefulIsAuthorized!.mock.calls.length - stateful).toBe(1000);
  });
});

describe('Cedar policies: only what the rules read is sent', () => {
  // A rule that never matches but reads the context, the arguments and both entities whole makes a set send everything.
  // It also names a user, so the principal keeps its own id.
  const READS_ALL = '\n@id("reads-all") forbid (principal, action, resource) when { context == {} && context.args == {} && principal == resource && principal != Palisade::User::"nobody" };\n';
  const RULES = [
    `@id("label-only") forbid (principal, action == Palisade::Action::"handoff", resource) when { context.label.levelRank >= 2 };`,
    `@id("role") permit (principal in Palisade::Role::"support", action == Palisade::Action::"call_tool", resource);`,
    `@id("refund-amount") forbid (principal, action, resource == Palisade::Tool::"issue_refund") when { context has args && context.args has amountCents && context.args.amountCents > 100 };`,
    `@id("chain") forbid (principal, action == Palisade::Action::"delegate", resource) unless { context.chain.contains("billing") };`,
    `@id("agent-attr") forbid (principal, action, resource is Palisade::Tool) when { resource.agent == "intruder" };`,
  ];

  it('decides exactly as with the whole request, for any request', () => {
    const sets = RULES.map((_, i) => RULES.slice(0, i + 1).join('\n'));
    const pairs = sets.map((text, i) => [
      loadCedarPolicies([{ path: `pruned-${i}.cedar`, text }]),
      loadCedarPolicies([{ path: `full-${i}.cedar`, text: text + READS_ALL }]),
    ]);
    const req = fc.record({
      id: fc.constantFrom('alice', 'bob', 'principal'),
      roles: fc.subarray(['support', 'customer', 'finance']),
      action: fc.oneof(
        fc.record({ kind: fc.constant('tool' as const), name: fc.constantFrom('issue_refund', 'lookup_order') }),
        fc.record({ kind: fc.constantFrom('handoff' as const, 'delegate' as const), name: fc.constantFrom('billing', 'fraud_check') }),
      ),
      agent: fc.constantFrom('triage', 'billing', 'intruder'),
      level: fc.constantFrom('public', 'internal', 'confidential', 'restricted'),
      chain: fc.subarray(['triage', 'billing', 'fraud_check']),
      amount: fc.option(fc.integer({ min: 0, max: 500 })),
      extra: fc.dictionary(fc.constantFrom('note', 'amountCent', 'x', 'blob'), fc.oneof(fc.string(), fc.integer())),
    });
    fc.assert(
      fc.property(req, fc.nat({ max: pairs.length - 1 }), (r, which) => {
        const [pruned, full] = pairs[which]!;
        const q = request({
          principal: { id: r.id, roles: r.roles },
          action: r.action,
          agent: r.agent,
          context: { label: { level: r.level, categories: [], integrity: 'trusted' }, chain: r.chain, args: { ...r.extra, ...(r.amount === null ? {} : { amountCents: r.amount }) } },
        });
        expect(pruned!.authorize(q)).toEqual(full!.authorize(q));
      }),
      { numRuns: 300 },
    );
  });

  it('leaves out context attributes and entities no rule names', () => {
    const spy = vi.mocked(cedarWasm.statefulIsAuthorized);
    const policies = loadCedarPolicies([{ path: 'label.cedar', text: RULES[0]! }]);
    spy.mockClear();
    policies.authorize(request({ action: { kind: 'handoff', name: 'billing' }, context: { args: { note: 'x'.repeat(2048) } } }));
    const call = spy.mock.calls[0]![0];
    expect(Object.keys(call.context as object)).toEqual(['label']);
    expect(call.entities).toEqual([]);
  });
});

describe('Cedar policies: recent answers are kept', () => {
  const TEXT = [
    `@id("label") forbid (principal, action == Palisade::Action::"handoff", resource) when { context.label.levelRank >= 2 };`,
    `@id("role") permit (principal in Palisade::Role::"support", action, resource);`,
    `@id("amount") forbid (principal, action, resource == Palisade::Tool::"issue_refund") when { context has args && context.args has amountCents && context.args.amountCents > 100 };`,
  ].join('\n');
  const ask = (o: { roles?: string[]; level?: string; amount?: number; note?: string; kind?: 'tool' | 'handoff' }) =>
    request({
      principal: { roles: o.roles ?? ['support'] },
      action: o.kind === 'handoff' ? { kind: 'handoff', name: 'billing' } : { kind: 'tool', name: 'issue_refund' },
      context: { label: { level: o.level ?? 'public', categories: [], integrity: 'trusted' }, args: { ...(o.amount === undefined ? {} : { amountCents: o.amount }), ...(o.note ? { note: o.note } : {}) } },
    });

  it('a repeated request is answered without Cedar; any difference a rule reads is asked again', () => {
    const spy = vi.mocked(cedarWasm.statefulIsAuthorized);
    const policies = loadCedarPolicies([{ path: 'cache.cedar', text: TEXT }]);
    spy.mockClear();
    expect(policies.authorize(ask({ amount: 50 })).decision).toBe('allow');
    expect(policies.authorize(ask({ amount: 50 })).decision).toBe('allow');
    // A note no rule reads is left out of the request: the same request as far as Cedar can tell.
    expect(policies.authorize(ask({ amount: 50, note: 'x' })).decision).toBe('allow');
    expect(spy).toHaveBeenCalledTimes(1);
    expect(policies.authorize(ask({ amount: 500 }))).toMatchObject({ decision: 'deny', determining: ['amount'] });
    expect(policies.authorize(ask({ amount: 50, roles: ['customer'] })).decision).toBe('deny');
    expect(policies.authorize(ask({ kind: 'handoff', level: 'confidential' }))).toMatchObject({ decision: 'deny', determining: ['label'] });
    expect(policies.authorize(ask({ kind: 'handoff', level: 'public' })).decision).toBe('allow');
    expect(spy).toHaveBeenCalledTimes(5);
  });

  it('where no policy names a user, users with the same roles share answers; where one does, each is asked about', () => {
    const spy = vi.mocked(cedarWasm.statefulIsAuthorized);
    const anyone = loadCedarPolicies([{ path: 'roles.cedar', text: TEXT }]);
    spy.mockClear();
    const of = (id: string) => ({ ...ask({ amount: 500 }), principal: { id, roles: ['support'], attrs: {} } });
    expect(anyone.authorize(of('alice'))).toMatchObject({ decision: 'deny', determining: ['amount'] });
    expect(anyone.authorize(of('bob'))).toMatchObject({ decision: 'deny', determining: ['amount'] });
    expect(spy).toHaveBeenCalledTimes(1);
    expect(JSON.stringify(spy.mock.calls[0]![0])).not.toContain('alice');

    const named = loadCedarPolicies([{ path: 'named.cedar', text: `${TEXT}\n@id("alice-may") permit (principal == Palisade::User::"alice", action, resource);` }]);
    spy.mockClear();
    // No role permits it, and nothing forbids it: only the permit for alice can allow it.
    const other = { ...ask({ amount: 50 }), principal: { id: 'bob', roles: [], attrs: {} } };
    expect(named.authorize({ ...other, principal: { ...other.principal, id: 'alice' } })).toMatchObject({ decision: 'allow', determining: ['alice-may'] });
    expect(named.authorize(other).decision).toBe('deny');
    expect(spy).toHaveBeenCalledTimes(2);
  });

  it('hands out copies: changing an answer does not change the next one', () => {
    const policies = loadCedarPolicies([{ path: 'copies.cedar', text: TEXT }]);
    const first = policies.authorize(ask({ amount: 500 }));
    first.determining.push('forged');
    first.errors.push('forged');
    expect(policies.authorize(ask({ amount: 500 }))).toEqual({ decision: 'deny', determining: ['amount'], errors: [] });
  });

  it('answers a request it has seen as it answered it the first time, whatever came between', () => {
    const req = fc.record({
      roles: fc.subarray(['support', 'customer']),
      level: fc.constantFrom('public', 'internal', 'confidential', 'restricted'),
      amount: fc.option(fc.constantFrom(0, 100, 101, 500), { nil: undefined }),
      kind: fc.constantFrom('tool' as const, 'handoff' as const),
    });
    fc.assert(
      fc.property(fc.array(req, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { minLength: 1, maxLength: 40 }), (pool, picks) => {
        const cached = loadCedarPolicies([{ path: 'seq.cedar', text: TEXT }]);
        const firstTime = new Map<number, unknown>();
        for (const pick of picks) {
          const i = pick % pool.length;
          const answer = cached.authorize(ask(pool[i]!));
          if (!firstTime.has(i)) firstTime.set(i, loadCedarPolicies([{ path: `fresh-${i}.cedar`, text: TEXT }]).authorize(ask(pool[i]!)));
          expect(answer).toEqual(firstTime.get(i));
        }
      }),
      { numRuns: 40 },
    );
  });
});

describe('Cedar policies: ids and sets', () => {
  it('names unannotated policies <file>:<index> and keeps several sets apart', () => {
    const a = loadCedarPolicies([
      { path: 'a.cedar', text: 'permit(principal, action, resource);\n\nforbid(principal, action == Palisade::Action::"handoff", resource);' },
      { path: 'b.cedar', text: '@id("b-rule") forbid(principal, action == Palisade::Action::"delegate", resource);\npermit(principal, action, resource) when { false };' },
    ]);
    expect(a.policyIds).toEqual(['a.cedar:0', 'a.cedar:1', 'b-rule', 'b.cedar:1']);
    expect(a.source('a.cedar:1')).toMatchObject({ file: 'a.cedar', line: 3, column: 1 });
    const b = loadCedarPolicies([{ path: 'c.cedar', text: 'forbid(principal, action, resource);' }]);
    const empty = loadCedarPolicies([]);

    const handoff = request({ action: { kind: 'handoff', name: 'x' } });
    expect(a.authorize(request())).toEqual({ decision: 'allow', determining: ['a.cedar:0'], errors: [] });
    expect(a.authorize(handoff)).toEqual({ decision: 'deny', determining: ['a.cedar:1'], errors: [] });
    expect(a.authorize(request({ action: { kind: 'delegate', name: 'x' } })).determining).toEqual(['b-rule']);
    expect(b.authorize(request())).toEqual({ decision: 'deny', determining: ['c.cedar:0'], errors: [] });
    expect(empty.size).toBe(0);
    expect(empty.authorize(request())).toEqual({ decision: 'deny', determining: [], errors: [] });
    // File order, not Cedar's internal order; commented-out and repeated text handled.
    const repeated = loadCedarPolicies([
      { path: 'r.cedar', text: '// permit(principal, action, resource);\npermit(principal, action, resource);\npermit(principal, action, resource);' },
    ]);
    expect(repeated.policyIds).toEqual(['r.cedar:0', 'r.cedar:1']);
    expect([repeated.source('r.cedar:0')?.line, repeated.source('r.cedar:1')?.line]).toEqual([2, 3]);
    const many = Array.from({ length: 12 }, (_, i) => `forbid(principal, action, resource) when { context.depth == ${i} };`).join('\n');
    const twelve = loadCedarPolicies([{ path: 'm.cedar', text: many }]);
    expect(twelve.authorize(request({ context: { depth: 11 } })).determining).toEqual(['m.cedar:11']);
    expect(twelve.source('m.cedar:11')?.line).toBe(12);
    // Loading the same text again reuses the cached set; the first object still works.
    loadCedarPolicies([{ path: 'c.cedar', text: 'forbid(principal, action, resource);' }]);
    expect(b.authorize(request()).determining).toEqual(['c.cedar:0']);
  });
});

describe('Cedar policies: @escalate', () => {
  const text = [
    'permit(principal, action, resource);',
    '@id("needs-approval") @escalate',
    'forbid(principal, action == Palisade::Action::"call_tool", resource == Palisade::Tool::"issue_refund") when { context.args has amountCents && context.args.amountCents > 15000 };',
    '@id("hard-cap")',
    'forbid(principal, action == Palisade::Action::"call_tool", resource == Palisade::Tool::"issue_refund") when { context.args has amountCents && context.args.amountCents > 50000 };',
  ].join('\n');

  it('marks forbids whose deny a human may lift; a deny is escalated only when every deciding forbid is marked', () => {
    const policies = loadCedarPolicies([{ path: 'e.cedar', text }]);
    expect(policies.source('needs-approval')).toMatchObject({ effect: 'forbid', escalate: true, line: 2 });
    expect(policies.source('hard-cap')?.escalate).toBe(false);
    const mid = policies.authorize(refund(20000, []));
    expect(mid).toMatchObject({ decision: 'deny', determining: ['needs-approval'] });
    expect(policies.escalates(mid.determining)).toBe(true);
    const high = policies.authorize(refund(90000, []));
    expect(high.determining).toEqual(['needs-approval', 'hard-cap']);
    expect(policies.escalates(high.determining)).toBe(false);
    expect(policies.escalates([])).toBe(false);
  });

  it('sees whether third-party content has tried to instruct the agent (context.instructed)', () => {
    const policies = loadCedarPolicies([{ path: 'i.cedar', text: 'permit(principal, action, resource);\n@id("calm") forbid(principal, action, resource) when { context.instructed };' }]);
    expect(policies.authorize(request()).decision).toBe('allow');
    expect(policies.authorize(request({ context: { instructed: true } }))).toMatchObject({ decision: 'deny', determining: ['calm'] });
    const event = (flags?: string[]) =>
      ({ stage: 'tool_call', runId: 'r', principal: { id: 'a', roles: [], attrs: {} }, agent: 'x', chain: ['x'], depth: 0, hops: 0, label: { level: 'public', categories: [], integrity: 'untrusted' }, tool: { name: 't', effect: 'write', risk: 'low', requires: [], returns: { level: 'public', categories: [], integrity: 'trusted' } }, history: [{ source: 'tool', content: 'x', label: { level: 'public', categories: [], integrity: 'untrusted' }, ...(flags ? { flags } : {}) }] }) as GuardEvent;
    expect(cedarRequestFor(event())?.context.instructed).toBe(false);
    expect(cedarRequestFor(event(['instructions']))?.context.instructed).toBe(true);
  });

  it('refuses @escalate on a permit, at its line', () => {
    const error = loadError('permit(principal, action, resource);\n@escalate permit(principal, action, resource);');
    expect(error.message).toMatch(/^rules\.cedar:2:1: @escalate applies to forbid policies only/);
  });
});

describe('Cedar policies: malformed files', () => {
  it('reports a wrong operator at its line and column', () => {
    const error = loadError(['// refunds', 'permit(principal, action, resource)', '  when { context.depth = 3 };', ''].join('\n'));
    expect(error.file).toBe('rules.cedar');
    expect(error.line).toBe(3);
    expect(error.column).toBe(10);
    expect(error.detail).toMatch(/'=' is not a valid operator/);
    expect(error.message).toMatch(/^rules\.cedar:3:10: '=' is not a valid operator/);
  });

  it('reports a misspelt scope variable further down, after non-ASCII text', () => {
    const text = [
      '// Règles « remboursement » — ünïcödé 🙂 comments count as one column per character',
      '@id("ok")',
      'permit(principal, action, resource);',
      '',
      '@id("café") forbid(principal, acton, resource);',
    ].join('\n');
    const error = loadError(text, 'policies/billing.cedar');
    expect(error).toMatchObject({ file: 'policies/billing.cedar', line: 5, column: 31 });
    expect(error.detail).toMatch(/invalid variable in the policy scope: acton/);
  });

  it('reports an unexpected token and a missing semicolon', () => {
    const error = loadError('permit(principal, action, resource)\nwhen { context.depth > 3 }\n\nforbid(principal, action, resource) when { context.hops > 1 }\n');
    expect(error.line).toBeGreaterThanOrEqual(4);
    expect(error.file).toBe('rules.cedar');
    expect(error.message.split('\n')[0]).toMatch(/^rules\.cedar:\d+:\d+: /);
  });

  it('lists every problem, the first one first', () => {
    const text = 'permit(principal, action, resource)\n  when { context.depth = 3 };\nforbid(principal, acton, resource);\n';
    const error = loadError(text);
    expect(error.errors.length).toBeGreaterThanOrEqual(2);
    expect(error.errors.map((e) => e.line)).toEqual([2, 3]);
    expect(error.errors[1]).toMatchObject({ file: 'rules.cedar', line: 3, column: 19 });
    expect(error.message.split('\n')).toHaveLength(error.errors.length);
  });

  it('names the file at fault among several', () => {
    try {
      loadCedarPolicies([
        { path: 'good.cedar', text: 'permit(principal, action, resource);' },
        { path: 'bad.cedar', text: '\n\n   permit(principal, action, resource) when { context.depth >>> 1 };' },
      ]);
      expect.unreachable();
    } catch (error) {
      expect(error).toMatchObject({ name: 'CedarPolicyError', file: 'bad.cedar', line: 3 });
    }
  });

  it('rejects names outside the entity model, which would never match', () => {
    const action = loadError('permit(principal, action, resource);\nforbid(principal, action == Palisade::Action::"call-tool", resource);');
    expect(action).toMatchObject({ line: 2, column: 47 });
    expect(action.detail).toMatch(/unknown action Palisade::Action::"call-tool"/);

    const type = loadError('forbid(principal, action, resource)\n  when { principal in Role::"finance" };');
    expect(type).toMatchObject({ line: 2, column: 23 });
    expect(type.detail).toMatch(/unknown entity type Role\b/);

    const attr = loadError('forbid(principal, action, resource)\n  when { context.labels.categories.contains("pii") };');
    expect(attr).toMatchObject({ line: 2, column: 10 });
    expect(attr.detail).toMatch(/context has no attribute 'labels'/);
  });

  it('rejects duplicate ids, empty @id and templates', () => {
    expect(() =>
      loadCedarPolicies([
        { path: 'a.cedar', text: '@id("x") permit(principal, action, resource);' },
        { path: 'b.cedar', text: '\n@id("x") forbid(principal, action, resource);' },
      ]),
    ).toThrow(/^b\.cedar:2:5: duplicate policy id 'x' \(also at a\.cedar:1:1\)/);
    expect(loadError('@id permit(principal, action, resource);').detail).toMatch(/@id needs a value/);
    expect(loadError('permit(principal, action, resource);\npermit(principal == ?principal, action, resource);')).toMatchObject({ line: 2, column: 1 });
  });
});

describe('Cedar policies: evaluation errors and values', () => {
  const rules = [
    'permit(principal, action, resource);',
    '@id("needs-has")',
    'forbid(principal, action, resource)',
    '  when { context.args.missing == 1 };',
    '@id("tags") forbid(principal, action, resource) when { context.args has tags && context.args.tags.contains("blocked") };',
    '@id("nested") forbid(principal, action, resource) when { context.args has customer && context.args.customer.country == "FR" };',
    '@id("note") forbid(principal, action, resource) when { context.args has note };',
    '@id("amount") forbid(principal, action, resource) when { context.args has amount && context.args.amount > 100 };',
    '@id("injected") forbid(principal, action, resource) when { context.args has who && context.args.who in Palisade::Role::"blocked" };',
    '@id("vip") forbid(principal, action, resource) when { principal has vip && principal.vip && principal.level > 3 };',
    '@id("roles") forbid(principal, action, resource) when { principal.roles.contains("admin") };',
  ].join('\n');
  let policies: CedarPolicies;
  beforeAll(() => {
    policies = loadCedarPolicies([{ path: 'eval.cedar', text: rules }]);
  });
  const args = (a: Record<string, unknown>) => request({ context: { args: a } });

  it('reports a missing attribute with the policy, its position and a `has` hint', () => {
    const result = policies.authorize(args({ orderId: 'o-1' }));
    // Cedar skips the erroring forbid, so its own decision is allow: the caller must fail closed.
    expect(result.decision).toBe('allow');
    expect(result.errors).toHaveLength(1);
    expect(result.errors[0]).toMatch(/^policy needs-has \(eval\.cedar:4:10\): record does not have the attribute `missing`; test optional attributes with `has`/);
    expect(policies.authorize(args({ missing: 1 }))).toEqual({ decision: 'deny', determining: ['needs-has'], errors: [] });
  });

  it('converts arrays to sets, objects to records, and drops null', () => {
    expect(policies.authorize(args({ missing: 0, tags: ['vip', 'blocked', 'vip'] })).determining).toEqual(['tags']);
    expect(policies.authorize(args({ missing: 0, customer: { country: 'FR', address: { city: 'Lyon' } } })).determining).toEqual(['nested']);
    expect(policies.authorize(args({ missing: 0, note: null, tags: [null, 'ok'] }))).toEqual({ decision: 'allow', determining: ['eval.cedar:0'], errors: [] });
    expect(policies.authorize(args({ missing: 0, when: new Date(0) })).errors).toEqual([]);
  });

  it('reports values Cedar cannot hold instead of silently dropping them', () => {
    const huge = policies.authorize(args({ missing: 0, amount: 1e300 }));
    expect(huge.errors).toEqual(["context.args.amount: 1e+300 is outside Cedar's Long range; left out"]);
    const injected = policies.authorize(args({ missing: 0, who: { __entity: { type: 'Palisade::Role', id: 'blocked' } } }));
    expect(injected.determining).not.toContain('injected');
    expect(injected.errors[0]).toBe("context.args.who.__entity: the key '__entity' is reserved by Cedar's JSON format and was left out");
    expect(policies.authorize(args({ missing: 0, f: () => 1 })).errors).toEqual(['context.args.f: a function has no Cedar value; left out']);
  });

  it('does not send arguments no rule names', () => {
    expect(policies.authorize(args({ missing: 0, unread: 1e300, other: { __entity: { type: 'Palisade::Role', id: 'blocked' } } }))).toEqual({
      decision: 'allow',
      determining: ['eval.cedar:0'],
      errors: [],
    });
  });

  it('gives policies the principal\'s attributes, but roles and tenant only from their fields', () => {
    const who = (attrs: Record<string, string | number | boolean>, roles = ['support']) =>
      policies.authorize(request({ principal: { attrs, roles }, context: { args: { missing: 0 } } }));
    expect(who({ vip: true, level: 4 }).determining).toEqual(['vip']);
    expect(who({ vip: true, level: 3.5 }).errors).toHaveLength(1); // a decimal is not a Long: `>` errors
    expect(who({ vip: false, level: 9 }).decision).toBe('allow');
    expect(who({ roles: 'admin' }).decision).toBe('allow');
    expect(who({}, ['admin']).determining).toEqual(['roles']);
  });
});

describe('cedarRequestFor', () => {
  const base: GuardEvent = {
    stage: 'tool_call',
    runId: 'r1',
    principal: { id: 'alice', roles: ['finance'], attrs: {} },
    agent: 'billing',
    chain: ['triage', 'billing'],
    depth: 1,
    hops: 2,
    label: { level: 'internal', categories: [], integrity: 'trusted' },
  };

  it('maps tool calls and handoffs, and nothing else', () => {
    const policies = loadCedarPolicies([{ path: 'support.cedar', text: SUPPORT }]);
    const tool = { name: 'issue_refund', effect: 'write' as const, risk: 'high' as const, requires: [], returns: base.label };
    const call = cedarRequestFor({ ...base, tool, args: { amountCents: 70_000 } }, 0.2);
    expect(call).toMatchObject({ action: { kind: 'tool', name: 'issue_refund' }, context: { effect: 'write', toolRisk: 'high', risk: 0.2 } });
    expect(policies.authorize(call!)).toEqual({ decision: 'deny', determining: ['refund-cap'], errors: [] });

    const delegate = cedarRequestFor({ ...base, stage: 'handoff', target: { agent: 'shipping', mode: 'delegate' } });
    expect(delegate?.action).toEqual({ kind: 'delegate', name: 'shipping' });
    expect(delegate?.context.effect).toBeUndefined();
    expect(policies.authorize(delegate!)).toMatchObject({ decision: 'allow', determining: ['delegation'] });

    expect(cedarRequestFor({ ...base, stage: 'output' })).toBeUndefined();
    expect(cedarRequestFor({ ...base, stage: 'tool_call' })).toBeUndefined();
  });
});
