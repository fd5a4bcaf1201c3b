import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parsePolicy, PolicyError, readPolicyFile } from '../guards/policy/policy-file.js';
import { policyJsonSchema } from '../guards/policy/policy.js';

const attempt = (text: string): PolicyError => {
  try {
    parsePolicy(text, 'team/policy.yaml');
  } catch (error) {
    if (error instanceof PolicyError) return error;
    throw error;
  }
  throw new Error('expected the policy to be refused');
};

describe('policy files', () => {
  it('fills every default from a minimal file', () => {
    const p = parsePolicy('version: 1\n');
    expect(p).toMatchObject({ mode: 'enforce', limits: { maxDepth: 3, maxFanOut: 4, maxHops: 25, allowCycles: false }, clearance: { onViolation: 'block' } });
    expect(p.risk.thresholds).toEqual({ validate: 0.35, escalate: 0.6, block: 0.9 });
    expect(p.approvals).toEqual({ timeoutMs: 3600_000, onDeny: 'continue', selfApproval: false });
    expect(p.rollback).toEqual({ onFailure: false, onCancel: false });
  });

  it.each([
    ['a value out of range', 'version: 1\nlimits:\n  maxDepth: -1\n', 3, /limits\.maxDepth: Too small/],
    ['a misspelt option value', 'version: 1\nmode: enforse\n', 2, /mode: Invalid option: expected one of "enforce"\|"monitor"/],
    ['an unknown key', 'version: 1\nlimits:\n  maxDepht: 3\n', 3, /Unrecognized key: "maxDepht"/],
    ['broken YAML', 'version: 1\nroles:\n  - a\n  b: [\n', 4, /YAML: /],
    ['a wrong version', 'version: 2\n', 1, /version: Invalid input: expected 1/],
    ['an unknown denial mode', 'version: 1\napprovals:\n  timeoutMs: 60000\n  onDeny: ignore\n', 4, /approvals\.onDeny: Invalid option: expected one of "continue"\|"fail"/],
    ['an approval timeout over a day', 'version: 1\napprovals:\n  timeoutMs: 90000000\n', 3, /approvals\.timeoutMs: Too big/],
    ['a rollback switch that is not a boolean', 'version: 1\nrollback:\n  onFailure: sometimes\n', 3, /rollback\.onFailure: Invalid input: expected boolean/],
    ['a bad permission', 'version: 1\nroles:\n  finance:\n    - "refunds issue"\n', 4, /roles\.finance\.0: must look like 'area:action'/],
    ['a bad label level', 'version: 1\nclearance:\n  reply:\n    level: secret\n', 4, /clearance\.reply\.level: Invalid option/],
    ['a duplicate key', 'version: 1\nmode: enforce\nmode: monitor\n', 3, /YAML: Map keys must be unique/],
    ['a wrong type', 'version: 1\nlimits: 7\n', 2, /limits: Invalid input: expected object/],
  ])('reports %s with file, line and what is wrong', (_what, text, line, message) => {
    const error = attempt(text);
    expect(error.file).toBe('team/policy.yaml');
    expect(error.line).toBe(line);
    expect(error.message).toMatch(new RegExp(`^team/policy\\.yaml:${line}:\\d+: `));
    expect(error.message).toMatch(message);
  });

  it('reports every problem, first one first', () => {
    const error = attempt('version: 1\nmode: nope\nlimits:\n  maxHops: 0\n');
    expect(error.line).toBe(2);
    expect(error.others).toEqual([expect.stringMatching(/^team\/policy\.yaml:4:\d+: limits\.maxHops: Too small/)]);
  });

  it('reads the files a policy names, relative to it, and says which one is missing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'palisade-policy-'));
    await writeFile(join(dir, 'rules.cedar'), 'permit(principal, action, resource);');
    await writeFile(join(dir, 'policy.yaml'), 'version: 1\ncedar: [rules.cedar]\n');
    const source = await readPolicyFile(join(dir, 'policy.yaml'));
    expect(source.cedarFiles.map((f) => f.text)).toEqual(['permit(principal, action, resource);']);
    await writeFile(join(dir, 'broken.yaml'), 'version: 1\ncedar: [missing.cedar]\n');
    await expect(readPolicyFile(join(dir, 'broken.yaml'))).rejects.toThrow(/cedar file 'missing.cedar' cannot be read/);
  });

  it('exports a JSON Schema for editors', () => {
    const schema = policyJsonSchema() as { properties: Record<string, unknown>; required: string[] };
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(['version', 'mode', 'roles', 'limits', 'clearance', 'content', 'risk', 'cedar']));
    expect(schema.required).toEqual(['version']);
  });
});
