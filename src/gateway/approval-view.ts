// How an approval looks to operators and to the waiting job (docs/approvals.md, docs/protocol.md
// "Approvals"), and the one way an operator's decision is taken: the admin API
// (approvals-api.ts) and the console (src/web/pages/approvals.ts) both answer with these views
// and decide through decideAsOperator, so a role, group or self-approval check cannot differ
// between them. A leaf of the gateway: the console may import it.
import { CiportError } from '../errors/index.js';
import { mayDo, type Operator } from '../identity/operator.js';
import { type ApprovalVote, tallyApprovals } from '../policy/approval.js';
import { decisionGate } from '../session/approvals.js';
import type { ApprovalResult, SessionManager } from '../session/manager.js';
import type { SessionRecord } from '../store/types.js';
import { actorOf } from './operators.js';

/** Where the gateway is reached from outside (`public_url`, else the bound URL). */
export interface PublicUrl {
  publicUrl: () => string;
}

/** Where an approver decides on session `id`: the console's page (docs/approvals.md). */
export function approvalUrl(deps: PublicUrl, id: string): string {
  return `${deps.publicUrl().replace(/\/+$/, '')}/ui/approvals/${encodeURIComponent(id)}`;
}

/** `pending`, `approved`, or how a request that was never approved ended. */
export function approvalStatus(record: SessionRecord): string {
  if (record.approval?.state === 'approved') return 'approved';
  if (record.state === 'active') return 'pending';
  if (record.endReason === 'approval_denied') return 'denied';
  if (record.endReason === 'approval_timeout') return 'timed_out';
  return 'withdrawn';
}

/** What the job is told of its own approval: no approver identities, only how far it is. */
export function approvalForJob(deps: PublicUrl, record: SessionRecord, votes: readonly ApprovalVote[] = []) {
  const approval = record.approval;
  if (!approval) return null;
  const tally = tallyApprovals(approval.requirements, votes);
  return {
    status: approvalStatus(record),
    url: approvalUrl(deps, record.id),
    expires_at: new Date(approval.deadline).toISOString(),
    requirements: tally.requirements.map((r) => ({
      rule: r.rule,
      groups: r.groups,
      count: r.count,
      approvals: r.approvers.length,
    })),
  };
}

/**
 * A session's approval as operators see it (list, detail, the answer to a decision). With
 * `operator`: whether they may decide on it, and if not why (`refusal`, a stable code).
 */
export function approvalView(
  deps: PublicUrl,
  record: SessionRecord,
  votes: readonly ApprovalVote[],
  operator?: Operator,
) {
  const approval = record.approval;
  const tally = tallyApprovals(approval?.requirements ?? [], votes);
  let refusal: { code: string; message: string } | null = null;
  if (operator) {
    try {
      if (!mayDo(operator, 'sessions.approve')) {
        throw new CiportError(
          'CIPORT_E_ADMIN_FORBIDDEN',
          'deciding on approvals needs role approver or admin',
        );
      }
      decisionGate(operator, record);
      if (approvalStatus(record) !== 'pending') {
        throw new CiportError(
          'CIPORT_E_APPROVAL_DECIDED',
          `session ${record.id} is ${approvalStatus(record)}`,
        );
      }
    } catch (err) {
      const e = err as CiportError;
      refusal = { code: e.code, message: e.message };
    }
  }
  return {
    session: record.id,
    status: approvalStatus(record),
    url: approvalUrl(deps, record.id),
    requested_at: new Date(approval?.requestedAt ?? record.createdAt).toISOString(),
    expires_at: new Date(approval?.deadline ?? record.expiresAt).toISOString(),
    approved_at: approval?.approvedAt ? new Date(approval.approvedAt).toISOString() : null,
    ttl_ms: approval?.ttlMs ?? null,
    principal: record.principal,
    targets: record.targets,
    rule: record.rule,
    requirements: tally.requirements.map((r) => ({
      rule: r.rule,
      groups: r.groups,
      count: r.count,
      approvers: r.approvers,
    })),
    decisions: votes.map((v) => ({
      by: v.by,
      decision: v.decision,
      at: new Date(v.at).toISOString(),
      note: v.note,
    })),
    ended:
      record.state === 'ended'
        ? {
            reason: record.endReason,
            at: record.endedAt === null ? null : new Date(record.endedAt).toISOString(),
            by: record.endedBy ?? null,
            note: record.endNote ?? null,
          }
        : null,
    ...(operator ? { may_decide: refusal === null, refusal } : {}),
  };
}

/** Session `id` with its votes, if it has an approval (any state); 404 / 409 otherwise. */
export async function approvalOf(
  manager: Pick<SessionManager, 'withVotes'>,
  id: string,
): Promise<{ record: SessionRecord; votes: ApprovalVote[] }> {
  const found = await manager.withVotes(id);
  if (!found) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
  if (!found.record.approval) {
    throw new CiportError('CIPORT_E_APPROVAL_NOT_PENDING', `session ${id} needs no approval`);
  }
  return found;
}

/**
 * `operator` approves or denies session `id` with `body.reason` (escaped and bounded by
 * actorOf). The operator's role (`sessions.approve`) was checked by the caller; the manager
 * checks groups, self-approval and the session's state, and decides in the store.
 */
export function decideAsOperator(
  manager: Pick<SessionManager, 'decide'>,
  id: string,
  operator: Operator,
  decision: 'approve' | 'deny',
  body: unknown,
): Promise<ApprovalResult> {
  const actor = actorOf(operator, body);
  return manager.decide(id, operator, decision, actor.note);
}
