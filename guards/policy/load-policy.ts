import { contentGuard, contentRedactor } from '../builtin/content.js';
import { loadCedarPolicies, type CedarPolicies } from './cedar-policies.js';
import { CedarPolicyError } from './cedar-problems.js';
import { loadGitleaksRules } from '../content/gitleaks-rules.js';
import { PolicyError, readPolicyFile, type PolicySource } from './policy-file.js';
import type { Policy } from './policy.js';
import type { CompiledPolicy } from './policy-pipeline.js';

export interface LoadedPolicy extends CompiledPolicy {
  cedar?: CedarPolicies;
  source?: PolicySource;
}

/** Compiles a policy and the files it names into what the pipeline runs: Cedar parsed once, secret rules compiled once. */
export function compilePolicy(policy: Policy, files: Pick<PolicySource, 'cedarFiles' | 'secretRules' | 'file'> = { file: 'policy', cedarFiles: [] }): LoadedPolicy {
  let cedar;
  try {
    cedar = files.cedarFiles.length > 0 ? loadCedarPolicies(files.cedarFiles) : undefined;
  } catch (error) {
    if (error instanceof CedarPolicyError) throw new PolicyError(error.file, error.line, error.column, error.detail);
    throw error;
  }
  const secretRules = files.secretRules ? loadGitleaksRules(files.secretRules.text, files.secretRules.path).rules : undefined;
  const scanning = { secretRules };
  return { policy, cedar, content: [contentGuard(policy, scanning)], redactor: contentRedactor(policy, scanning) };
}

/** Reads, validates and compiles a policy file; every mistake is a PolicyError naming file, line and column. */
export async function loadPolicy(path: string): Promise<LoadedPolicy> {
  const source = await readPolicyFile(path);
  return { ...compilePolicy(source.policy, source), source };
}
