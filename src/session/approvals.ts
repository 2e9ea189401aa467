// Approvals as the session manager applies them (docs/approvals.md): who may decide on a pending
// session, why a decision is refused, the audit events of each step, and the error a client
// gets for a session that ended. Pure: the manager does the I/O.

import type { AuditEventInput } from '../audit/events.js';
import { auditEvent } from '../audit/events.js';
import { CiportError } from '../errors/index.js';
import { sameAsJobUser } from '../identity/job-user.js';
import { type Operator, operatorRef } from '../identity/operator.js';
import { type ApprovalTally, type ApprovalVote, groupsThatCount } from '../policy/approval.js';
import type { ApprovalEventsFor, SessionRecord } from '../store/types.js';
import { principalSummary } from './principal.js';

/**
 * Whether `operator` may decide on `record` at all, whatever its state: the session needs
 * approval (409 CIPORT_E_APPROVAL_NOT_PENDING otherwise), the operator belongs to a group its
 * requirements name (403 CIPORT_E_APPROVAL_NOT_IN_GROUP) and is not the job's own user (403
 * CIPORT_E_APPROVAL_SELF). Returns the operator's groups that count. Role checks (approver or
 * admin) come before, in the API (authorizeOperator 'sessions.approve').
 */
export function decisionGate(operator: Operator, record: SessionRecord): string[] {
  const approval = record.approval;
  if (!approval) {
    throw new CiportError(
      'CIPORT_E_APPROVAL_NOT_PENDING',
      `session ${record.id} needs no approval (rule ${record.rule ?? '?'} has no approval:)`,
    );
  }
  const groups = groupsThatCount(operator.groups, approval.requirements);
  const by = operatorRef(operator);
  if (groups.length === 0) {
    const wanted = [...new Set(approval.requirements.flatMap((r) => r.groups))].join(', ');
    const mine = operator.groups?.length
      ? `its groups are ${operator.groups.join(', ')}`
      : 'it is in no group';
    throw new CiportError(
      'CIPORT_E_APPROVAL_NOT_IN_GROUP',
      `${by} may not decide on session ${record.id}: an approver of group ${wanted} is needed, and ${mine}`,
    );
  }
  const same = sameAsJobUser(operator, approval.requester);
  if (same) {
    throw new CiportError(
      'CIPORT_E_APPROVAL_SELF',
      `${by} may not decide on session ${record.id}: its ${same} is the job's own user's, and nobody approves their own request`,
    );
  }
  return groups;
}

/**
 * Why a decision on `record` cannot be made now (a refused decideApproval, or a state seen
 * before it): decided already, timed out, ended otherwise, or past its deadline at `now`.
 */
export function refusal(record: SessionRecord, votes: readonly ApprovalVote[], now: number): CiportError {
  const id = record.id;
  const reason = record.state === 'ended' ? (record.endReason ?? 'ended') : null;
  if (!record.approval) {
    return new CiportError('CIPORT_E_APPROVAL_NOT_PENDING', `session ${id} needs no approval`);
  }
  if (reason === 'approval_denied') {
    return new CiportError(
      'CIPORT_E_APPROVAL_DECIDED',
      `session ${id} was already denied by ${record.endedBy ?? 'an approver'}`,
    );
  }
  if (reason === 'approval_timeout') return timedOut(id);
  if (record.approval.state === 'approved') {
    const by = votes.filter((v) => v.decision === 'approve').map((v) => v.by);
    return new CiportError(
      'CIPORT_E_APPROVAL_DECIDED',
      `session ${id} was already approved${by.length ? ` by ${by.join(', ')}` : ''}`,
    );
  }
  if (reason !== null) {
    return new CiportError('CIPORT_E_SESSION_ENDED', `session ${id} ended (${reason}) before a decision`, {
      details: { end_reason: reason },
    });
  }
  if (now >= record.expiresAt) return timedOut(id);
  // Pending, before its deadline, yet refused: its client stopped heartbeating (lease).
  return new CiportError('CIPORT_E_SESSION_ENDED', `session ${id} is ending: its job stopped waiting`, {
    details: { end_reason: 'lease_expired' },
  });
}

function timedOut(id: string): CiportError {
  return new CiportError('CIPORT_E_APPROVAL_TIMEOUT', `session ${id} was not approved in time`, {
    details: { end_reason: 'approval_timeout' },
  });
}

/**
 * The error for a session that has ended, as the job's client and tunnels get it (410): its end
 * reason, and for a denial who denied it and why.
 */
export function endedError(record: {
  id: string;
  endReason: string | null;
  endedBy?: string | null | undefined;
  endNote?: string | null | undefined;
}): CiportError {
  const reason = record.endReason ?? 'ended';
  const details = { details: { end_reason: reason } };
  if (reason === 'approval_denied') {
    const note = record.endNote ? `: ${record.endNote}` : '';
    return new CiportError(
      'CIPORT_E_APPROVAL_DENIED',
      `session ${record.id} was denied by ${record.endedBy ?? 'an approver'}${note}`,
      details,
    );
  }
  if (reason === 'approval_timeout') {
    return new CiportError(
      'CIPORT_E_APPROVAL_TIMEOUT',
      `session ${record.id} was not approved in time (approval_timeout)`,
      details,
    );
  }
  return new CiportError('CIPORT_E_SESSION_ENDED', `session ${record.id} has ended (${reason})`, details);
}

/** A pending session asked to carry a tunnel (409). */
export function pendingError(record: SessionRecord): CiportError {
  return new CiportError(
    'CIPORT_E_APPROVAL_PENDING',
    `session ${record.id} is waiting for approval; it opens nothing until approved`,
  );
}

// ---- audit events ---------------------------------------------------------------------------

const requirementsData = (record: SessionRecord) =>
  (record.approval?.requirements ?? []).map((r) => ({ rule: r.rule, groups: r.groups, count: r.count }));

/** `approval.requested`, written with the pending session. */
export function requestedEvent(
  record: SessionRecord,
  ttlMs: number,
  gateway: string,
  now: number,
): AuditEventInput {
  return auditEvent(
    'approval.requested',
    {
      session: record.id,
      principal: principalSummary(record.principal),
      targets: record.targets,
      rule: record.rule ?? '',
      requirements: requirementsData(record),
      expires_at: new Date(record.expiresAt).toISOString(),
      ttl_ms: ttlMs,
      gateway,
    },
    now,
  );
}

/** The events of one decision (see ApprovalEventsFor); `vote` is the decider's. */
export function decisionEvents(vote: ApprovalVote, gateway: string): ApprovalEventsFor {
  const base = (s: SessionRecord) => ({
    session: s.id,
    principal: principalSummary(s.principal),
    targets: s.targets,
    rule: s.rule,
  });
  const operator = { by: vote.by, ...(vote.note ? { note: vote.note } : {}) };
  return {
    granted: (s, tally) =>
      auditEvent(
        'approval.granted',
        { ...base(s), groups: vote.groups, approvals: tally.approvers.length, met: tally.met, ...operator },
        vote.at,
      ),
    opened: (s, tally) =>
      auditEvent(
        'session.opened',
        {
          ...base(s),
          rule: s.rule ?? '',
          expires_at: new Date(s.expiresAt).toISOString(),
          ttl_ms: s.approval?.ttlMs ?? Math.max(0, s.expiresAt - vote.at),
          gateway,
          approved_by: tally.approvers,
        },
        vote.at,
      ),
    denied: (s, tally: ApprovalTally) =>
      auditEvent(
        'approval.denied',
        { ...base(s), groups: vote.groups, approved_by: tally.approvers, ...operator },
        vote.at,
      ),
    ended: (s) =>
      auditEvent(
        'session.ended',
        {
          ...base(s),
          reason: 'approval_denied',
          duration_ms: Math.max(0, vote.at - s.createdAt),
          ...operator,
        },
        vote.at,
      ),
  };
}

/** `approval.timed_out`, written before the `session.ended` of an `approval_timeout`. */
export function timedOutEvent(
  record: SessionRecord,
  votes: readonly ApprovalVote[],
  now: number,
): AuditEventInput {
  return auditEvent(
    'approval.timed_out',
    {
      session: record.id,
      principal: principalSummary(record.principal),
      targets: record.targets,
      rule: record.rule,
      requirements: requirementsData(record),
      approved_by: [...new Set(votes.filter((v) => v.decision === 'approve').map((v) => v.by))],
    },
    now,
  );
}
