/**
 * Conditional authorization rules in Cedar (https://www.cedarpolicy.com), evaluated with
 * `@cedar-policy/cedar-wasm` (its Node.js build). The security team writes `.cedar` files; the
 * permissions guard asks {@link CedarPolicies.authorize} before every tool call, handoff and
 * delegation.
 *
 * The entity model policies are written against, and how request values are converted, are
 * described in `cedar-request.ts`.
 *
 * ## Semantics
 *
 * Cedar's own: a matching `forbid` overrides any `permit`; no matching `permit` means `deny`.
 * A policy whose condition fails to evaluate (a missing attribute, a type mismatch) is skipped by
 * Cedar, which may change the decision either way; such errors are returned in `errors` and the
 * caller must treat a non-empty `errors` as a block. Guard optional attributes with `has`:
 * `context.args has amountCents && context.args.amountCents > 50000`.
 *
 * Policy ids are the `@id("...")` annotation when present, otherwise `<file>:<index>` with the
 * 0-based position of the policy in its file. Ids must be unique across all files.
 *
 * Policies are parsed once, at load, into a set cached inside the Cedar wasm module
 * (`preparsePolicySet`); each `authorize` call only converts the request. The cache is keyed by
 * a hash of the policies, so reloading the same policies reuses the entry. The wasm module has no
 * way to drop an entry: every distinct policy set loaded stays in memory for the life of the
 * process (or worker thread).
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import {
  policySetTextToParts,
  policyToJson,
  preparsePolicySet,
  statefulIsAuthorized,
  type AuthorizationAnswer,
  type CedarValueJson,
  type DetailedError,
  type EntityJson,
} from '@cedar-policy/cedar-wasm/nodejs';
import { RISKS } from '../../agents/tool.js';
import { LEVELS } from '../../agents/label.js';
import { CedarPolicyError, describe, flatten, inFileOrder, lineColumn, lint, problemAt, type CedarPolicyProblem } from './cedar-problems.js';
import { argumentsRead, contextKeysRead, readsEntity } from './cedar-reads.js';
import { cedarNames, characterProblems, type NameUse } from './policy-names.js';
import { ACTION_IDS, T, toRecord, type CedarRequest } from './cedar-request.js';

export interface CedarDecision {
  decision: 'allow' | 'deny';
  /** Ids of the policies that decided: the matching forbids for a deny, the matching permits for an allow. */
  determining: string[];
  /** Evaluation and request-conversion errors. Non-empty means the caller must fail closed. */
  errors: string[];
}

/** Where a policy came from. */
export interface CedarPolicySource {
  id: string;
  file: string;
  line: number;
  column: number;
  effect: 'permit' | 'forbid';
  /** A `forbid` marked `@escalate`: what it forbids may still go ahead with a human's approval. */
  escalate: boolean;
}

interface LoadedPolicy extends CedarPolicySource {
  text: string;
  /** Whether the policy names a user entity: only then can the principal's id change a decision. */
  namesUser: boolean;
  fileText: string;
  /** Byte offset of the policy's text in its file (Cedar's spans are byte offsets). */
  byteOffset: number;
  /** The tool, agent, role and user names it writes, where. */
  names: NameUse[];
}

/** Answers kept per policy set, and the largest request (serialized) worth keeping one for. */
const ANSWERS_CACHED = 2000;
const MAX_CACHED_REQUEST = 4096;
/** The id every principal is sent under when no policy names a user. */
const ANY_PRINCIPAL = 'principal';

type Answered = Readonly<{ decision: CedarDecision['decision']; determining: readonly string[]; errors: readonly string[] }>;

export class CedarPolicies {
  readonly size: number;
  readonly policyIds: readonly string[];
  /** Every tool, agent, role and user name the policies write, with its position: checked against the agents where they are known. */
  readonly names: readonly NameUse[];
  readonly #setId: string;
  readonly #policies: ReadonlyMap<string, LoadedPolicy>;
  readonly #order: ReadonlyMap<string, number>;
  /** The context attributes the policies can read; undefined when one reads the context record whole. */
  readonly #contextKeys: ReadonlySet<string> | undefined;
  /** Whether the policies can read an argument of this name; undefined when one reads the arguments whole. */
  readonly #readsArg: ((name: string) => boolean) | undefined;
  /** Whether any policy reads the principal's or the resource's entity data (attributes, parents). */
  readonly #reads: { principal: boolean; resource: boolean };
  /** Whether the principal is sent under its own id; otherwise as {@link ANY_PRINCIPAL}. */
  readonly #namesUsers: boolean;
  /**
   * Recent answers by the exact request Cedar was sent: a decision depends on nothing else (the
   * policies never change), and the same user asking the same thing in the same context is common.
   */
  readonly #answers = new LRUCache<string, Answered>({ max: ANSWERS_CACHED });

  /** @internal Use {@link loadCedarPolicies}. */
  constructor(setId: string, policies: readonly LoadedPolicy[]) {
    this.#setId = setId;
    const texts = policies.map((p) => p.text);
    this.#contextKeys = contextKeysRead(texts);
    this.#readsArg = argumentsRead(texts);
    this.#reads = { principal: policies.some((p) => readsEntity(p.text, 'principal')), resource: policies.some((p) => readsEntity(p.text, 'resource')) };
    this.#namesUsers = policies.some((p) => p.namesUser);
    this.#policies = new Map(policies.map((p) => [p.id, p]));
    this.#order = new Map(policies.map((p, i) => [p.id, i]));
    this.policyIds = Object.freeze(policies.map((p) => p.id));
    this.names = Object.freeze(policies.flatMap((p) => p.names));
    this.size = policies.length;
  }

  /** The file, position and effect of a policy, to cite it in a decision. */
  source(id: string): CedarPolicySource | undefined {
    const p = this.#policies.get(id);
    return p && { id: p.id, file: p.file, line: p.line, column: p.column, effect: p.effect, escalate: p.escalate };
  }

  /** Whether every one of these forbids is marked `@escalate` (a human may approve what they forbid). */
  escalates(ids: readonly string[]): boolean {
    return ids.length > 0 && ids.every((id) => this.#policies.get(id)?.escalate === true);
  }

  authorize(request: CedarRequest): CedarDecision {
    const problems: string[] = [];
    const { principal, action, context } = request;
    const roles = [...new Set(principal.roles)];
    const principalAttrs = toRecord(principal.attrs, 'principal', problems, 0);
    principalAttrs.roles = roles;
    if (principal.tenant !== undefined) principalAttrs.tenant = principal.tenant;
    else delete principalAttrs.tenant;

    const principalId = this.#namesUsers ? principal.id : ANY_PRINCIPAL;
    const isTool = action.kind === 'tool';
    const resource = { type: isTool ? T.tool : T.agent, id: action.name };
    const entities: EntityJson[] = [
      ...(this.#reads.principal ? [{ uid: { type: T.user, id: principalId }, attrs: principalAttrs, parents: roles.map((id) => ({ type: T.role, id })) }] : []),
      ...(this.#reads.resource ? [{ uid: resource, attrs: isTool ? { agent: request.agent } : {}, parents: [] }] : []),
    ];

    const levelRank = (LEVELS as readonly string[]).indexOf(context.label.level);
    if (levelRank < 0) problems.push(`context.label.level: unknown level '${context.label.level}' (ranked as restricted)`);
    const risk = Number.isFinite(context.risk) ? Math.min(1, Math.max(0, context.risk)) : 1;
    if (!Number.isFinite(context.risk)) problems.push(`context.risk: ${context.risk} is not a number (ranked as 100)`);
    const cedarContext: Record<string, CedarValueJson> = {
      agent: request.agent,
      args: context.args === undefined ? {} : toRecord(this.#readArgs(context.args), 'context.args', problems, 0),
      label: {
        level: context.label.level,
        levelRank: levelRank < 0 ? LEVELS.length - 1 : levelRank,
        categories: [...new Set(context.label.categories)],
        integrity: context.label.integrity,
      },
      chain: [...new Set(context.chain)],
      chainLength: context.chain.length,
      riskPercent: Math.round(risk * 100),
      stage: context.stage,
      instructed: context.instructed === true,
    };
    for (const key of ['depth', 'hops'] as const) {
      if (Number.isSafeInteger(context[key])) cedarContext[key] = context[key];
      else problems.push(`context.${key}: ${context[key]} is not an integer`);
    }
    if (context.effect !== undefined) cedarContext.effect = context.effect;
    if (context.toolRisk !== undefined) {
      cedarContext.toolRisk = context.toolRisk;
      const rank = (RISKS as readonly string[]).indexOf(context.toolRisk);
      if (rank >= 0) cedarContext.toolRiskRank = rank;
      else problems.push(`context.toolRisk: unknown risk '${context.toolRisk}'`);
    }

    // Cedar converts every value it is given, at a cost per field: attributes no policy can read are left out.
    const keys = this.#contextKeys;
    const sent = keys ? Object.fromEntries(Object.entries(cedarContext).filter(([key]) => keys.has(key))) : cedarContext;

    const call = {
      principal: { type: T.user, id: principalId },
      action: { type: T.action, id: ACTION_IDS[action.kind] },
      resource,
      context: sent,
      entities,
      preparsedPolicySetId: this.#setId,
    };
    const key = JSON.stringify(call);
    const cacheable = key.length <= MAX_CACHED_REQUEST;
    let answered = cacheable ? this.#answers.get(key) : undefined;
    if (!answered) {
      let answer: AuthorizationAnswer;
      try {
        answer = statefulIsAuthorized(call);
      } catch (error) {
        return { decision: 'deny', determining: [], errors: [...problems, `cedar: ${(error as Error).message}`] };
      }
      answered = this.#answered(answer);
      if (cacheable) this.#answers.set(key, answered);
    }
    // Copies: a caller may keep or change what it is given without touching the cached answer.
    return { decision: answered.decision, determining: [...answered.determining], errors: [...problems, ...answered.errors] };
  }

  /** Cedar's answer as a decision: a failed request denies; policies that determined it or failed are in file order. */
  #answered(answer: AuthorizationAnswer): Answered {
    if (answer.type === 'failure') return { decision: 'deny', determining: [], errors: answer.errors.map((e) => `request: ${describe(e)}`) };
    const { decision, diagnostics } = answer.response;
    const rank = (id: string) => this.#order.get(id) ?? Number.MAX_SAFE_INTEGER;
    const failed = [...diagnostics.errors].sort((a, b) => rank(a.policyId) - rank(b.policyId));
    return {
      decision,
      determining: [...diagnostics.reason].sort((a, b) => rank(a) - rank(b)),
      errors: failed.map(({ policyId, error }) => this.#describeEvalError(policyId, error)),
    };
  }

  #readArgs(args: Record<string, unknown>): Record<string, unknown> {
    const reads = this.#readsArg;
    if (!reads) return args;
    const kept: Record<string, unknown> = {};
    for (const key of Object.keys(args)) if (reads(key)) kept[key] = args[key];
    return kept;
  }

  #describeEvalError(id: string, error: DetailedError): string {
    const p = this.#policies.get(id);
    const span = error.sourceLocations?.[0];
    let where = '';
    if (p && p.line === 0) where = ` (${p.file})`;
    else if (p) {
      const pos = span ? lineColumn(p.fileText, p.byteOffset + span.start) : p;
      where = ` (${p.file}:${pos.line}:${pos.column})`;
    }
    const missing = /does not have the attribute `([^`]+)`/.exec(error.message);
    const hint = missing ? `; test optional attributes with \`has\` first, e.g. \`... has ${missing[1]} && ...\`` : error.help ? ` (${error.help})` : '';
    return `policy ${id}${where}: ${error.message}${hint}`;
  }
}

/**
 * Parses all files as one policy set, checks them against the entity model, and preparses them
 * inside Cedar so that `authorize` parses nothing. Throws {@link CedarPolicyError} listing every
 * problem found.
 */
export function loadCedarPolicies(files: ReadonlyArray<{ path: string; text: string }>): CedarPolicies {
  const problems: CedarPolicyProblem[] = [];
  const policies: LoadedPolicy[] = [];
  const seenFiles = new Set<string>();
  const ids = new Map<string, LoadedPolicy>();

  for (const { path: file, text } of files) {
    if (seenFiles.has(file)) {
      problems.push({ file, line: 0, column: 0, detail: 'the same file is loaded twice' });
      continue;
    }
    seenFiles.add(file);
    const parts = policySetTextToParts(text);
    if (parts.type === 'failure') {
      for (const e of flatten(parts.errors)) problems.push(problemAt(file, text, e.sourceLocations?.[0]?.start, describe(e)));
      continue;
    }
    for (const template of inFileOrder(text, parts.policy_templates)) {
      const byte = template.at < 0 ? undefined : Buffer.byteLength(text.slice(0, template.at));
      problems.push(problemAt(file, text, byte, 'templates (policies with ?principal or ?resource slots) are not supported; write static policies'));
    }
    inFileOrder(text, parts.policies).forEach(({ text: part, at }, index) => {
      const byteOffset = at < 0 ? -1 : Buffer.byteLength(text.slice(0, at));
      const pos = byteOffset < 0 ? { line: 0, column: 0 } : lineColumn(text, byteOffset);
      const position = (needle?: string | RegExp) => {
        const inPart = needle === undefined ? -1 : typeof needle === 'string' ? part.indexOf(needle) : part.search(needle);
        return byteOffset < 0 ? undefined : byteOffset + (inPart < 0 ? 0 : Buffer.byteLength(part.slice(0, inPart)));
      };
      const here = (detail: string, needle?: string | RegExp) => {
        problems.push(problemAt(file, text, position(needle), detail));
      };
      const json = policyToJson(part);
      if (json.type === 'failure') {
        for (const e of json.errors) here(describe(e));
        return;
      }
      const annotated = json.json.annotations?.id as string | null | undefined;
      if (annotated !== undefined && (annotated === null || annotated === '')) here('@id needs a value, e.g. @id("refund-cap")', '@id');
      const id = annotated || `${file}:${index}`;
      const escalate = json.json.annotations !== undefined && 'escalate' in json.json.annotations;
      if (escalate && json.json.effect !== 'forbid') here('@escalate applies to forbid policies only: it turns their deny into a request for approval', '@escalate');
      // Entity literals, in scopes and in conditions alike, carry their type next to their id in Cedar's JSON form.
      const namesUser = JSON.stringify(json.json).includes(`"type":${JSON.stringify(T.user)}`);
      // Names that are not plain, or values an attribute never holds, would silently never match.
      const named = cedarNames(json.json);
      const names: NameUse[] = named.uses.map(({ needle, ...use }) => {
        const at = problemAt(file, text, position(needle), '');
        return { ...use, file, line: at.line, column: at.column };
      });
      for (const p of characterProblems(names)) problems.push(p);
      for (const p of named.problems) here(p.detail, p.needle);
      const policy: LoadedPolicy = { id, file, line: pos.line, column: pos.column, effect: json.json.effect, escalate, namesUser, text: part, fileText: text, byteOffset: Math.max(0, byteOffset), names };
      const clash = ids.get(id);
      if (clash) here(`duplicate policy id '${id}' (also at ${clash.file}:${clash.line}:${clash.column})`, annotated ? `"${id}"` : undefined);
      else ids.set(id, policy);
      for (const issue of lint(json.json)) here(issue.detail, issue.needle);
      policies.push(policy);
    });
  }
  if (problems.length > 0) throw new CedarPolicyError(problems);

  const staticPolicies = Object.fromEntries(policies.map((p) => [p.id, p.text]));
  const setId = `palisade:${createHash('sha256').update(JSON.stringify(staticPolicies)).digest('hex')}`;
  const answer = preparsePolicySet(setId, { staticPolicies });
  if (answer.type === 'failure') {
    throw new CedarPolicyError(flatten(answer.errors).map((e) => ({ file: '<policy set>', line: 0, column: 0, detail: describe(e) })));
  }
  return new CedarPolicies(setId, policies);
}
