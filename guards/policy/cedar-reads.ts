/**
 * Which parts of a request a policy set can read, found from the policies' text: Cedar converts
 * every value it is given, at a cost per field, so `CedarPolicies.authorize` sends only these.
 */
import { CONTEXT_KEYS } from './cedar-request.js';

/**
 * Whether a policy reads an entity's data: its scope names `principal`/`resource` once, and only a
 * second mention (a condition, even in a comment) or an `in`/`is` test in the scope can read
 * attributes or parents. An equality test in the scope compares ids and needs no entity data.
 */
export function readsEntity(text: string, variable: 'principal' | 'resource'): boolean {
  const mentions = text.match(new RegExp(`\\b${variable}\\b`, 'g'))?.length ?? 0;
  return mentions > 1 || new RegExp(`\\b${variable}\\s+(in|is)\\b`).test(text);
}

/**
 * Which context attributes a policy set can read. A policy reads an attribute by naming it
 * (`context.args`, `context has args`, `context["args"]`), so an attribute whose name appears nowhere
 * in any policy cannot affect a decision. A policy that uses `context` other than through an
 * attribute (`context == {...}`) may read them all.
 */
export function contextKeysRead(texts: readonly string[]): ReadonlySet<string> | undefined {
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
export function argumentsRead(texts: readonly string[]): ((name: string) => boolean) | undefined {
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
