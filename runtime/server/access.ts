import { permissionsOf, permits } from '../../guards/builtin/context.js';
import type { Policy } from '../../guards/policy/policy.js';
import type { Principal } from '../../agents/principal.js';

/**
 * The edge's own permissions, granted to roles in the policy's `roles` like any other. Everyone
 * may see, follow and cancel their own runs; these reach other principals' runs.
 */
export const EDGE_PERMISSIONS = {
  /** See every run (its record, chain and events), not only one's own. */
  readRuns: 'read:runs',
  /** Cancel runs started by others. */
  cancelRuns: 'cancel:runs',
  /** Order a rollback of a run's side effects (one's own runs too). */
  rollbackRuns: 'rollback:runs',
  /** Query the audit log and its verification. */
  readAudit: 'read:audit',
} as const;

export type EdgePermission = (typeof EDGE_PERMISSIONS)[keyof typeof EDGE_PERMISSIONS];

/** What a caller may do, decided by the policy's roles; a principal with a tenant reaches only its tenant's runs. */
export class Access {
  constructor(private readonly policy: Policy | undefined) {}

  holds(principal: Principal, permission: EdgePermission): boolean {
    return this.policy !== undefined && permits(permissionsOf(this.policy, principal.roles), permission);
  }

  /** Whether `caller` may act on a run of `owner` under `permission` (own runs need none, except where noted). */
  reaches(caller: Principal, owner: Principal, permission: EdgePermission): boolean {
    if (caller.id === owner.id && caller.tenant === owner.tenant && permission !== EDGE_PERMISSIONS.rollbackRuns) return true;
    return this.holds(caller, permission) && (caller.tenant === undefined || caller.tenant === owner.tenant);
  }
}
