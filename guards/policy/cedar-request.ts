/**
 * What a Cedar request holds: the entity model policies are written against, the request for a
 * guard event ({@link cedarRequestFor}), and the conversion of argument and attribute values into
 * Cedar's JSON form. `CedarPolicies.authorize` sends the request; policy loading rejects
 * names outside this model.
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
 */
import type { CedarValueJson } from '@cedar-policy/cedar-wasm/nodejs';
import type { GuardEvent } from '../guard-event.js';

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

const NS = 'Palisade';
export const T = {
  user: `${NS}::User`,
  role: `${NS}::Role`,
  action: `${NS}::Action`,
  tool: `${NS}::Tool`,
  agent: `${NS}::Agent`,
} as const;
export const ENTITY_TYPES: ReadonlySet<string> = new Set(Object.values(T));
export const ACTION_IDS = { tool: 'call_tool', handoff: 'handoff', delegate: 'delegate' } as const;
export const ACTIONS: ReadonlySet<string> = new Set(Object.values(ACTION_IDS));
export const CONTEXT_KEYS: ReadonlySet<string> = new Set([
  'agent', 'args', 'label', 'chain', 'chainLength', 'depth', 'hops', 'riskPercent', 'stage', 'effect', 'toolRisk', 'toolRiskRank', 'instructed',
]);

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

const MAX_DEPTH = 32;
const RESERVED_KEYS: ReadonlySet<string> = new Set(['__entity', '__extn', '__expr']);
const LONG_LIMIT = 2 ** 63;
const DECIMAL_MAX = 922337203685477.5807;

export function toRecord(value: object, path: string, problems: string[], depth: number): Record<string, CedarValueJson> {
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
