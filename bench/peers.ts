/**
 * Peers: Palisade side by side with what users compare it with, on the workload of `workload.ts` (a → b → c,
 * one tool call per agent, then a handoff; a scripted model that answers at once). Every system runs in
 * this process, in interleaved rounds, and shows how many tool calls and model turns it made.
 */
import { randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { Redis } from 'ioredis';
import pg from 'pg';
import { Agent as SdkAgent, Usage, run, setTracingDisabled, tool as sdkTool, type AgentInputItem, type AgentOutputItem, type InputGuardrail, type Model, type ModelRequest, type ModelResponse, type StreamEvent } from '@openai/agents';
import { Command, END, MemorySaver, MessagesAnnotation, START, StateGraph, type BaseCheckpointSaver } from '@langchain/langgraph';
import { PostgresSaver } from '@langchain/langgraph-checkpoint-postgres';
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { tool as langchainTool } from '@langchain/core/tools';
import { defineAgent, defineTool, EmbeddedTransport, loadPolicy, Runtime, ScriptedModel, type Agent } from '../index.js';
import { CHAIN_COMPONENTS, GUARDED_POLICY, guardedRuntime, palisadeHarness, rawBullMQ, type Harness, type ScenarioConfig, type SectionOptions } from './scenarios.js';
import { CHAIN, EXPECTED, REPLY, TOOL_ARGS, TOOLS, WorkCount, nextAgent, toolInput, workPerChain, type ChainAgent, type ToolArgs, type WorkPerChain } from './workload.js';
import { drive } from './drive.js';
import { deleteKeys, info } from './redis-probe.js';
import { fmt, median, round } from './stats.js';

export type PeerId = 'raw' | 'sdk' | 'graph-memory' | 'graph-postgres' | 'embedded' | 'embedded-policy' | 'guarded';

export interface PeerSystem {
  id: PeerId;
  name: string;
  durable: string;
  guarded: string;
  /** The server whose CPU counts with the process's. */
  server?: 'redis' | 'postgres';
}

export const PEERS: readonly PeerSystem[] = [
  { id: 'raw', name: 'raw BullMQ, 3 queues', durable: 'jobs in Redis', guarded: 'no', server: 'redis' },
  { id: 'sdk', name: 'OpenAI Agents SDK (in memory)', durable: 'no', guarded: '1 input guardrail' },
  { id: 'graph-memory', name: 'LangGraph, MemorySaver', durable: 'no', guarded: 'no' },
  { id: 'graph-postgres', name: 'LangGraph, PostgresSaver', durable: 'checkpoint per step', guarded: 'no', server: 'postgres' },
  { id: 'embedded', name: 'Palisade embedded', durable: 'no', guarded: 'no' },
  { id: 'embedded-policy', name: 'Palisade embedded, bench policy', durable: 'no', guarded: 'policy' },
  { id: 'guarded', name: 'Palisade on BullMQ, guarded', durable: 'claim, checkpoint, events per step', guarded: 'keys, policy, audit', server: 'redis' },
];

export interface PeerSample {
  system: PeerId;
  round: number;
  chains: number;
  elapsedMs: number;
  chainsPerSec: number;
  nodeCpuMsPerHop: number;
  /** Of the whole server (Redis: INFO cpu; Postgres: its processes in /proc), other clients included. */
  serverCpuMsPerHop?: number;
  work: WorkPerChain;
}

export interface PeersResult {
  samples: PeerSample[];
  skipped: Array<{ system: PeerId; reason: string }>;
  /** Why Postgres server CPU is not counted, when it is not. */
  postgresCpuNote?: string;
}

const HOPS = CHAIN.length;

/** Raw BullMQ with a tool-call-like step per hop: arguments parsed and validated, the tool run, its JSON result carried on. */
function rawWithTools(config: ScenarioConfig, prefix: string, count: WorkCount): Promise<Harness> {
  const args = JSON.stringify(TOOL_ARGS);
  return rawBullMQ(config, prefix, (hop, data) => {
    const agent = CHAIN[hop]!;
    const result = JSON.stringify(count.tool(agent, toolInput.parse(JSON.parse(args))));
    return { ...data, results: [...(data.results ?? []), result] };
  });
}

/** Palisade's agents for the workload: each with its tool, a scripted model deciding from the conversation. */
function palisadeAgents(count: WorkCount): Agent[] {
  return CHAIN.map((agent) => {
    const to = nextAgent(agent);
    return defineAgent({
      name: agent,
      description: `Hop ${agent}: checks the order with ${TOOLS[agent].name}.`,
      instructions: `Call ${TOOLS[agent].name}, then ${to ? `hand the conversation over to ${to}` : 'answer'}.`,
      model: new ScriptedModel({
        script: (conversation) => {
          const step = count.model(agent, conversation.called(TOOLS[agent].name));
          if (step.kind === 'reply') return step.text;
          return { calls: [step.kind === 'tool' ? { name: step.name, args: step.args } : { name: `transfer_to_${step.to}`, args: { reason: 'next hop' } }] };
        },
      }),
      tools: [defineTool({ ...TOOLS[agent], input: toolInput, effect: 'read', run: (args) => count.tool(agent, args) })],
      handoffs: to ? [to] : [],
    });
  });
}

async function palisadeEmbeddedPeer(config: ScenarioConfig, count: WorkCount, withPolicy: boolean): Promise<Harness> {
  const policy = withPolicy ? await loadPolicy(GUARDED_POLICY) : undefined;
  const runtime = new Runtime({ agents: palisadeAgents(count), policy, transport: new EmbeddedTransport() });
  await runtime.startWorkers({ concurrency: config.concurrency });
  return palisadeHarness(withPolicy ? 'Palisade embedded, policy' : 'Palisade embedded', runtime, config);
}

async function palisadeGuardedPeer(config: ScenarioConfig, prefix: string, keysDir: string, count: WorkCount): Promise<Harness> {
  const runtime = await guardedRuntime(config, prefix, keysDir, CHAIN_COMPONENTS, ['keys', 'policy'], palisadeAgents(count));
  await runtime.startWorkers({ concurrency: config.concurrency });
  return palisadeHarness('Palisade guarded', runtime, config);
}

/** The OpenAI Agents SDK's `Model`, scripted: the agent's tool until its result is in the input, then the handoff or the reply. */
class ScriptedSdkModel implements Model {
  constructor(
    private readonly agent: ChainAgent,
    private readonly count: WorkCount,
  ) {}

  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    const name = TOOLS[this.agent].name;
    const done = typeof request.input !== 'string' && request.input.some((item: AgentInputItem) => item.type === 'function_call_result' && item.name === name);
    const step = this.count.model(this.agent, done);
    const usage = new Usage({ requests: 1 });
    if (step.kind === 'reply') {
      return { usage, output: [{ type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: step.text }] }] };
    }
    const handoff = step.kind === 'handoff' ? request.handoffs.find((h) => h.toolName === `transfer_to_${step.to}`) : undefined;
    if (step.kind === 'handoff' && !handoff) throw new Error(`agent ${this.agent} is offered no handoff to ${step.to}`);
    const call: AgentOutputItem = {
      type: 'function_call',
      callId: `call_${this.agent}_${step.kind}`,
      name: handoff ? handoff.toolName : name,
      arguments: step.kind === 'tool' ? JSON.stringify(step.args) : '{}',
      status: 'completed',
    };
    return { usage, output: [call] };
  }

  // `run()` is never asked to stream here.
  getStreamedResponse(): AsyncIterable<StreamEvent> {
    throw new Error('the scripted model does not stream');
  }
}

/** OpenAI Agents SDK: three Agents with handoffs, one function tool each, one input guardrail on the first; `run()` in memory. */
function openaiAgentsPeer(config: ScenarioConfig, count: WorkCount): Harness {
  // No trace exporter is configured: tracing would only build spans to drop (or try to send them to OpenAI).
  setTracingDisabled(true);
  const injection: InputGuardrail = {
    name: 'injection',
    execute: async ({ input }) => {
      count.guardrail();
      const text = typeof input === 'string' ? input : JSON.stringify(input);
      return { tripwireTriggered: /ignore (all )?previous instructions/i.test(text), outputInfo: null };
    },
  };
  const make = (agent: ChainAgent, handoffs: SdkAgent[]) =>
    new SdkAgent({
      name: agent,
      instructions: `Call ${TOOLS[agent].name}, then ${handoffs.length ? 'hand the conversation over' : 'answer'}.`,
      handoffDescription: `Hop ${agent}.`,
      model: new ScriptedSdkModel(agent, count),
      tools: [sdkTool({ ...TOOLS[agent], parameters: toolInput, execute: (args) => count.tool(agent, args) })],
      handoffs,
      inputGuardrails: agent === 'a' ? [injection] : [],
    });
  const c = make('c', []);
  const b = make('b', [c]);
  const a = make('a', [b]);
  return {
    name: 'OpenAI Agents SDK',
    hops: HOPS,
    async runChain() {
      const result = await run(a, config.payload);
      if (result.finalOutput !== REPLY || result.lastAgent?.name !== 'c') throw new Error(`the SDK run ended with ${result.lastAgent?.name}: ${JSON.stringify(result.finalOutput)}`);
    },
    async close() {},
  };
}

/** LangGraph: a StateGraph of three nodes; each calls its tool (a LangChain tool, as ToolNode would) and hands off with a Command. */
function langGraphPeer(config: ScenarioConfig, count: WorkCount, checkpointer: BaseCheckpointSaver, close: () => Promise<void>): Harness {
  const makeTool = (agent: ChainAgent) => langchainTool((args: ToolArgs) => JSON.stringify(count.tool(agent, args)), { ...TOOLS[agent], schema: toolInput });
  const tools = { a: makeTool('a'), b: makeTool('b'), c: makeTool('c') };
  const toolDone = (messages: readonly BaseMessage[], name: string) => messages.some((m) => ToolMessage.isInstance(m) && m.name === name);
  // The scripted model decides from the conversation, as in the other systems: the tool, then the handoff or the reply.
  const node = (agent: ChainAgent) => async (state: typeof MessagesAnnotation.State) => {
    const added: BaseMessage[] = [];
    for (;;) {
      const step = count.model(agent, toolDone([...state.messages, ...added], TOOLS[agent].name));
      if (step.kind === 'tool') {
        const call = { id: `call_${agent}_tool`, name: step.name, args: step.args };
        added.push(new AIMessage({ content: '', tool_calls: [call] }), await tools[agent].invoke({ ...call, type: 'tool_call' }));
        continue;
      }
      if (step.kind === 'reply') return new Command({ goto: END, update: { messages: [...added, new AIMessage(step.text)] } });
      const id = `call_${agent}_handoff`;
      const name = `transfer_to_${step.to}`;
      added.push(new AIMessage({ content: '', tool_calls: [{ id, name, args: {} }] }), new ToolMessage({ content: `Transferred to ${step.to}`, tool_call_id: id, name }));
      return new Command({ goto: step.to, update: { messages: added } });
    }
  };
  const graph = new StateGraph(MessagesAnnotation)
    .addNode('a', node('a'), { ends: ['b'] })
    .addNode('b', node('b'), { ends: ['c'] })
    .addNode('c', node('c'), { ends: [END] })
    .addEdge(START, 'a')
    .compile({ checkpointer });
  return {
    name: 'LangGraph',
    hops: HOPS,
    async runChain() {
      const state = await graph.invoke({ messages: [new HumanMessage(config.payload)] }, { configurable: { thread_id: randomUUID() } });
      const last = state.messages.at(-1);
      if (last?.content !== REPLY) throw new Error(`the graph ended with ${JSON.stringify(last?.content)}`);
    },
    close,
  };
}

/** A LangGraph harness on PostgresSaver in a fresh schema, dropped on close. */
async function langGraphPostgresPeer(config: ScenarioConfig, postgresUrl: string, schema: string, count: WorkCount): Promise<Harness> {
  // What `PostgresSaver.fromConnString` builds (pg's default pool of 10), with the pool kept to drop the schema.
  const pool = new pg.Pool({ connectionString: postgresUrl });
  const close = async () => {
    try {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    } finally {
      await pool.end();
    }
  };
  const saver = new PostgresSaver(pool, undefined, { schema });
  try {
    await saver.setup();
  } catch (error) {
    // setup() creates the schema first: a failure after that must not leave it behind.
    await close().catch(() => undefined);
    throw error;
  }
  return langGraphPeer(config, count, saver, close);
}

/**
 * Reads the seconds of CPU Postgres's processes used (the postmaster, its live children, the children it
 * reaped) from /proc, or says why it cannot: the server is not on this machine. Throws if Postgres is unreachable.
 */
async function postgresCpuMeter(postgresUrl: string): Promise<{ read: () => Promise<number>; note?: undefined } | { read?: undefined; note: string }> {
  // Fields after the command name in /proc/<pid>/stat: ppid is the 2nd, utime to cstime the 12th to 15th.
  const stat = async (pid: string | number) => {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { command: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')), ppid: Number(fields[1]), own: Number(fields[11]) + Number(fields[12]), reaped: Number(fields[13]) + Number(fields[14]) };
  };
  const client = new pg.Client({ connectionString: postgresUrl, connectionTimeoutMillis: 3000 });
  await client.connect();
  let postmaster: number;
  try {
    const backend = Number((await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid);
    // Read while the connection holds the backend alive; its parent is the postmaster.
    const self = await stat(backend);
    if (self.command !== 'postgres') throw new Error(`process ${backend} is ${self.command}`);
    postmaster = self.ppid;
  } catch (error) {
    return { note: `Postgres server CPU not counted: its backend is not a process on this machine (${(error as Error).message})` };
  } finally {
    await client.end();
  }
  const ticksPerSecond = 100; // USER_HZ, the unit of /proc's times: 100 on Linux's x86 and arm ABIs
  return {
    read: async () => {
      let ticks = (await stat(postmaster)).reaped;
      for (const pid of await readdir('/proc')) {
        if (!/^\d+$/.test(pid)) continue;
        const s = await stat(pid).catch(() => undefined);
        if (s && (Number(pid) === postmaster || s.ppid === postmaster)) ticks += s.own;
      }
      return ticks / ticksPerSecond;
    },
  };
}

export interface PeersOptions extends SectionOptions {
  /** Postgres for LangGraph's checkpointer; the section's prefix is also its schema stem. */
  postgresUrl: string;
}

export async function benchPeers(options: PeersOptions): Promise<PeersResult> {
  const { admin, config, log } = options;
  const skipped: PeersResult['skipped'] = [];
  let postgresCpu: (() => Promise<number>) | undefined;
  let postgresCpuNote: string | undefined;
  try {
    const meter = await postgresCpuMeter(options.postgresUrl);
    postgresCpu = meter.read;
    postgresCpuNote = meter.note;
  } catch (error) {
    skipped.push({ system: 'graph-postgres', reason: `Postgres unreachable at ${options.postgresUrl.replace(/\/\/[^@/]*@/, '//***@')}: ${(error as Error).message}` });
  }
  const systems = PEERS.filter((s) => !skipped.some((k) => k.system === s.id));
  for (const { system, reason } of skipped) log(`  peers: skipping ${system}: ${reason}`);

  const counts = new Map(systems.map((s) => [s.id, new WorkCount()]));
  // Postgres schema names: lowercase letters, digits and underscores only.
  const schemaStem = options.prefix.toLowerCase().replace(/[^a-z0-9]+/g, '_');
  const open = async (system: PeerId, tag: string): Promise<{ harness: Harness; prefix?: string }> => {
    const count = counts.get(system)!;
    const prefix = `${options.prefix}-${tag}-${system}`;
    switch (system) {
      case 'raw':
        return { harness: await options.register(await rawWithTools(config, prefix, count)), prefix };
      case 'guarded':
        return { harness: await options.register(await palisadeGuardedPeer(config, prefix, options.keysDir, count)), prefix };
      case 'sdk':
        return { harness: await options.register(openaiAgentsPeer(config, count)) };
      case 'graph-memory':
        return { harness: await options.register(langGraphPeer(config, count, new MemorySaver(), async () => {})) };
      case 'graph-postgres':
        return { harness: await options.register(await langGraphPostgresPeer(config, options.postgresUrl, `${schemaStem}_${tag}`, count)) };
      case 'embedded':
      case 'embedded-policy':
        return { harness: await options.register(await palisadeEmbeddedPeer(config, count, system === 'embedded-policy')) };
    }
  };
  const withHarness = async (system: PeerId, tag: string, body: (harness: Harness) => Promise<void>) => {
    const { harness, prefix } = await open(system, tag);
    try {
      await body(harness);
    } finally {
      await options.close(harness);
      if (prefix) await deleteKeys(admin, prefix);
    }
  };
  const serverCpuSeconds = async (server: PeerSystem['server']): Promise<number | undefined> => {
    if (server === 'redis') {
      const cpu = await info(admin, 'cpu');
      return Number(cpu.used_cpu_user) + Number(cpu.used_cpu_sys);
    }
    return server === 'postgres' ? postgresCpu?.() : undefined;
  };

  // An untimed pass over every system first (JIT), as the main bench does.
  log(`  peers: warm-up pass (${options.warmupPass} chains per system, untimed)…`);
  for (const system of systems) await withHarness(system.id, 'warmup', (harness) => drive(harness, options.warmupPass, options.inflight).then(() => undefined));

  const samples: PeerSample[] = [];
  for (let r = 1; r <= options.rounds; r++) {
    // Alternate the order, so drift on a shared machine does not favour one system.
    const order = r % 2 === 1 ? systems : [...systems].reverse();
    for (const system of order) {
      await withHarness(system.id, `r${r}`, async (harness) => {
        await drive(harness, options.warmup, options.inflight);
        const count = counts.get(system.id)!;
        const work = count.snapshot();
        const serverBefore = await serverCpuSeconds(system.server);
        const cpuBefore = process.cpuUsage();
        const t0 = performance.now();
        await drive(harness, options.chains, options.inflight);
        const elapsedMs = performance.now() - t0;
        const cpu = process.cpuUsage(cpuBefore);
        const serverAfter = await serverCpuSeconds(system.server);
        const hops = options.chains * HOPS;
        const sample: PeerSample = {
          system: system.id,
          round: r,
          chains: options.chains,
          elapsedMs,
          chainsPerSec: (options.chains / elapsedMs) * 1000,
          nodeCpuMsPerHop: (cpu.user + cpu.system) / 1000 / hops,
          work: workPerChain(work, count.snapshot(), options.chains),
        };
        if (serverBefore !== undefined && serverAfter !== undefined) sample.serverCpuMsPerHop = ((serverAfter - serverBefore) * 1000) / hops;
        checkWork(system, sample.work);
        samples.push(sample);
        log(`  peers round ${r} ${system.id.padEnd(15)} ${fmt(sample.chainsPerSec).padStart(6)} chains/s  ${fmt(sample.nodeCpuMsPerHop, 3)} + ${sample.serverCpuMsPerHop === undefined ? '—' : fmt(sample.serverCpuMsPerHop, 3)} CPU ms/hop`);
      });
    }
  }
  return { samples, skipped, ...(postgresCpuNote ? { postgresCpuNote } : {}) };
}

/**
 * Fails the bench if a system did less than the workload asks: a call of each agent's tool and six model
 * turns per chain (a retried job may add some, which the table shows).
 */
function checkWork(system: PeerSystem, work: WorkPerChain): void {
  const problems: string[] = [];
  for (const agent of CHAIN) if (work.toolCallsByAgent[agent] < EXPECTED.toolCallsPerAgent) problems.push(`${work.toolCallsByAgent[agent]} calls of ${TOOLS[agent].name} per chain`);
  // Raw BullMQ has no model: its workers run the tool step directly.
  if (system.id !== 'raw' && work.modelTurns < EXPECTED.modelTurns) problems.push(`${work.modelTurns} model turns per chain`);
  if (system.id === 'sdk' && work.guardrails < 1) problems.push(`${work.guardrails} guardrail checks per chain`);
  if (problems.length) throw new Error(`peers: ${system.name} did not run the workload: ${problems.join(', ')}`);
}

/** Per system: medians over rounds, and the median of per-round throughput ratios against each other system. */
export function summarizePeers(result: PeersResult) {
  const rounds = [...new Set(result.samples.map((s) => s.round))];
  const of = (id: PeerId) => result.samples.filter((s) => s.system === id);
  const ratio = (a: PeerId, b: PeerId) =>
    median(
      rounds.flatMap((r) => {
        const x = of(a).find((s) => s.round === r);
        const y = of(b).find((s) => s.round === r);
        return x && y ? [x.chainsPerSec / y.chainsPerSec] : [];
      }),
    );
  const measured = PEERS.filter((p) => of(p.id).length > 0);
  return measured.map((p) => {
    const samples = of(p.id);
    const server = samples.map((s) => s.serverCpuMsPerHop).filter((v): v is number => v !== undefined);
    return {
      ...p,
      chainsPerSec: round(median(samples.map((s) => s.chainsPerSec)), 1),
      nodeCpuMsPerHop: round(median(samples.map((s) => s.nodeCpuMsPerHop)), 4),
      serverCpuMsPerHop: server.length ? round(median(server), 4) : undefined,
      totalCpuMsPerHop: round(median(samples.map((s) => s.nodeCpuMsPerHop + (s.serverCpuMsPerHop ?? 0))), 4),
      toolCallsPerChain: round(median(samples.map((s) => s.work.toolCalls)), 3),
      modelTurnsPerChain: round(median(samples.map((s) => s.work.modelTurns)), 3),
      /** Median over rounds of (this system's chains/s ÷ the other's, measured in the same round). */
      ratios: Object.fromEntries(measured.map((q) => [q.id, round(ratio(p.id, q.id), 3)])) as Partial<Record<PeerId, number>>,
    };
  });
}
export type PeersSummary = ReturnType<typeof summarizePeers>;
