import { mkdtemp } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ScriptedModel } from '../agents/providers/scripted.js';
import { SupportBackend } from '../examples/support/backend.js';
import { createSupportAgents } from '../examples/support/system.js';
import { loadPolicy } from '../guards/policy/load-policy.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import { Runtime } from '../runtime/runtime.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { extractTrace, injectTrace } from '../tracing/propagation.js';
import { setupTracing, type Tracing } from '../tracing/setup.js';
import { trace } from '@opentelemetry/api';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

const SUPPORT_POLICY = fileURLToPath(new URL('../examples/support/policy.yaml', import.meta.url));
const EMAIL = 'ada@example.com';

interface OtlpValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values?: OtlpValue[] };
}
interface OtlpKeyValue {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  attributes?: OtlpKeyValue[];
  events?: Array<{ name: string; attributes?: OtlpKeyValue[] }>;
}

/** OTLP/JSON ids are hex; tolerate base64 too. */
const hex = (id: string | undefined): string => (!id ? '' : /^[0-9a-f]+$/i.test(id) ? id.toLowerCase() : Buffer.from(id, 'base64').toString('hex'));
const plain = (v: OtlpValue): unknown => v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : undefined) ?? v.doubleValue ?? v.boolValue ?? v.arrayValue?.values?.map(plain);
const attrs = (kvs: OtlpKeyValue[] | undefined): Record<string, unknown> => Object.fromEntries((kvs ?? []).map((kv) => [kv.key, plain(kv.value)]));

describe('tracing: one trace per run across workers', () => {
  const spans: OtlpSpan[] = [];
  const bodies: string[] = [];
  const prefix = uniquePrefix('trace');
  let server: Server;
  let tracing: Tracing;
  const workers: Runtime[] = [];

  beforeAll(async () => {
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.method !== 'POST' || req.url !== '/v1/traces') {
          res.writeHead(404).end();
          return;
        }
        let raw = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw);
        const text = raw.toString('utf8');
        bodies.push(text);
        const body = JSON.parse(text) as { resourceSpans?: Array<{ scopeSpans?: Array<{ spans?: OtlpSpan[] }> }> };
        for (const rs of body.resourceSpans ?? []) for (const ss of rs.scopeSpans ?? []) spans.push(...(ss.spans ?? []));
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    // Content capture on: what is captured must come out redacted.
    tracing = setupTracing({ serviceName: 'palisade-test', endpoint: `http://127.0.0.1:${port}`, captureContent: true });
  });

  afterAll(async () => {
    for (const w of workers) await w.close({ timeoutMs: 2000 });
    await tracing?.shutdown();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await deleteKeys(prefix);
    await deleteKeys(`${prefix}-approval`);
  });

  it('propagates W3C trace context through a carrier', () => {
    expect(tracing.enabled).toBe(true);
    const span = trace.getTracer('t').startSpan('x');
    const carrier = injectTrace(trace.setSpan(extractTrace(undefined), span));
    span.end();
    expect(carrier?.traceparent).toMatch(new RegExp(`^00-${span.spanContext().traceId}-${span.spanContext().spanId}-01$`));
    expect(trace.getSpanContext(extractTrace(carrier))).toMatchObject({ traceId: span.spanContext().traceId, spanId: span.spanContext().spanId, isRemote: true });
    expect(injectTrace(extractTrace(undefined))).toBeUndefined();
  });

  it('traces the support scenario on two workers as one trace, without PII', async () => {
    const backend = new SupportBackend();
    const agents = () => createSupportAgents({ backend, model: (script) => new ScriptedModel({ script }) });
    const policy = await loadPolicy(SUPPORT_POLICY);
    const keysDir = await mkdtemp(join(tmpdir(), 'palisade-trace-keys-'));
    await generateKeys(keysDir, agents());
    // Two processes' worth of runtimes: each serves different agents, with its own keys; the first is also the edge.
    const front = new Runtime({ agents: agents(), policy, keys: await loadKeyring(keysDir, [EDGE, 'triage', 'tech_support']), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    const back = new Runtime({ agents: agents(), policy, keys: await loadKeyring(keysDir, ['billing', 'fraud_check']), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    workers.push(front, back);
    await front.startWorkers({ agents: ['triage', 'tech_support'] });
    await back.startWorkers({ agents: ['billing', 'fraud_check'] });

    const run = await front.start('triage', `I was charged twice for ORD-5001, refund please. ${EMAIL}`, { principal: { id: 'user-1', roles: ['customer'] } });
    const result = await run.result({ timeoutMs: 20_000 });
    expect(result.output).toMatch(/refund/i);
    // The run ends before the activation that ended it closes its span: wait until that span is exported.
    await vi.waitFor(async () => {
      await tracing.forceFlush();
      const ended = spans.filter((s) => s.name === 'invoke_agent billing').map((s) => hex(s.spanId));
      const refund = spans.find((s) => s.name === 'execute_tool issue_refund');
      expect(refund && ended).toContain(refund && hex(refund.parentSpanId));
    }, { timeout: 10_000, interval: 50 });
    // The first test's own span is in the export too; the run's are the rest.
    const runSpans = spans.filter((s) => s.name !== 'x');

    const byId = new Map(runSpans.map((s) => [hex(s.spanId), s]));
    const named = (name: string) => runSpans.filter((s) => s.name === name);
    const parentOf = (s: OtlpSpan) => byId.get(hex(s.parentSpanId));

    // One trace for everything the run did, in both workers.
    expect(new Set(runSpans.map((s) => hex(s.traceId))).size).toBe(1);
    const [root] = named('palisade.run');
    expect(root).toBeDefined();
    expect(hex(root!.parentSpanId)).toBe('');
    expect(attrs(root!.attributes)['palisade.run.id']).toBe(run.id);

    const [triage] = named('invoke_agent triage');
    expect(triage && parentOf(triage)).toBe(root);
    const billing = named('invoke_agent billing');
    expect(billing.length).toBeGreaterThan(0);
    // Billing's activation (or activations: it resumes after the delegation) descend from triage's, via the envelope.
    for (const b of billing) expect(parentOf(b)).toBe(triage);
    const fraud = named('invoke_agent fraud_check');
    expect(fraud.length).toBe(1);
    expect(billing).toContain(parentOf(fraud[0]!));
    expect(attrs(fraud[0]!.attributes)).toMatchObject({ 'gen_ai.operation.name': 'invoke_agent', 'gen_ai.agent.name': 'fraud_check', 'palisade.chain': ['triage', 'billing', 'fraud_check'] });

    const [refund] = named('execute_tool issue_refund');
    expect(refund).toBeDefined();
    expect(billing).toContain(parentOf(refund!));
    expect(attrs(refund!.attributes)).toMatchObject({ 'gen_ai.operation.name': 'execute_tool', 'gen_ai.tool.name': 'issue_refund', 'gen_ai.tool.call.id': expect.any(String) });

    const chats = named('chat scripted');
    expect(chats.length).toBeGreaterThanOrEqual(4);
    for (const chat of chats) {
      expect(attrs(chat.attributes)).toMatchObject({
        'gen_ai.operation.name': 'chat',
        'gen_ai.request.model': 'scripted',
        'gen_ai.provider.name': 'palisade.scripted',
        'gen_ai.usage.input_tokens': expect.any(Number),
        'gen_ai.usage.output_tokens': expect.any(Number),
      });
      expect(parentOf(chat)?.name).toMatch(/^invoke_agent /);
    }

    const toolGuards = named('apply_guardrail tool_call');
    expect(toolGuards.length).toBeGreaterThan(0);
    for (const g of toolGuards) {
      expect(parentOf(g)?.name).toMatch(/^execute_tool /);
      const event = g.events?.find((e) => e.name === 'guard.decision');
      expect(event).toBeDefined();
      expect(attrs(event!.attributes)).toMatchObject({ 'palisade.guard.verdict': expect.any(String), 'palisade.guard.risk': expect.any(Number), 'palisade.label.level': expect.any(String) });
    }
    expect(named('apply_guardrail receive').length).toBeGreaterThan(0);

    // Content was captured (opted in), but redacted: the customer's address appears in no attribute or event.
    const lookup = spans.find((sp) => sp.name === 'execute_tool lookup_customer')!;
    const args = lookup.attributes?.find((a) => a.key === 'gen_ai.tool.call.arguments')?.value.stringValue;
    expect(args).toBe('{"query":"[REDACTED:email]"}');
    expect(bodies.join('\n')).not.toContain(EMAIL);
  }, 30_000);

  it('shows an approval wait as a span from the request to the decision, and each rollback step as a span of its own', async () => {
    const backend = new SupportBackend();
    const agents = createSupportAgents({ backend, model: (script) => new ScriptedModel({ script }) });
    const keysDir = await mkdtemp(join(tmpdir(), 'palisade-trace-keys-'));
    await generateKeys(keysDir, agents);
    // Its own prefix: the first test's workers (with other keys) still serve theirs.
    const own = `${prefix}-approval`;
    const rt = new Runtime({ agents, policy: await loadPolicy(SUPPORT_POLICY), keys: await loadKeyring(keysDir, [EDGE, ...agents.map((a) => a.name)]), transport: new BullMQTransport({ connection: REDIS_URL, prefix: own }) });
    workers.push(rt);
    await rt.startWorkers();
    const run = await rt.start('triage', 'Refund my espresso machine, ORD-5004, ada@example.com', { principal: { id: 'user-2', roles: ['customer'] } });
    let approvalId = '';
    for await (const e of run.events({ pollMs: 50 })) {
      if (e.type === 'approval.requested') {
        approvalId = e.approvalId;
        break;
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    await rt.approvals.decide(approvalId, { by: { id: 'fin-lee', roles: ['finance'] }, approve: true });
    await run.result({ timeoutMs: 20_000 });
    const started = await rt.rollback(run.id, { by: 'ops-1' });
    for await (const e of run.events({ pollMs: 50, until: (x) => x.type === 'rollback.completed' && x.rollbackId === started.rollbackId })) void e;
    await tracing.forceFlush();

    const [wait] = spans.filter((s) => s.name === 'palisade.approval issue_refund');
    expect(wait).toBeDefined();
    expect(attrs(wait!.attributes)).toMatchObject({ 'palisade.approval.id': approvalId, 'palisade.approval.outcome': 'approved', 'palisade.approval.by': 'fin-lee' });
    const ms = (t: unknown) => Number(BigInt(String(t)) / 1_000_000n);
    const { startTimeUnixNano, endTimeUnixNano } = wait as unknown as { startTimeUnixNano: string; endTimeUnixNano: string };
    expect(ms(endTimeUnixNano) - ms(startTimeUnixNano)).toBeGreaterThanOrEqual(250);
    const waitParent = spans.find((s) => hex(s.spanId) === hex(wait!.parentSpanId));
    expect(waitParent?.name).toBe('invoke_agent billing');
    const [undo] = spans.filter((s) => s.name === 'palisade.compensate issue_refund');
    expect(attrs(undo!.attributes)).toMatchObject({ 'palisade.rollback.outcome': 'undone', 'palisade.rollback.trigger': 'operator' });
    expect(backend.activeRefunds()).toEqual([]);
  }, 30_000);
});
