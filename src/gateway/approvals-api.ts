// Approvals over the API (docs/approvals.md, docs/protocol.md "Approvals"):
//
//   GET  /v1/approvals                   pending approvals (admin token, any role)
//   GET  /v1/approvals/{id}              one session's approval, any state
//   POST /v1/approvals/{id}/approve      {reason?}  (role approver or admin, in a group it names)
//   POST /v1/approvals/{id}/deny         {reason?}
//   GET  /v1/sessions/{id}/approval?wait=N   the job's own wait (session secret, long-poll)
//
// Every handler awaits authorizeOperator, so that an asynchronous operator lookup (SSO) needs
// no change here. The views and the decision itself are in approval-view.ts, which the console
// shares.
import { CiportError } from '../errors/index.js';
import { APPROVAL_WAIT_MAX_MS } from '../session/manager.js';
import { bearer } from '../session/secret.js';
import type { ApiDeps } from './api.js';
import { approvalForJob, approvalOf, approvalView, decideAsOperator } from './approval-view.js';
import { liftRequestDeadline, type Req, type Res, readJsonBody, sendJson } from './http.js';
import { authorizeOperator } from './operators.js';

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
  const found = await approvalOf(deps.manager, id as string);
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
    const result = await decideAsOperator(deps.manager, id as string, operator, decision, body);
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
