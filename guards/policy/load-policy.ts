import type { Agent } from '../../agents/agent.js';
import { contentGuard, contentRedactor } from '../builtin/content.js';
import { loadCedarPolicies, type CedarPolicies } from './cedar-policies.js';
import { CedarPolicyError } from './cedar-problems.js';
import { loadGitleaksRules } from '../content/gitleaks-rules.js';
import { PolicyError, readPolicyFile, type PolicySource } from './policy-file.js';
import { characterProblems, knownNames, policyNameProblems, yamlNameUses, type NameProblem, type NameUse } from './policy-names.js';
import type { Policy } from './policy.js';
import type { CompiledPolicy } from './policy-pipeline.js';

export interface LoadedPolicy extends CompiledPolicy {
  cedar?: CedarPolicies;
  source?: PolicySource;
}

/** Problems as one PolicyError: the first, with the others listed under it. */
function policyError(problems: readonly NameProblem[]): PolicyError {
  const files = [...new Set(problems.map((p) => p.file))];
  const [first, ...rest] = [...problems].sort((a, b) => files.indexOf(a.file) - files.indexOf(b.file) || a.line - b.line || a.column - b.column);
  const format = (p: NameProblem) => `${p.file}${p.line > 0 ? `:${p.line}:${p.column}` : ''}: ${p.detail}`;
  return new PolicyError(first!.file, first!.line, first!.column, first!.detail, rest.map(format));
}

/** Compiles a policy and the files it names into what the pipeline runs: Cedar parsed once, secret rules compiled once. */
export function compilePolicy(policy: Policy, files: Pick<PolicySource, 'cedarFiles' | 'secretRules' | 'file' | 'names'> = { file: 'policy', cedarFiles: [] }): LoadedPolicy {
  // A policy built in code, not read from a file, has its names checked here.
  const yamlNames = files.names ?? yamlNameUses(policy, files.file);
  const badNames = characterProblems(yamlNames);
  if (badNames.length > 0) throw policyError(badNames);
  let cedar;
  try {
    cedar = files.cedarFiles.length > 0 ? loadCedarPolicies(files.cedarFiles) : undefined;
  } catch (error) {
    if (error instanceof CedarPolicyError) throw policyError(error.errors);
    throw error;
  }
  const secretRules = files.secretRules ? loadGitleaksRules(files.secretRules.text, files.secretRules.path).rules : undefined;
  const scanning = { secretRules };
  const names = [...yamlNames, ...(cedar?.names ?? [])];
  return { policy, cedar, names, content: [contentGuard(policy, scanning)], redactor: contentRedactor(policy, scanning) };
}

/** Reads, validates and compiles a policy file; every mistake is a PolicyError naming file, line and column. */
export async function loadPolicy(path: string): Promise<LoadedPolicy> {
  const source = await readPolicyFile(path);
  return { ...compilePolicy(source.policy, source), source };
}

/** The names a compiled policy writes: those it was compiled with, else found in it now (without positions). */
export function policyNames(compiled: CompiledPolicy): readonly NameUse[] {
  if (compiled.names) return compiled.names;
  const cedar = compiled.cedar && 'names' in compiled.cedar ? (compiled.cedar as { names: readonly NameUse[] }).names : [];
  return [...yamlNameUses(compiled.policy, 'policy'), ...cedar];
}

/** Agents and tools served by other processes under the same policy, which the policy may also name. */
export interface NamesElsewhere {
  agents?: readonly string[];
  tools?: readonly string[];
}

/**
 * Every name a policy writes is plain and, when agents are given, every agent and tool name names
 * one of them or one served elsewhere; else a PolicyError listing each name, where it is written,
 * with the nearest name (`clearance for "tech-support" names no agent; did you mean "tech_support"?`).
 * Without agents (a process that only starts runs) only the characters are checked.
 */
export function checkPolicyNames(compiled: CompiledPolicy, agents: readonly Agent[], elsewhere?: NamesElsewhere): void {
  const problems = policyNameProblems(policyNames(compiled), agents.length > 0 ? knownNames(agents, elsewhere) : undefined);
  if (problems.length > 0) throw policyError(problems);
}
