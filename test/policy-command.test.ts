import { spawnSync } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = (...args: string[]) => spawnSync(`${root}node_modules/.bin/tsx`, ['runtime/cli/main.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });

describe('palisade policy', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'palisade-policy-cli-'));
  });

  it('check: a valid policy', () => {
    const r = cli('policy', 'check', 'examples/support/policy.yaml');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/examples\/support\/policy.yaml: valid \(enforce mode, 3 roles, 4 Cedar policies/);
  });

  it('check --agents: every agent and tool the policy names is one of the module’s; without --agents it says they were not checked', () => {
    const r = cli('policy', 'check', 'examples/support/policy.yaml', '--agents', 'examples/support/system.ts');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/valid \(.*, names checked against 4 agents and 6 tools\)/);
    expect(r.stderr).toBe('');
    const unchecked = cli('policy', 'check', 'examples/support/policy.yaml');
    expect(unchecked.stderr).toMatch(/^examples\/support\/policy\.yaml: warning: the 4 agent and tool names it writes were not checked against the agents; pass --agents <module>/);
  });

  it('check: a malformed policy names file, line and what is wrong; so does a malformed Cedar file', async () => {
    await writeFile(join(dir, 'bad.yaml'), 'version: 1\nlimits:\n  maxDepth: lots\n');
    const r = cli('policy', 'check', join(dir, 'bad.yaml'));
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/bad\.yaml:3:13: limits\.maxDepth: Invalid input: expected number/);
    await writeFile(join(dir, 'rules.cedar'), 'permit(principal, action, resource);\n\nforbid(principal action, resource);\n');
    await writeFile(join(dir, 'cedar.yaml'), 'version: 1\ncedar: [rules.cedar]\n');
    const c = cli('policy', 'check', join(dir, 'cedar.yaml'));
    expect(c.status).toBe(2);
    expect(c.stderr).toMatch(/rules\.cedar:3:\d+: /);
  });

  it('explain: each guard’s decision and why; exit 1 when the step would not pass', async () => {
    const event = {
      stage: 'tool_call',
      principal: { id: 'grace', roles: ['customer'] },
      agent: 'billing',
      chain: ['triage', 'billing'],
      tool: { name: 'issue_refund', effect: 'write', risk: 'high', requires: ['refunds:issue'] },
      args: { orderId: 'ORD-5003', amountCents: 129900, reason: 'customer request' },
    };
    await writeFile(join(dir, 'event.json'), JSON.stringify(event));
    const r = cli('policy', 'explain', 'examples/support/policy.yaml', join(dir, 'event.json'), '--agents', 'examples/support/system.ts');
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^limits\s+allow/m);
    expect(r.stdout).toMatch(/^permissions\s+block\s+risk 1\.00\s+forbidden by refund-cap/m);
    expect(r.stdout).toMatch(/^decision: block/m);
    await writeFile(join(dir, 'ok.json'), JSON.stringify({ ...event, args: { ...event.args, amountCents: 1000 } }));
    const ok = cli('policy', 'explain', 'examples/support/policy.yaml', join(dir, 'ok.json'), '--json');
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ verdict: 'allow', results: expect.arrayContaining([expect.objectContaining({ guard: 'risk' })]) });
    await writeFile(join(dir, 'bad-event.json'), JSON.stringify({ stage: 'nowhere' }));
    const bad = cli('policy', 'explain', 'examples/support/policy.yaml', join(dir, 'bad-event.json'));
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/bad-event\.json: stage: Invalid option/);
  });

  it('schema: prints the JSON Schema', () => {
    const r = cli('policy', 'schema');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ type: 'object', required: ['version'] });
  });
});
