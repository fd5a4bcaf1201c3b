import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import type { Agent } from '../../agents/agent.js';
import { EdgeKeys, EdgeKeySchema, newEdgeKey, type EdgeKey } from './edge-keys.js';
import { KeyError } from './key-error.js';

export { KeyError } from './key-error.js';

/** The component that starts runs (CLI, HTTP API): the only one that can vouch for a principal. */
export const EDGE = 'edge';

const KeySchema = z
  .object({
    from: z.string().min(1),
    to: z.string().min(1),
    kid: z.string().regex(/^[A-Za-z0-9_-]{4,64}$/),
    secret: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'must be 32 bytes, base64'),
    createdAt: z.string(),
  })
  .strict();

/** One component's key file: only the links it sends or receives on, and its own audit key. */
export const KeyFileSchema = z
  .object({
    version: z.literal(1),
    component: z.string().min(1),
    /** The audit log's name for this component (the same id), so `palisade audit verify --keys` can read the file. */
    writer: z.string().min(1),
    keys: z.array(KeySchema),
    audit: z.object({ kid: z.string(), secret: z.string() }).strict(),
    /** The edge's signing keys: public ones in every file, the newest private one in the edge's alone. Absent in files made before edge signatures. */
    edgeKeys: z.array(EdgeKeySchema).optional(),
  })
  .strict();
export type KeyFile = z.infer<typeof KeyFileSchema>;

interface LinkKey {
  kid: string;
  secret: Buffer;
  createdAt: string;
}

/**
 * The keys one process holds. A message from A to B is authenticated with the key of the link A→B,
 * which only A and B have: B can verify it, and nobody else can make B believe A said it.
 * HMAC-SHA256 over per-link keys costs microseconds, where a signature costs a whole hop. What only
 * the edge may say (grants, decisions, rollback orders) is signed with its Ed25519 key instead,
 * once per run or decision: workers hold only its public keys, so none can speak for it.
 */
export class Keyring {
  private readonly links = new Map<string, LinkKey[]>();
  readonly components: readonly string[];
  readonly audit: ReadonlyMap<string, { kid: string; secret: Buffer }>;
  readonly edge: EdgeKeys;

  constructor(files: readonly KeyFile[]) {
    const audit = new Map<string, { kid: string; secret: Buffer }>();
    for (const file of files) {
      audit.set(file.component, { kid: file.audit.kid, secret: Buffer.from(file.audit.secret, 'base64') });
      if (file.component !== EDGE && file.edgeKeys?.some((k) => k.privateKey)) throw new KeyError(`the key file of '${file.component}' holds a private key of the edge: only edge.json may`);
      for (const k of file.keys) {
        if (k.from !== file.component && k.to !== file.component) throw new KeyError(`the key file of '${file.component}' holds a key of another link (${k.from} → ${k.to})`);
        const list = this.links.get(`${k.from}>${k.to}`) ?? [];
        if (!list.some((l) => l.kid === k.kid)) list.push({ kid: k.kid, secret: Buffer.from(k.secret, 'base64'), createdAt: k.createdAt });
        list.sort((a, b) => b.createdAt.localeCompare(a.createdAt));
        this.links.set(`${k.from}>${k.to}`, list);
      }
    }
    this.components = files.map((f) => f.component);
    this.audit = audit;
    this.edge = new EdgeKeys(files.flatMap((f) => f.edgeKeys ?? []));
  }

  /** The newest key of a link, for sending. */
  private sendKey(from: string, to: string): LinkKey {
    const key = this.links.get(`${from}>${to}`)?.[0];
    if (!key) throw new KeyError(`no key for the link ${from} → ${to} in this process (it holds keys for: ${this.components.join(', ') || 'nothing'})`);
    return key;
  }

  mac(from: string, to: string, data: string): { kid: string; mac: string } {
    const key = this.sendKey(from, to);
    return { kid: key.kid, mac: createHmac('sha256', key.secret).update(data).digest('base64url') };
  }

  /** Checks a MAC with the named key of the link; any key id of the link may verify while it is kept (rotation). */
  verify(from: string, to: string, data: string, auth: { kid: string; mac: string } | undefined): string | undefined {
    if (!auth) return 'it carries no authentication';
    const key = this.links.get(`${from}>${to}`)?.find((k) => k.kid === auth.kid);
    if (!key) return `no key '${auth.kid}' for the link ${from} → ${to}`;
    const expected = createHmac('sha256', key.secret).update(data).digest();
    const given = Buffer.from(auth.mac, 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return `its MAC does not match (link ${from} → ${to}, key ${auth.kid})`;
    return undefined;
  }

  /** The components this process can send to from `from`. */
  receiversOf(from: string): string[] {
    return [...this.links.keys()].filter((k) => k.startsWith(`${from}>`)).map((k) => k.slice(from.length + 1));
  }

  has(from: string, to: string): boolean {
    return (this.links.get(`${from}>${to}`)?.length ?? 0) > 0;
  }

  /** Why this process cannot serve `agent` safely (keys made before edge signatures), or undefined. */
  missingForWorker(agent: string): string | undefined {
    const missing = [...(this.edge.canVerify ? [] : ['public key of the edge']), ...(this.has(agent, EDGE) ? [] : [`key for the link ${agent} → ${EDGE}`])];
    if (missing.length === 0) return undefined;
    return `the key file of '${agent}' holds no ${missing.join(' and no ')}: it was made by an older version. Run \`palisade keys generate <module> --out <dir>\` again (existing keys are kept) and give each component its new file`;
  }
}

/** Reads the key files of the given components from a folder (`<component>.json`). */
export async function loadKeyring(dir: string, components: readonly string[]): Promise<Keyring> {
  const files: KeyFile[] = [];
  for (const component of components) {
    const path = join(dir, `${component}.json`);
    let raw: unknown;
    try {
      raw = JSON.parse(await readFile(path, 'utf8'));
    } catch (error) {
      throw new KeyError(`cannot read the key file ${path}: ${(error as Error).message}`);
    }
    const parsed = KeyFileSchema.safeParse(raw);
    if (!parsed.success) throw new KeyError(`${path}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    if (parsed.data.component !== component) throw new KeyError(`${path} is the key file of '${parsed.data.component}', not '${component}'`);
    files.push(parsed.data);
  }
  return new Keyring(files);
}

/**
 * Every link the agent graph uses: edge → each agent, each agent → edge (its approval requests),
 * handoffs and delegations, answers back, and each agent to itself.
 */
export function linksOf(agents: readonly Pick<Agent, 'name' | 'handoffs' | 'delegates'>[]): Array<[string, string]> {
  const links = new Map<string, [string, string]>();
  const add = (from: string, to: string) => links.set(`${from}>${to}`, [from, to]);
  for (const a of agents) {
    add(EDGE, a.name);
    add(a.name, EDGE);
    add(a.name, a.name);
    for (const t of a.handoffs) add(a.name, t);
    for (const t of a.delegates) {
      add(a.name, t);
      add(t, a.name);
    }
  }
  return [...links.values()];
}

const newKid = (): string => `k${new Date().toISOString().slice(0, 10).replace(/-/g, '')}${randomBytes(4).toString('hex')}`;

/**
 * Writes one key file per component. With existing files in `dir`, adds a new key to every link
 * and keeps the old ones, so messages in flight still verify while senders move to the new key.
 * The edge gets a new key pair likewise: its old private keys are dropped, their public keys kept.
 */
export async function generateKeys(dir: string, agents: readonly Pick<Agent, 'name' | 'handoffs' | 'delegates'>[]): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const components = [EDGE, ...agents.map((a) => a.name)];
  const existing = new Map<string, KeyFile>();
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.json')) continue;
    const parsed = KeyFileSchema.safeParse(JSON.parse(await readFile(join(dir, name), 'utf8')));
    if (parsed.success) existing.set(parsed.data.component, parsed.data);
  }
  const createdAt = new Date().toISOString();
  const kid = newKid();
  const fresh = linksOf(agents).map(([from, to]) => ({ from, to, kid, secret: randomBytes(32).toString('base64'), createdAt }));
  const publicOnly = ({ privateKey: _private, ...key }: EdgeKey): EdgeKey => key;
  const oldEdgeKeys = [...existing.values()].flatMap((f) => f.edgeKeys ?? []).map(publicOnly);
  const edgeKeys = [...new Map([...oldEdgeKeys, newEdgeKey(kid, createdAt)].map((k) => [k.kid, k])).values()];
  const written: string[] = [];
  for (const component of components) {
    const old = existing.get(component);
    const mine = fresh.filter((k) => k.from === component || k.to === component);
    const file: KeyFile = {
      version: 1,
      component,
      writer: component,
      keys: [...(old?.keys ?? []), ...mine],
      audit: old?.audit ?? { kid: newKid(), secret: randomBytes(32).toString('base64') },
      edgeKeys: component === EDGE ? edgeKeys : edgeKeys.map(publicOnly),
    };
    const path = join(dir, `${component}.json`);
    await writeFile(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
    written.push(path);
  }
  return written;
}
