// Approvals over the API (docs/approvals.md, docs/protocol.md "Approvals"):
//
//   GET  /v1/approvals                   pending approvals (admin token, any role)
//   GET  /v1/approvals/{id}              one session's approval, any state
//   POST /v1/approvals/{id}/approve      {reason?}  (role approver or admin, in a group it names)
//   POST /v1/approvals/{id}/deny         {reason?}
//   GET  /v1/sessions/{id}/approval?wait=N   the job's own wait (session secret, long-poll)
//
// Every handler awaits authorizeOperator, so that an asynchronous operator lookup (SSO) needs
// no change here. The console builds its pages on the same JSON.
import { CiportError } from '../errors/index.js';
import { mayDo, type Operator } from '../identity/operator.js';
import { type ApprovalVote, tallyApprovals } from '../policy/approval.js';
import { decisionGate } from '../session/approvals.js';
import { APPROVAL_WAIT_MAX_MS } from '../session/manager.js';
import { bearer } from '../session/secret.js';
import type { SessionRecord } from '../store/types.js';
import type { ApiDeps } from './api.js';
import { liftRequestDeadline, type Req, type Res, readJsonBody, sendJson } from './http.js';
import { actorOf, authorizeOperator } from './operators.js';

/** Where an approver decides on session `id`: the console's page (docs/approvals.md). */
export function approvalUrl(deps: Pick<ApiDeps, 'publicUrl'>, id: string): string {
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
export function approvalForJob(
  deps: Pick<ApiDeps, 'publicUrl'>,
  record: SessionRecord,
  votes: readonly ApprovalVote[] = [],
) {
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
  deps: Pick<ApiDeps, 'publicUrl'>,
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

export async function listApprovals(deps: ApiDeps, req: Req, res: Res): Promise<void> {
  const operator = await authorizeOperator(deps, req, 'sessions.read');
  const pending = await deps.manager.pendingApprovals();
  sendJson(
    res,
    200,
    pending.map(({ record, votes }) => approvalView(deps, record, votes, operator)),
  );
}

export async function getApproval(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  const operator = await authorizeOperator(deps, req, 'sessions.read');
  const found = await deps.manager.withVotes(id as string);
  if (!found) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
  if (!found.record.approval) {
    throw new CiportError('CIPORT_E_APPROVAL_NOT_PENDING', `session ${id} needs no approval`);
  }
  sendJson(res, 200, approvalView(deps, found.record, found.votes, operator));
}

function decide(decision: 'approve' | 'deny') {
  return async (deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> => {
    const operator = await authorizeOperator(deps, req, 'sessions.approve');
    const body = await readJsonBody(req, deps.config.server.max_body_bytes);
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new CiportError('CIPORT_E_USAGE', 'request body must be a JSON object');
    }
    const unknown = Object.keys(body).filter((k) => k !== 'reason');
    if (unknown.length > 0)
      throw new CiportError('CIPORT_E_USAGE', `unknown field(s): ${unknown.join(', ')}`);
    const actor = actorOf(operator, body);
    const result = await deps.manager.decide(id as string, operator, decision, actor.note);
    sendJson(res, 200, {
      ...approvalView(deps, result.record, result.votes),
      // False when this operator had approved already: an approval counts once.
      counted: result.counted,
    });
  };
}

export const approveSession = decide('approve');
export const denySession = decide('deny');

/**
 * The job's wait: `?wait=N` (seconds, at most APPROVAL_WAIT_MAX_MS) holds the answer until the
 * session is no longer pending or N passed. 200 `{state, expires_at, lease_expires_at,
 * approval}`; an ended session is its 410 (CIPORT_E_APPROVAL_DENIED, …_TIMEOUT, …_ENDED).
 * Waiting does not extend the lease: the client heartbeats meanwhile.
 */
export async function waitApproval(deps: ApiDeps, req: Req, res: Res, [id]: string[]): Promise<void> {
  const secret = bearer(req.headers.authorization);
  if (!secret) {
    throw new CiportError('CIPORT_E_SESSION_UNAUTHORIZED', 'send "Authorization: Bearer <session secret>"');
  }
  const wait = new URL(req.url ?? '/', 'https://gateway.invalid').searchParams.get('wait');
  let waitMs = 0;
  if (wait !== null) {
    if (!/^\d{1,3}$/.test(wait)) throw new CiportError('CIPORT_E_USAGE', '"wait" must be whole seconds');
    waitMs = Math.min(Number(wait) * 1000, APPROVAL_WAIT_MAX_MS);
  }
  // The request is complete (a GET); the wait bounds the answer, not server.request_timeout.
  if (waitMs > 0) liftRequestDeadline(res);
  const gone = new AbortController();
  res.once('close', () => gone.abort());
  const record = await deps.manager.waitForApproval(id as string, secret, waitMs, gone.signal);
  const votes = record.approval ? ((await deps.manager.withVotes(record.id))?.votes ?? []) : [];
  sendJson(res, 200, {
    state: record.approval?.state === 'pending' ? 'pending' : 'active',
    expires_at: new Date(record.expiresAt).toISOString(),
    lease_expires_at: new Date(record.leaseExpiresAt).toISOString(),
    approval: approvalForJob(deps, record, votes),
  });
}
