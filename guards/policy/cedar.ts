/**
 * Conditional authorization rules in Cedar (https://www.cedarpolicy.com), evaluated with
 * `@cedar-policy/cedar-wasm` (its Node.js build). The security team writes `.cedar` files; the
 * permissions guard asks {@link CedarPolicies.authorize} before every tool call, handoff and
 * delegation.
 *
 * ## Entity model (what policies are written against)
 *
 * All types live in the `Palisade` namespace. Policies that name any other entity type, or an
 * action other than the three below, are rejected at load time (a misspelt action in a `forbid`
 * would otherwise silently never apply).
 *
 * - **principal** `Palisade::User::"<principal.id>"`. When no policy names a user
 *   (`Palisade::User::"…"`), a decision cannot depend on who the user is, only on their roles and
 *   attributes: every principal is then sent as `Palisade::User::"principal"`, so the same roles
 *   asking the same thing share one kept answer, and no user's id appears in Cedar's messages.
 *   - parents: `Palisade::Role::"<role>"` for each of the principal's roles, so
 *     `principal in Palisade::Role::"finance"` tests role membership. Roles have no hierarchy.
 *   - attributes: the principal's `attrs` (converted as below), plus `roles: Set<String>` and,
 *     when the principal has one, `tenant: String`. `roles` and `tenant` always win over an
 *     `attrs` entry of the same name. Test optional ones with `principal has tenant`.
 * - **action** `Palisade::Action::"call_tool"`, `Palisade::Action::"handoff"` or
 *   `Palisade::Action::"delegate"`.
 * - **resource**
 *   - for `call_tool`: `Palisade::Tool::"<tool name>"` with attribute `agent: String` (the agent
 *     calling it);
 *   - for `handoff` / `delegate`: `Palisade::Agent::"<target agent>"`, no attributes.
 * - **context** (a record):
 *   | attribute      | type          | meaning |
 *   | ---            | ---           | --- |
 *   | `agent`        | String        | the agent acting (whose worker decides) |
 *   | `args`         | Record        | the tool call's arguments (always present, `{}` if none) |
 *   | `label`        | Record        | `{ level: String, levelRank: Long, categories: Set<String>, integrity: String }`; `levelRank` is 0 public, 1 internal, 2 confidential, 3 restricted |
 *   | `chain`        | Set<String>   | agents the run has passed through (a set: order and repeats are lost) |
 *   | `chainLength`  | Long          | length of the chain, repeats included |
 *   | `depth`        | Long          | delegation depth |
 *   | `hops`         | Long          | hops so far in the run |
 *   | `riskPercent`  | Long          | the risk so far, 0-100 (Cedar has no floating point) |
 *   | `stage`        | String        | guard stage, e.g. `"tool_call"`, `"handoff"` |
 *   | `instructed`   | Bool          | third-party content in the context reads as instructions to the agent |
 *   | `effect`       | String        | tool effect `read` / `write` / `external`; only when known (tool calls) |
 *   | `toolRisk`     | String        | tool risk `low` / `medium` / `high` / `critical`; only when known |
 *   | `toolRiskRank` | Long          | 0-3 for `toolRisk`; only when `toolRisk` is present |
 *   Scope rules on `effect`/`toolRisk` to `action == Palisade::Action::"call_tool"`, or test them
 *   with `has`.
 *
 * ## Values (arguments and principal attributes)
 *
 * - strings and booleans as they are;
 * - integers → `Long` (must lie strictly between -2^63 and 2^63);
 * - other finite numbers → `decimal`, rounded to 4 decimal places (Cedar's limit), within
 *   ±922337203685477.5807. Note an integral value such as `1` or `1.0` is a `Long`, not a
 *   `decimal`, so `context.args.rate.greaterThan(decimal("0.25"))` errors for `rate: 1`;
 *   the error fails the request closed;
 * - arrays and `Set`s → `Set` (unordered, duplicates collapse);
 * - objects → records; `Date`s and other values with `toJSON` → what `toJSON` returns;
 * - `null` and `undefined` → the attribute is left out (test with `has`).
 * A value Cedar cannot represent (a number out of range, NaN, a function, a record key
 * `__entity`/`__extn`/`__expr` which Cedar would read as an entity reference or extension
 * call, nesting deeper than 32) is left out **and** reported in `errors`, so the request fails
 * closed rather than letting a `has`-guarded `forbid` be skipped.
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
  type PolicyJson,
} from '@cedar-policy/cedar-wasm/nodejs';
import { RISKS } from '../../agents/tool.js';
import type { GuardEvent } from '../guard-event.js';
import { LEVELS } from '../../agents/label.js';

export type CedarAttribute = string | number | boolean;

export interface CedarRequest {
  principal: { id: string; roles: readonly string[]; tenant?: string; attrs: Record<string, CedarAttribute> };
  /** `name` is the tool name for `tool`, the target agent for `handoff` and `delegate`. */
  action: { kind: 'tool' | 'handoff' | 'delegate'; name: string };
  /** The agent acting. */
  agent: string;
  context: {
    args?: Record<string, unknown>;
    label: { level: string; categories: readonly string[]; integrity: string };
    chain: readonly string[];
    depth: number;
    hops: number;
    /** 0 to 1; given to policies as `riskPercent`, 0-100. */
    risk: number;
    effect?: string;
    toolRisk?: string;
    stage: string;
    /** Third-party content in the context carries instructions to the agent. */
    instructed?: boolean;
  };
}

export interface CedarDecision {
  decision: 'allow' | 'deny';
  /** Ids of the policies that decided: the matching forbids for a deny, the matching permits for an allow. */
  determining: string[];
  /** Evaluation and request-conversion errors. Non-empty means the caller must fail closed. */
  errors: string[];
}

/** One problem in a policy file; `line` and `column` are 1-based (0 when Cedar gave no location). */
export interface CedarPolicyProblem {
  file: string;
  line: number;
  column: number;
  detail: string;
}

/** A policy file could not be loaded. Describes the first problem; `errors` holds them all. */
export class CedarPolicyError extends Error {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly detail: string;
  readonly errors: readonly CedarPolicyProblem[];

  constructor(errors: readonly CedarPolicyProblem[]) {
    const first = errors[0] ?? { file: '<policies>', line: 0, column: 0, detail: 'invalid policies' };
    super(errors.length > 0 ? errors.map(formatProblem).join('\n') : formatProblem(first));
    this.name = 'CedarPolicyError';
    this.file = first.file;
    this.line = first.line;
    this.column = first.column;
    this.detail = first.detail;
    this.errors = errors.length > 0 ? errors : [first];
  }
}

function formatProblem(p: CedarPolicyProblem): string {
  return p.line > 0 ? `${p.file}:${p.line}:${p.column}: ${p.detail}` : `${p.file}: ${p.detail}`;
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
}

const NS = 'Palisade';
const T = {
  user: `${NS}::User`,
  role: `${NS}::Role`,
  action: `${NS}::Action`,
  tool: `${NS}::Tool`,
  agent: `${NS}::Agent`,
} as const;
const ENTITY_TYPES: ReadonlySet<string> = new Set(Object.values(T));
const ACTION_IDS = { tool: 'call_tool', handoff: 'handoff', delegate: 'delegate' } as const;
const ACTIONS: ReadonlySet<string> = new Set(Object.values(ACTION_IDS));
const CONTEXT_KEYS: ReadonlySet<string> = new Set([
  'agent', 'args', 'label', 'chain', 'chainLength', 'depth', 'hops', 'riskPercent', 'stage', 'effect', 'toolRisk', 'toolRiskRank', 'instructed',
]);

/** Answers kept per policy set, and the largest request (serialized) worth keeping one for. */
const ANSWERS_CACHED = 2000;
const MAX_CACHED_REQUEST = 4096;
/** The id every principal is sent under when no policy names a user. */
const ANY_PRINCIPAL = 'principal';

type Answered = Readonly<{ decision: CedarDecision['decision']; determining: readonly string[]; errors: readonly string[] }>;

export class CedarPolicies {
  readonly size: number;
  readonly policyIds: readonly string[];
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
 * Whether a policy reads an entity's data: its scope names `principal`/`resource` once, and only a
 * second mention (a condition, even in a comment) or an `in`/`is` test in the scope can read
 * attributes or parents. An equality test in the scope compares ids and needs no entity data.
 */
function readsEntity(text: string, variable: 'principal' | 'resource'): boolean {
  const mentions = text.match(new RegExp(`\\b${variable}\\b`, 'g'))?.length ?? 0;
  return mentions > 1 || new RegExp(`\\b${variable}\\s+(in|is)\\b`).test(text);
}

/**
 * Which context attributes a policy set can read. A policy reads an attribute by naming it
 * (`context.args`, `context has args`, `context["args"]`), so an attribute whose name appears nowhere
 * in any policy cannot affect a decision. A policy that uses `context` other than through an
 * attribute (`context == {...}`) may read them all.
 */
function contextKeysRead(texts: readonly string[]): ReadonlySet<string> | undefined {
  const all = texts.join('\n');
  if (readsWhole(all, 'context')) return undefined;
  return new Set([...CONTEXT_KEYS].filter((key) => new RegExp(`\\b${key}\\b`).test(all)));
}

/**
 * Whether a record named `name` is used other than through one of its attributes (`.x`, `["x"]`,
 * `has x`) or a presence test (`has name`): such a use may read every attribute.
 */
function readsWhole(text: string, name: string): boolean {
  for (const use of text.matchAll(new RegExp(`(has\\s+)?\\b${name}\\b\\s*(\\.|\\[|has\\b)?`, 'g'))) if (!use[1] && !use[2]) return true;
  return false;
}

/**
 * Which arguments a policy set can read: one it names (`context.args.amountCents`, `context.args has
 * amountCents`, `context.args["amount"]`), unless a policy uses `args` other than through an attribute.
 * Arguments are model-written and may be large: converting them is most of the cost of a request.
 */
function argumentsRead(texts: readonly string[]): ((name: string) => boolean) | undefined {
  const all = texts.join('\n');
  if (readsWhole(all, 'args')) return undefined;
  const known = new Map<string, boolean>();
  return (name) => {
    let reads = known.get(name);
    if (reads === undefined) {
      reads = all.includes(name);
      if (known.size < 10_000) known.set(name, reads);
    }
    return reads;
  };
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
      const here = (detail: string, needle?: string | RegExp) => {
        const inPart = needle === undefined ? -1 : typeof needle === 'string' ? part.indexOf(needle) : part.search(needle);
        const byte = byteOffset < 0 ? undefined : byteOffset + (inPart < 0 ? 0 : Buffer.byteLength(part.slice(0, inPart)));
        problems.push(problemAt(file, text, byte, detail));
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
      const policy: LoadedPolicy = { id, file, line: pos.line, column: pos.column, effect: json.json.effect, escalate, namesUser, text: part, fileText: text, byteOffset: Math.max(0, byteOffset) };
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

/**
 * The Cedar request for a guard event, or undefined when the stage is not an action Cedar rules
 * govern (only `tool_call` with a tool and `handoff` with a target are). `risk` is the score so far.
 */
export function cedarRequestFor(event: GuardEvent, risk = 0): CedarRequest | undefined {
  let action: CedarRequest['action'];
  if (event.stage === 'tool_call' && event.tool) action = { kind: 'tool', name: event.tool.name };
  else if (event.stage === 'handoff' && event.target) action = { kind: event.target.mode, name: event.target.agent };
  else return undefined;
  return {
    principal: event.principal,
    action,
    agent: event.agent,
    context: {
      ...(event.args !== undefined && { args: event.args }),
      label: event.label,
      chain: event.chain,
      depth: event.depth,
      hops: event.hops,
      risk,
      ...(event.tool && action.kind === 'tool' && { effect: event.tool.effect, toolRisk: event.tool.risk }),
      stage: event.stage,
      instructed: event.history?.some((i) => i.flags?.includes('instructions')) ?? false,
    },
  };
}

// ---- values ---------------------------------------------------------------------------------

const MAX_DEPTH = 32;
const RESERVED_KEYS: ReadonlySet<string> = new Set(['__entity', '__extn', '__expr']);
const LONG_LIMIT = 2 ** 63;
const DECIMAL_MAX = 922337203685477.5807;

function toRecord(value: object, path: string, problems: string[], depth: number): Record<string, CedarValueJson> {
  const out: Record<string, CedarValueJson> = {};
  for (const [key, v] of Object.entries(value)) {
    if (RESERVED_KEYS.has(key)) {
      problems.push(`${path}.${key}: the key '${key}' is reserved by Cedar's JSON format and was left out`);
      continue;
    }
    const converted = toCedar(v, `${path}.${key}`, problems, depth + 1);
    if (converted !== undefined) out[key] = converted;
  }
  return out;
}

function toCedar(value: unknown, path: string, problems: string[], depth: number): CedarValueJson | undefined {
  if (value === null || value === undefined) return undefined;
  if (depth > MAX_DEPTH) {
    problems.push(`${path}: nested deeper than ${MAX_DEPTH} levels; left out`);
    return undefined;
  }
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return toNumber(value, path, problems);
    case 'bigint':
      if (value > -BigInt(LONG_LIMIT) && value < BigInt(LONG_LIMIT) && Number.isSafeInteger(Number(value))) return Number(value);
      problems.push(`${path}: ${value} cannot be passed to Cedar exactly; left out`);
      return undefined;
    case 'object': {
      if (Array.isArray(value) || value instanceof Set) {
        const items: CedarValueJson[] = [];
        let i = 0;
        for (const item of value) {
          const converted = toCedar(item, `${path}[${i++}]`, problems, depth + 1);
          if (converted !== undefined) items.push(converted);
        }
        return items;
      }
      const toJSON = (value as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === 'function') return toCedar(toJSON.call(value), path, problems, depth + 1);
      return toRecord(value, path, problems, depth);
    }
    default:
      problems.push(`${path}: a ${typeof value} has no Cedar value; left out`);
      return undefined;
  }
}

function toNumber(n: number, path: string, problems: string[]): CedarValueJson | undefined {
  if (Number.isInteger(n)) {
    if (n > -LONG_LIMIT && n < LONG_LIMIT) return n === 0 ? 0 : n;
    problems.push(`${path}: ${n} is outside Cedar's Long range; left out`);
    return undefined;
  }
  if (!Number.isFinite(n) || Math.abs(n) > DECIMAL_MAX) {
    problems.push(`${path}: ${n} is not representable as a Cedar decimal; left out`);
    return undefined;
  }
  let text = n.toFixed(4).replace(/0+$/, '');
  if (text.endsWith('.')) text += '0';
  if (text === '-0.0') text = '0.0';
  return { __extn: { fn: 'decimal', arg: text } };
}

// ---- policy files ---------------------------------------------------------------------------

/** Problems a parse does not catch: names outside the entity model, which would silently never match. */
function lint(policy: PolicyJson): Array<{ detail: string; needle?: string | RegExp }> {
  const issues: Array<{ detail: string; needle?: string | RegExp }> = [];
  const entity = (uid: unknown) => {
    const { type, id } = (uid ?? {}) as { type?: unknown; id?: unknown };
    if (typeof type !== 'string') return;
    if (!ENTITY_TYPES.has(type)) {
      issues.push({ detail: unknownType(type), needle: type });
    } else if (type === T.action && !ACTIONS.has(String(id))) {
      issues.push({ detail: `unknown action ${T.action}::"${String(id)}"; actions are ${[...ACTIONS].map((a) => `"${a}"`).join(', ')}`, needle: `"${String(id)}"` });
    }
  };
  const entityType = (type: unknown) => {
    if (typeof type === 'string' && !ENTITY_TYPES.has(type)) issues.push({ detail: unknownType(type), needle: type });
  };
  const contextAttr = (attr: unknown) => {
    const name = Array.isArray(attr) ? attr[0] : attr;
    if (typeof name === 'string' && !CONTEXT_KEYS.has(name)) {
      const quoted = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const needle = new RegExp(`context\\s*(?:\\.\\s*|has\\s+"?)${quoted}`);
      issues.push({ detail: `context has no attribute '${name}'; it has ${[...CONTEXT_KEYS].join(', ')}`, needle });
    }
  };
  for (const scope of [policy.principal, policy.action, policy.resource] as Array<Record<string, unknown>>) {
    entityType(scope.entity_type);
    entity(scope.entity);
    if (Array.isArray(scope.entities)) scope.entities.forEach(entity);
    const inside = scope.in as Record<string, unknown> | undefined;
    if (inside) entity(inside.entity);
  }
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const obj = node as Record<string, unknown>;
    if ('__entity' in obj) entity(obj.__entity);
    if (typeof obj.entity_type === 'string') entityType(obj.entity_type);
    for (const op of ['.', 'has'] as const) {
      const access = obj[op] as { left?: { Var?: string }; attr?: unknown } | undefined;
      if (access?.left?.Var === 'context') contextAttr(access.attr);
    }
    for (const child of Object.values(obj)) walk(child);
  };
  walk(policy.conditions);
  return issues;
}

function unknownType(type: string): string {
  return `unknown entity type ${type}; the entity model has ${[...ENTITY_TYPES].join(', ')}`;
}

/**
 * Cedar returns a file's policies in the order of its own ids ("policy0", "policy1", "policy10",
 * ...), not file order. Each part is a verbatim slice of the file: find where (outside comments
 * and strings) and sort by that.
 */
function inFileOrder(text: string, parts: readonly string[]): Array<{ text: string; at: number }> {
  const skipped: Array<[number, number]> = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '"') {
      const start = i;
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      skipped.push([start, i + 1]);
    } else if (text.startsWith('//', i)) {
      const end = text.indexOf('\n', i);
      skipped.push([i, end < 0 ? text.length : end]);
      i = end < 0 ? text.length : end;
    }
  }
  const used = new Set<number>();
  const located = parts.map((part) => {
    for (let at = text.indexOf(part); at >= 0; at = text.indexOf(part, at + 1)) {
      if (!used.has(at) && !skipped.some(([s, e]) => at >= s && at < e)) {
        used.add(at);
        return { text: part, at };
      }
    }
    return { text: part, at: -1 };
  });
  const key = (p: { at: number }) => (p.at < 0 ? Number.MAX_SAFE_INTEGER : p.at);
  return located.sort((a, b) => key(a) - key(b));
}

function flatten(errors: readonly DetailedError[]): DetailedError[] {
  return errors.flatMap((e) => [e, ...flatten(e.related ?? [])]);
}

function describe(e: DetailedError): string {
  const message = e.message.replace(/^failed to parse policies from string: /, '');
  const label = e.sourceLocations?.find((l) => l.label)?.label;
  const extra = [label, e.help].filter(Boolean).join('; ');
  return extra ? `${message} (${extra})` : message;
}

function problemAt(file: string, text: string, byteOffset: number | undefined, detail: string): CedarPolicyProblem {
  if (byteOffset === undefined) return { file, line: 0, column: 0, detail };
  return { file, ...lineColumn(text, byteOffset), detail };
}

/** 1-based line and column (in Unicode code points) of a UTF-8 byte offset into `text`. */
function lineColumn(text: string, byteOffset: number): { line: number; column: number } {
  const before = Buffer.from(text, 'utf8').subarray(0, Math.max(0, byteOffset)).toString('utf8');
  const lineStart = before.lastIndexOf('\n') + 1;
  let line = 1;
  for (let i = before.indexOf('\n'); i >= 0; i = before.indexOf('\n', i + 1)) line++;
  return { line, column: [...before.slice(lineStart)].length + 1 };
}
