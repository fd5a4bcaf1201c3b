import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ScriptedModel, type Script } from '../agents/providers/scripted.js';
import * as scripts from '../examples/support/scripts.js';
import { createSupportAgents } from '../examples/support/system.js';
import { loadPolicy } from '../guards/policy/load-policy.js';
import type { CompiledPolicy } from '../guards/policy/policy-pipeline.js';
import { FileAnchorStore } from '../runtime/audit/anchors.js';
import { loadAuditKeys } from '../runtime/audit/audit-keys.js';
import { EDGE, generateKeys, loadKeyring } from '../runtime/identity/keyring.js';
import { Runtime } from '../runtime/runtime.js';
import { AuthConfigSchema, createAuthenticator, hashApiKey } from '../runtime/server/auth.js';
import { createServer } from '../runtime/server/server.js';
import { BullMQTransport } from '../runtime/transports/bullmq-transport.js';
import { runAuditCli } from './support/audit-cli.js';
import { deleteKeys, REDIS_URL, uniquePrefix } from './support/redis.js';

/**
 * The operator console end to end: the edge server and the support example's workers on a real
 * Redis, and a real (headless) Chromium driving the console as customers, an approver and an auditor.
 */

const CHROMIUM = '/usr/bin/chromium';
const JAEGER = 'http://jaeger.test:16686';
const XSS = '<img src=x onerror=window.__xss=1>';

/** Debian's chromium, installed on first use (a slow download, hence the long hook timeout). */
function ensureChromium(): void {
  if (existsSync(CHROMIUM)) return;
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    execFileSync('apt-get', ['install', '-y', 'chromium'], { env, stdio: 'ignore' });
  } catch {
    // A fresh image has no package lists yet.
    execFileSync('apt-get', ['update'], { env, stdio: 'ignore' });
    execFileSync('apt-get', ['install', '-y', 'chromium'], { env, stdio: 'ignore' });
  }
}

/**
 * Billing as a model that copies the customer's stated reason into the refund's arguments: the
 * arguments an approver reads are then attacker-influenced, as with a real model.
 */
const billingCopyingReason: Script = (c) => {
  const reply = scripts.billing(c);
  const reason = /Reason: (.+)$/.exec(c.lastUser)?.[1];
  if (typeof reply === 'string' || !reason) return reply;
  return { ...reply, calls: reply.calls?.map((call) => (call.name === 'issue_refund' ? { ...call, args: { ...call.args, reason } } : call)) };
};
const model = (script: Script) => new ScriptedModel({ script: script === scripts.billing ? billingCopyingReason : script });

const key = (): string => randomBytes(24).toString('hex');
const users = {
  ada: { key: key(), principal: { id: 'ada', roles: ['customer'] } },
  grace: { key: key(), principal: { id: 'grace', roles: ['customer'] } },
  finance: { key: key(), principal: { id: 'fin-lee', roles: ['finance'] } },
  auditor: { key: key(), principal: { id: 'ops-kim', roles: ['auditor'] } },
};

/** Waits for a condition to hold (a generous cap only turns a hang into a failure that says what it waited for). */
async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, capMs = 60_000): Promise<T> {
  const give = Date.now() + capMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > give) throw new Error(`still waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('operator console in a browser', () => {
  const prefix = uniquePrefix('console');
  let keysDir: string;
  let workers: Runtime;
  let app: FastifyInstance;
  let base: string;
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    ensureChromium();
    keysDir = await mkdtemp(join(tmpdir(), 'palisade-console-'));
    const agents = createSupportAgents({ model });
    await generateKeys(keysDir, agents);
    expect((await runAuditCli(['keys', '--keys', keysDir])).code).toBe(0);
    const publicKeys = await loadAuditKeys(join(keysDir, 'audit.pub.json'));
    const loaded = await loadPolicy('examples/support/policy.yaml');
    // The support policy plus an operations role that may read every run and the audit log.
    const policy: CompiledPolicy = { ...loaded, policy: { ...loaded.policy, roles: { ...loaded.policy.roles, auditor: ['read:runs', 'read:audit'] } } };
    workers = new Runtime({
      agents,
      policy,
      keys: await loadKeyring(keysDir, [EDGE, ...agents.map((a) => a.name)]),
      transport: new BullMQTransport({ connection: REDIS_URL, prefix }),
    });
    await workers.startWorkers();
    const auth = AuthConfigSchema.parse({ apiKeys: Object.values(users).map((u) => ({ sha256: hashApiKey(u.key), principal: u.principal })) });
    app = await createServer({
      authenticate: createAuthenticator(auth),
      redisUrl: REDIS_URL,
      prefix,
      policy,
      agents: createSupportAgents(),
      keys: await loadKeyring(keysDir, [EDGE]),
      auditKeys: publicKeys,
      anchors: { store: new FileAnchorStore(join(keysDir, 'anchors.jsonl')), keys: publicKeys.anchorKeys },
      jaegerUrl: JAEGER,
      eventPollMs: 200,
      // The test tampers with the log and looks again at once.
      auditVerifyReuseMs: 0,
    });
    base = await app.listen({ host: '127.0.0.1', port: 0 });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }, 900_000);

  afterAll(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await app?.close();
    await workers?.close({ timeoutMs: 1000 });
    await deleteKeys(prefix);
    if (keysDir) await rm(keysDir, { recursive: true, force: true });
  }, 60_000);

  /** A fresh browser session signed in with `user`'s API key. */
  async function signIn(user: (typeof users)[keyof typeof users]): Promise<Page> {
    const context = await browser.newContext();
    contexts.push(context);
    // Outside the page's CSP (injected by the browser): records any attempt to run injected markup.
    await context.addInitScript(
      "window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));",
    );
    const page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${base}/`);
    await page.getByLabel('API key or token').fill(user.key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await eventually(`${user.principal.id} to be signed in`, async () => (await page.getByTestId('whoami').textContent()) === user.principal.id);
    return page;
  }

  const go = (page: Page, hash: string): Promise<unknown> => page.evaluate(`location.hash = ${JSON.stringify(hash)}`);
  const textOf = async (page: Page, testid: string): Promise<string> => (await page.getByTestId(testid).first().textContent()) ?? '';

  async function startRun(user: (typeof users)[keyof typeof users], input: string): Promise<string> {
    const response = await fetch(`${base}/v1/runs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${user.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ agent: 'triage', input }),
    });
    expect(response.status).toBe(202);
    return ((await response.json()) as { runId: string }).runId;
  }

  /** The approver's card for the run's pending request, once the periodic refresh has shown it. */
  async function cardFor(page: Page, runId: string) {
    const card = page.getByTestId('approval').filter({ has: page.locator(`a[href="#/runs/${runId}"]`) });
    await card.waitFor({ timeout: 60_000 });
    return card;
  }

  async function waitForStatus(page: Page, status: string): Promise<void> {
    await eventually(`the run page to show ${status}`, async () => (await textOf(page, 'run-status')) === status);
  }

  it('serves only its own files, with a strict Content-Security-Policy, and sends / to the console', async () => {
    const root = await fetch(`${base}/`, { redirect: 'manual' });
    expect(root.status).toBe(302);
    expect(root.headers.get('location')).toBe('/console/');
    for (const [path, type] of [
      ['/console/', 'text/html'],
      ['/console/console.js', 'text/javascript'],
      ['/console/console.css', 'text/css'],
    ] as const) {
      const response = await fetch(`${base}${path}`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toContain(type);
      const csp = response.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'self'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toContain('unsafe-inline');
    }
    const html = await (await fetch(`${base}/console/`)).text();
    // No inline script or style, nothing from elsewhere.
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)/);
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=|https?:\/\//);
    // Sent as written (fetch would normalise the dots away before the server saw them).
    for (const url of ['/console/../package.json', '/console/%2e%2e/package.json', '/console/..%2fpackage.json', '/console/console.ts', '/console/x']) {
      expect((await app.inject({ method: 'GET', url })).statusCode, url).toBe(404);
    }
  });

  it('refuses an unknown key at sign-in and keeps nothing of it', { timeout: 180_000 }, async () => {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(`${base}/`);
    expect(page.url()).toBe(`${base}/console/`);
    await page.getByLabel('API key or token').fill('not-a-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('sign-in-error').waitFor();
    expect(await textOf(page, 'sign-in-error')).toBe('Not signed in: unknown API key (invalid_credentials)');
    expect(await page.evaluate('sessionStorage.length')).toBe(0);
    expect(await page.getByTestId('nav-approvals').isVisible()).toBe(false);
  });

  it('a refund over $150 waits for finance: the customer is refused, the approver approves, the run page follows it to completion', { timeout: 180_000 }, async () => {
    const runId = await startRun(users.ada, 'My espresso machine arrived broken, order ORD-5004, please refund it. E-mail: ada@example.com');

    // The customer watches their run; it stops at the approval.
    const watcher = await signIn(users.ada);
    expect(await textOf(watcher, 'whoami-roles')).toContain('customer');
    await go(watcher, `#/runs/${runId}`);
    await watcher.getByTestId('run-waiting-link').waitFor({ timeout: 60_000 });
    expect(await textOf(watcher, 'run-status')).toBe('running');
    const requestHash = (await watcher.getByTestId('run-waiting-link').getAttribute('href'))!;

    // The customer may see the request but not decide it: the API's refusal is shown.
    const customer = await signIn(users.ada);
    await go(customer, requestHash);
    await customer.getByTestId('approval-may-not').waitFor();
    await customer.getByTestId('approve').click();
    await eventually('the refusal', async () => (await customer.getByTestId('approval-error').isVisible()) && customer.getByTestId('approval-error'));
    expect(await textOf(customer, 'approval-error')).toMatch(/Refused: 'ada' lacks the permission approve:tool:issue_refund \(forbidden\)/);

    // The approver sees what they are asked to decide.
    const approver = await signIn(users.finance);
    expect(await approver.getByTestId('nav-jaeger').getAttribute('href')).toBe(`${JAEGER}/`);
    const card = await cardFor(approver, runId);
    const field = async (testid: string) => (await card.getByTestId(testid).textContent()) ?? '';
    expect(await field('approval-agent')).toBe('billing');
    expect(await field('approval-action')).toBe('tool issue_refund');
    expect(JSON.parse(await field('approval-arguments'))).toEqual({ orderId: 'ORD-5004', amountCents: 34900, reason: 'customer request' });
    // Where each value came from, and that the server verified the request (no banner).
    expect(await card.getByTestId('approval-source').allTextContents()).toEqual([
      "orderId: ORD-5004 — from the user's request",
      'amountCents: 34900 — from a trusted tool (lookup_order)',
      'reason: customer request — from no source: the model wrote it',
    ]);
    expect(await card.getByTestId('approval-verification').isVisible()).toBe(false);
    expect(await field('approval-reasons')).toMatch(/refund-approval/);
    expect(await field('approval-risk')).toBe('0.70');
    expect(await field('approval-label')).toMatch(/confidential · .*pii/);
    expect(await card.getByTestId('approval-chain').locator('li').allTextContents()).toEqual(['triage', 'billing']);
    expect(await field('approval-principal')).toBe('ada (roles: customer)');
    expect(await field('approval-deadline')).toMatch(/in 1[45] min/);

    await card.getByLabel('Reason (optional)').fill('photo of the damage checked');
    await card.getByRole('button', { name: 'Approve' }).click();
    const result = approver.getByTestId('decision-result');
    await result.waitFor();
    expect(await result.getAttribute('data-status')).toBe('approved');
    expect(await result.textContent()).toMatch(/tool issue_refund for run .*: approved by fin-lee \(“photo of the damage checked”\)/);
    expect(await approver.getByTestId('approval').filter({ has: approver.locator(`a[href="#/runs/${runId}"]`) }).count()).toBe(0);

    // The customer's run page, open all along, follows the run to its end.
    await waitForStatus(watcher, 'completed');
    expect(await textOf(watcher, 'run-output')).toMatch(/refund RF-\d+ of 349\.00/);
    expect(await watcher.getByTestId('run-pending').locator('li').count()).toBe(0);
    const graph = watcher.getByTestId('chain-graph');
    const nodes = await graph.getByTestId('chain-node').evaluateAll((els) => els.map((el) => el.getAttribute('data-agent')));
    expect(nodes).toEqual(['triage', 'billing', 'fraud_check']);
    const edges = await graph.getByTestId('chain-edge').evaluateAll((els) => els.map((el) => `${el.getAttribute('data-from')} ${el.getAttribute('data-type')} ${el.getAttribute('data-to')}`));
    expect(edges).toEqual(['triage handoff billing', 'billing delegation fraud_check']);
    expect(await graph.getByTestId('chain-edge').first().textContent()).toContain('hands off · allow');
    const billingDecisions = await graph.locator('[data-agent="billing"] [data-testid="chain-decision"]').allTextContents();
    expect(billingDecisions).toContain('tool_call issue_refund: escalate');
    expect(await graph.locator('[data-agent="billing"] [data-testid="chain-node-label"]').textContent()).toMatch(/confidential/);
    expect(await watcher.getByTestId('decision-row').filter({ hasText: 'escalate' }).count()).toBeGreaterThan(0);
    expect(await textOf(watcher, 'run-approvals')).toMatch(/issue_refund: approved by fin-lee/);
    expect(await watcher.getByTestId('label-entry').count()).toBeGreaterThan(0);
    expect(await watcher.getByTestId('trace-link').getAttribute('href')).toMatch(new RegExp(`^${JAEGER}/search\\?service=`));
    expect(await watcher.getByTestId('timeline-event').last().getAttribute('data-type')).toBe('run.completed');
  });

  it('a request altered in Redis is flagged on the approver’s card, its content withheld, and cannot be decided', { timeout: 180_000 }, async () => {
    const runId = await startRun(users.grace, 'Refund my standing desk, order ORD-5005. My e-mail is grace@example.com');
    const approver = await signIn(users.finance);
    const card = await cardFor(approver, runId);
    const id = (await card.getAttribute('data-approval-id'))!;
    // Someone with Redis access makes the refund look smaller.
    const redis = new Redis(REDIS_URL);
    const key = `${prefix}:approval:${id}`;
    const original = (await redis.get(key))!;
    await redis.set(key, JSON.stringify({ ...JSON.parse(original), arguments: '{"orderId":"ORD-5005","amountCents":100}', risk: 0.05 }), 'KEEPTTL');
    const banner = card.getByTestId('approval-verification');
    await eventually('the refresh to flag the request', async () => (await banner.getAttribute('data-status')) === 'refused');
    expect(await banner.textContent()).toMatch(/^This request failed verification and cannot be decided: the approval request is not authentic/);
    expect(await card.getByTestId('approval-arguments').textContent()).toBe('(withheld)');
    expect(await card.getByRole('button', { name: 'Approve' }).isVisible()).toBe(false);
    // Put back, it is the agent's again, and the approver denies it.
    await redis.set(key, original, 'KEEPTTL');
    redis.disconnect();
    await eventually('the refresh to clear the flag', async () => (await banner.getAttribute('data-status')) === 'verified');
    await card.getByRole('button', { name: 'Deny' }).click();
    await approver.getByTestId('decision-result').waitFor();
  });

  it('a denial, with attacker-written text in the arguments and the input shown as text and never run', { timeout: 180_000 }, async () => {
    const runId = await startRun(users.grace, `Refund my standing desk, order ORD-5005. My e-mail is grace@example.com. Reason: ${XSS}`);
    const approver = await signIn(users.finance);
    const card = await cardFor(approver, runId);
    expect(JSON.parse((await card.getByTestId('approval-arguments').textContent())!)).toMatchObject({ orderId: 'ORD-5005', reason: XSS });
    await card.getByLabel('Reason (optional)').fill('outside the 30-day return window');
    await card.getByRole('button', { name: 'Deny' }).click();
    const result = approver.getByTestId('decision-result');
    await result.waitFor();
    expect(await result.getAttribute('data-status')).toBe('denied');
    expect(await result.textContent()).toMatch(/denied by fin-lee/);

    const owner = await signIn(users.grace);
    await go(owner, `#/runs/${runId}`);
    await waitForStatus(owner, 'completed');
    expect(await textOf(owner, 'run-output')).toMatch(/not approved: denied by fin-lee: outside the 30-day return window/);
    expect(await textOf(owner, 'run-input')).toContain(XSS);
    expect(await owner.getByTestId('timeline-event').filter({ hasText: XSS }).count()).toBeGreaterThan(0);

    for (const page of [approver, owner]) {
      expect(await page.locator('#view img').count()).toBe(0);
      expect(await page.evaluate('window.__xss')).toBeUndefined();
      expect(await page.evaluate('window.__violations')).toEqual([]);
    }
  });

  it('audit: an operator sees every run and the audit log with its verification; others are told they may not', { timeout: 180_000 }, async () => {
    const operator = await signIn(users.auditor);
    await go(operator, '#/runs');
    await eventually('both runs in the list', async () => (await operator.getByTestId('run-row').count()) >= 2);
    const runId = (await operator.getByTestId('run-row').filter({ hasText: 'ada' }).first().getAttribute('data-run-id'))!;

    await go(operator, `#/runs/${runId}`);
    await waitForStatus(operator, 'completed');
    // The operator's periodic anchor (palisade audit anchor) pins the log's end outside Redis.
    expect((await runAuditCli(['anchor', '--keys', keysDir, '--anchors', join(keysDir, 'anchors.jsonl'), '--prefix', prefix])).code).toBe(0);
    await operator.getByTestId('run-audit-link').click();
    const banner = operator.getByTestId('audit-verification');
    await eventually('the verification', async () => (await banner.getAttribute('data-ok')) !== null);
    expect(await banner.getAttribute('data-ok')).toBe('true');
    expect(await banner.textContent()).toMatch(/✓ Verified: every record is signed by its writer and the chain is intact up to the latest anchor\. The whole log was checked: \d+ entries, \d+ authenticated by their writer, head at #\d+, anchored at #\d+ .* \(verified\), \d+ since\./);
    const actions = await operator.getByTestId('audit-entry').locator('td:nth-child(8)').allTextContents();
    expect(actions).toEqual(expect.arrayContaining(['run.started', 'approval.requested', 'approval.decided', 'tool.executed', 'run.completed']));
    expect(await operator.getByTestId('audit-run').inputValue()).toBe(runId);

    // A record removed behind the log's back: the console says so, with the place.
    const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    try {
      expect(await redis.xdel(`${prefix}:audit`, '2-0')).toBe(1);
    } finally {
      redis.disconnect();
    }
    await operator.getByTestId('audit-load').click();
    await eventually('the problems', async () => (await banner.getAttribute('data-ok')) === 'false');
    expect(await textOf(operator, 'audit-problems-title')).toMatch(/✗ Problems found: \d+ problems?/);
    expect(await textOf(operator, 'audit-problems')).toMatch(/#2 deleted/);

    const approver = await signIn(users.finance);
    await go(approver, '#/audit');
    await eventually('the refusal', async () => /may not read the audit log/.test(await textOf(approver, 'audit-verification')));

    await operator.getByTestId('sign-out').click();
    await operator.getByLabel('API key or token').waitFor();
    expect(await operator.evaluate('sessionStorage.length')).toBe(0);
    expect(pageErrors).toEqual([]);
  });
});
