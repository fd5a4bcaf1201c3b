import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Agent } from '../../agents/agent.js';
import type { Principal } from '../../agents/principal.js';
import type { Guard } from '../../guards/guard.js';
import type { CompiledPolicy } from '../../guards/policy/policy-pipeline.js';
import { EDGE, generateKeys, loadKeyring } from '../../runtime/identity/keyring.js';
import { Runtime } from '../../runtime/runtime.js';
import { AuthConfigSchema, createAuthenticator, hashApiKey } from '../../runtime/server/auth.js';
import { createServer } from '../../runtime/server/server.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { REDIS_URL } from './redis.js';

export interface EdgeDeployment {
  app: FastifyInstance;
  /** The edge's URL, listening on a free port. */
  base: string;
  close: () => Promise<void>;
}

/**
 * A deployment as in production, in one process: fresh key files, every agent's worker on BullMQ
 * holding its own key file only, and the HTTP edge holding edge.json, with an API key per principal.
 */
export async function deployWithEdge(options: { prefix: string; agents: Agent[]; guards: Guard[]; policy: CompiledPolicy; apiKeys: Record<string, Pick<Principal, 'id' | 'roles'>> }): Promise<EdgeDeployment> {
  const { prefix, agents, guards, policy } = options;
  const dir = await mkdtemp(join(tmpdir(), 'palisade-edge-'));
  const keys = join(dir, 'keys');
  await generateKeys(keys, agents);
  const workers = new Runtime({ agents, guards, policy, keys: await loadKeyring(keys, agents.map((a) => a.name)), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
  await workers.startWorkers();
  const { apiKeys } = AuthConfigSchema.parse({ apiKeys: Object.entries(options.apiKeys).map(([key, principal]) => ({ sha256: hashApiKey(key), principal })) });
  const app = await createServer({ authenticate: createAuthenticator({ apiKeys }), redisUrl: REDIS_URL, prefix, policy, keys: await loadKeyring(keys, [EDGE]), eventPollMs: 100, rateLimit: false });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    app,
    base,
    close: async () => {
      await app.close().catch(() => undefined);
      await workers.close({ timeoutMs: 1000 }).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One request to the edge's HTTP API as the holder of an API key, as an outside caller makes it. */
export async function callEdge<T = unknown>(base: string, key: string, method: string, path: string, body?: object): Promise<{ status: number; raw: string; body: T }> {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const raw = await response.text();
  return { status: response.status, raw, body: JSON.parse(raw) as T };
}
