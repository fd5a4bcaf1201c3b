/**
 * What the edge's signatures cost: signing a grant (once per run, at the edge), verifying it (once
 * per run in each worker process), and a hop's whole envelope check once the grant is remembered,
 * next to the per-hop HMAC of a grant claim that signatures replaced. In process, 2 KB message.
 * `npx tsx bench/signatures.ts`.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { label } from '../agents/label.js';
import { canonicalJson } from '../runtime/audit/canonical-json.js';
import type { Envelope } from '../runtime/envelope.js';
import { EnvelopeAuth } from '../runtime/identity/envelope-auth.js';
import { Grants } from '../runtime/identity/grants.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import { fmt, percentile, table } from './stats.js';

export interface SignatureCost {
  what: string;
  /** When it is paid. */
  paid: string;
  p50us: number;
  p99us: number;
}

/** Microseconds per call of `fn`, after as many untimed calls; each call gets its own index (0 … 2n-1). */
function time(iterations: number, fn: (i: number) => unknown): number[] {
  for (let i = 0; i < iterations; i++) fn(i);
  const times: number[] = [];
  for (let i = iterations; i < 2 * iterations; i++) {
    const t0 = process.hrtime.bigint();
    fn(i);
    times.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  return times;
}

export async function benchSignatures(iterations = 2000): Promise<{ costs: SignatureCost[]; table: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'palisade-bench-signatures-'));
  try {
    await generateKeys(dir, [
      { name: 'a', handoffs: ['b'], delegates: [] },
      { name: 'b', handoffs: [], delegates: [] },
    ]);
    const edge = new EnvelopeAuth(await loadKeyring(dir, [EDGE]));
    const a = new EnvelopeAuth(await loadKeyring(dir, ['a']));
    const principal = { id: 'ada', roles: ['customer'], tenant: 'acme', attrs: { tier: 'gold' } };
    const content = 'Please look into my order and route this request to whoever can resolve it. '.repeat(27).slice(0, 2048);
    const start = (): Envelope =>
      edge.sealStart({
        v: 1,
        kind: 'start',
        runId: randomUUID(),
        messageId: randomUUID(),
        sender: EDGE,
        receiver: 'a',
        principal,
        chain: ['a'],
        depth: 0,
        hops: 0,
        budget: { tokens: 20_000, deadline: Date.now() + 3600_000 },
        label: label(),
        messages: [{ role: 'user', content }],
        issuedAt: Date.now(),
      });
    /** The hop a → b of a run, as b reads it from its job (parsed JSON). */
    const handoff = (s: Envelope): Envelope & Record<string, unknown> => {
      const { auth: _mac, ...rest } = s;
      const sealed = a.seal({ ...rest, kind: 'handoff', messageId: randomBytes(16).toString('base64url'), sender: 'a', receiver: 'b', chain: ['a', 'b'], hops: 1, issuedAt: Date.now() });
      return JSON.parse(JSON.stringify(sealed)) as Envelope & Record<string, unknown>;
    };
    const claims = Array.from({ length: iterations * 2 }, () => start().grant!);
    const edgeKeys = edge.keyring.edge;
    // A grant new to the receiver on every check, so each one verifies.
    const cold = Array.from({ length: iterations * 2 }, () => handoff(start()));
    const coldWorker = new EnvelopeAuth(await loadKeyring(dir, ['b']));
    const warmWorker = new EnvelopeAuth(await loadKeyring(dir, ['b']));
    const hop = handoff(start());
    const grants = new Grants((await loadKeyring(dir, ['b'])).edge);
    const hmacKey = randomBytes(32);
    const costs: SignatureCost[] = [
      { what: 'Ed25519 sign of a grant claim', paid: 'edge, once per run', times: time(iterations, () => edgeKeys.sign(`palisade.grant\0${claims[0]!.claim}`)) },
      { what: 'Ed25519 verify of a grant', paid: 'each worker process, once per run', times: time(iterations, (i) => edgeKeys.verify(`palisade.grant\0${claims[i]!.claim}`, claims[i]!)) },
      { what: 'hop check, grant not yet seen (verify included)', paid: 'first hop of a run in a worker', times: time(iterations, (i) => coldWorker.check(cold[i]!, cold[i]!)) },
      { what: 'hop check, grant remembered', paid: 'every later hop', times: time(iterations * 5, () => warmWorker.check(hop, hop)) },
      { what: 'of which the grant, remembered', paid: 'every later hop', times: time(iterations * 5, () => grants.claimOf(hop.grant!)) },
      { what: 'before: the grant as an HMAC of its canonical claim', paid: 'every hop (replaced)', times: time(iterations * 5, () => createHmac('sha256', hmacKey).update(canonicalJson(JSON.parse(hop.grant!.claim) as object)).digest()) },
    ].map(({ times, ...c }) => ({ ...c, p50us: percentile(times, 50), p99us: percentile(times, 99) }));
    const rows = costs.map((c) => [c.what, c.paid, fmt(c.p50us, 1), fmt(c.p99us, 1)]);
    const text =
      "The edge's signatures (Ed25519, node:crypto), in process, µs: what a run and a hop pay. A hop check is the whole envelope check (link MAC over a 2 KB envelope, grant, budget)\n\n" +
      table(['what', 'paid by', 'p50 µs', 'p99 µs'], rows, ['l', 'l', 'r', 'r']);
    return { costs, table: text };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { table: t } = await benchSignatures();
  process.stdout.write(`${t}\n`);
}
