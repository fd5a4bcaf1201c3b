import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SupportBackend } from '../../examples/support/backend.js';
import { createSupportAgents } from '../../examples/support/system.js';
import { loadPolicy, type LoadedPolicy } from '../../guards/policy/load-policy.js';
import type { RunEvent } from '../../runtime/events.js';
import { EDGE, generateKeys, loadKeyring } from '../../runtime/identity/keyring.js';
import { Runtime } from '../../runtime/runtime.js';
import { BullMQTransport } from '../../runtime/transports/bullmq-transport.js';
import { REDIS_URL } from '../support/redis.js';

const AGENTS = ['triage', 'billing', 'fraud_check', 'tech_support'] as const;

export interface SupportWorkers {
  keysDir: string;
  policy: LoadedPolicy;
  /** The edge, holding edge.json only. */
  edge: Runtime;
  /** The run's events once `done` holds for them. */
  eventsWhen(runId: string, done: (events: RunEvent[]) => boolean): Promise<RunEvent[]>;
  close(): Promise<void>;
}

/** The support example as deployed: each agent in its own runtime with its own key file, and an edge apart. */
export async function startSupportWorkers(prefix: string, backend: SupportBackend): Promise<SupportWorkers> {
  const keysDir = await mkdtemp(join(tmpdir(), `palisade-${prefix.replace(/[^\w-]/g, '')}-`));
  const agents = () => createSupportAgents({ backend });
  await generateKeys(keysDir, agents());
  const policy = await loadPolicy('examples/support/policy.yaml');
  const workers: Runtime[] = [];
  for (const name of AGENTS) {
    const rt = new Runtime({ agents: agents(), policy, keys: await loadKeyring(keysDir, [name]), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
    await rt.startWorkers({ agents: [name] });
    workers.push(rt);
  }
  const edge = new Runtime({ policy, keys: await loadKeyring(keysDir, [EDGE]), transport: new BullMQTransport({ connection: REDIS_URL, prefix }) });
  return {
    keysDir,
    policy,
    edge,
    eventsWhen: async (runId, done) => {
      for (;;) {
        const events = (await edge.transport.store.listEvents(runId)).map((e) => e.event);
        if (done(events)) return events;
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    close: async () => {
      await edge.close();
      for (const w of workers) await w.close({ timeoutMs: 2000 });
      await rm(keysDir, { recursive: true, force: true });
    },
  };
}
