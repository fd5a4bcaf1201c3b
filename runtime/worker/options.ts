import type { Agent } from '../../agents/agent.js';
import type { Label } from '../../agents/label.js';
import type { Principal } from '../../agents/principal.js';
import type { GuardPipeline } from '../../guards/guard-event.js';
import type { AuditSink } from '../audit/audit-trail.js';
import type { RollbackTrigger } from '../events.js';
import type { EnvelopeAuth } from '../identity/envelope-auth.js';
import type { Compensator } from '../rollback.js';
import type { Transport } from '../transports/transport.js';

export interface AgentLoopOptions {
  agents: ReadonlyMap<string, Agent>;
  transport: Transport;
  pipeline: GuardPipeline;
  /** Serialized job data above this size is refused before anything runs. */
  maxMessageBytes: number;
  /** Authenticates envelopes, checkpoints and answers; without it nothing is authenticated (development only). */
  auth?: EnvelopeAuth;
  /** The audit log each agent writes to, when there is one. */
  audit?: (agent: string) => AuditSink | undefined;
  /** The policy's explicit cap on the label of an agent's answers to its callers. */
  declassify?: (agent: string) => { to: Label; reason: string } | undefined;
  /** How escalations are decided; without it an `escalate` is a block. */
  approvals?: ApprovalSettings;
  /** When the side effects of a run that ends this way are undone. */
  rollbackOn?: ReadonlySet<RollbackTrigger>;
  /** Runs compensation jobs (see `rollback.ts`). */
  compensator?: Compensator;
}

export interface ApprovalSettings {
  timeoutMs: number;
  onDeny: 'continue' | 'fail';
  selfApproval: boolean;
  /** Whether the principal holds a permission under the current policy. */
  permits(principal: Principal, permission: string): boolean;
}
