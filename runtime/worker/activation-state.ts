import type { Context } from '@opentelemetry/api';
import type { Agent } from '../../agents/agent.js';
import type { Label } from '../../agents/label.js';
import type { ToolCall } from '../../agents/model.js';
import type { Envelope } from '../envelope.js';
import type { RunStatus } from '../stores/run-store.js';
import type { Transport } from '../transports/transport.js';
import type { Task } from '../transports/task.js';
import type { ActivationEvents } from './activation-events.js';
import type { AgentLoopOptions } from './options.js';
import type { Progress } from './progress.js';

/**
 * What the steps of an activation (model turns, tool calls, approvals, handoffs, delegations) read
 * and change: one delivery of one envelope to one agent, and its progress so far.
 */
export interface ActivationState {
  readonly options: AgentLoopOptions;
  readonly task: Task;
  readonly envelope: Envelope;
  readonly agent: Agent;
  /** The envelope's serialised size: a saved activation is it plus the progress since. */
  readonly messageBytes: number;
  /** Whether this delivery took the message's claim: then nothing the message did can be on record yet. */
  readonly firstDelivery: boolean;
  readonly runId: string;
  readonly store: Transport['store'];
  readonly events: ActivationEvents;
  /** The context the activation's child spans start in (a no-op while tracing is off). */
  readonly ctx: Context;
  progress: Progress;
  /** The run's status as the last model turn's write saw it: the next cancellation check need not ask again. */
  statusSeen: RunStatus | undefined;
  /** Adds the answer to one tool call to the conversation. */
  answer(call: ToolCall, content: string, isError?: boolean, label?: Label, flags?: string[]): void;
}
