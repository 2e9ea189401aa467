// Approvals in the store (migration 0010; docs/approvals.md): the approval columns of a session
// row, the `session_approvals` votes, and the one transaction that decides. Used by KyselyStore,
// which hands in its audit append and notification; the same SQL runs on both engines.
//
// The decision is serialised per session by a conditional UPDATE that touches nothing
// (`set approval_state = 'pending' … where approval_state = 'pending' and state = 'active'`):
// it takes the row lock (PostgreSQL re-checks the condition after waiting for another
// decider's commit; SQLite's BEGIN IMMEDIATE already excludes every other writer), so each
// decider reads the votes committed before it, and one denial or the last needed approval
// changes the row that every later decider then finds not pending.
import type { Kysely, Selectable } from 'kysely';
import type { AuditEvent, AuditEventInput } from '../audit/events.js';
import { CiportError } from '../errors/index.js';
import type { JobUser } from '../identity/job-user.js';
import { type ApprovalRequirement, type ApprovalVote, tallyApprovals } from '../policy/approval.js';
import type { Database, SessionsTable } from './schema.js';
import { toInt } from './schema.js';
import type { ApprovalEventsFor, ApprovalOutcome, SessionApproval, SessionRecord } from './types.js';

/** The approval columns of a new session row. */
export function approvalColumns(approval: SessionApproval | null | undefined): {
  approval: string | null;
  approval_state: string | null;
  approved_at: number | null;
} {
  if (!approval) return { approval: null, approval_state: null, approved_at: null };
  if (approval.state !== 'pending' || !Number.isSafeInteger(approval.deadline)) {
    throw new CiportError('CIPORT_E_INTERNAL', 'a new session can only be pending approval');
  }
  const { state: _state, approvedAt: _at, ...terms } = approval;
  return { approval: JSON.stringify(terms), approval_state: 'pending', approved_at: null };
}

/** The approval of a stored row, or null (none needed, or unreadable terms: treated as none). */
export function readApproval(
  row: Pick<Selectable<SessionsTable>, 'approval' | 'approval_state' | 'approved_at'>,
): SessionApproval | null {
  if (!row.approval) return null;
  let terms: Partial<SessionApproval>;
  try {
    terms = JSON.parse(row.approval) as Partial<SessionApproval>;
  } catch {
    terms = {};
  }
  const requirements = Array.isArray(terms.requirements) ? terms.requirements.filter(isRequirement) : [];
  return {
    // Anything but `approved` is pending: an unreadable state never unlocks a session.
    state: row.approval_state === 'approved' ? 'approved' : 'pending',
    requirements,
    deadline: Number(terms.deadline ?? 0),
    requestedAt: Number(terms.requestedAt ?? 0),
    ttlMs: Number(terms.ttlMs ?? 0),
    requester: jobUser(terms.requester),
    approvedAt: row.approved_at === null ? null : toInt(row.approved_at),
  };
}

function isRequirement(r: unknown): r is ApprovalRequirement {
  const v = r as Partial<ApprovalRequirement> | null;
  return (
    typeof v?.rule === 'string' &&
    Array.isArray(v.groups) &&
    v.groups.every((g) => typeof g === 'string') &&
    typeof v.count === 'number'
  );
}

function jobUser(value: unknown): JobUser {
  const v = (value ?? {}) as Record<string, unknown>;
  const s = (x: unknown) => (typeof x === 'string' ? x : null);
  return { login: s(v.login), email: s(v.email), id: s(v.id), issuer: s(v.issuer) };
}

/** The votes of the given sessions, in decision order. */
export async function approvalVotes(
  db: Kysely<Database>,
  sessionIds: readonly string[],
): Promise<Map<string, ApprovalVote[]>> {
  const out = new Map<string, ApprovalVote[]>();
  const ids = [...new Set(sessionIds)];
  // Bounded IN lists: PostgreSQL and SQLite both cap bound parameters.
  for (let i = 0; i < ids.length; i += 500) {
    const rows = await db
      .selectFrom('session_approvals')
      .selectAll()
      .where('session_id', 'in', ids.slice(i, i + 500))
      .orderBy('at', 'asc')
      .orderBy('operator', 'asc')
      .execute();
    for (const row of rows) {
      const list = out.get(row.session_id) ?? [];
      list.push(toVote(row));
      out.set(row.session_id, list);
    }
  }
  return out;
}

function toVote(row: {
  operator: string;
  decision: string;
  at: number | string | bigint;
  note: string | null;
  groups: string;
}): ApprovalVote {
  let groups: unknown;
  try {
    groups = JSON.parse(row.groups);
  } catch {
    groups = [];
  }
  return {
    by: row.operator,
    decision: row.decision === 'deny' ? 'deny' : 'approve',
    at: toInt(row.at),
    note: row.note,
    groups: Array.isArray(groups) ? groups.filter((g): g is string => typeof g === 'string') : [],
  };
}

/** What decideApproval needs of the store around it. */
export interface DecideDeps {
  toSession(row: Selectable<SessionsTable>): SessionRecord;
  /** Chain `events` in the transaction (the store's audit append). */
  append(trx: Kysely<Database>, events: AuditEventInput[], at: number): Promise<AuditEvent[]>;
  /** NOTIFY that the session ended (PostgreSQL). */
  notifyEnded(trx: Kysely<Database>, id: string): Promise<void>;
}

/** The decision transaction (see the file comment and ApprovalStore.decideApproval). */
export async function decideApproval(
  trx: Kysely<Database>,
  deps: DecideDeps,
  id: string,
  vote: ApprovalVote,
  events: ApprovalEventsFor,
): Promise<ApprovalOutcome> {
  const locked = await trx
    .updateTable('sessions')
    .set({ approval_state: 'pending' })
    .where('id', '=', id)
    .where('state', '=', 'active')
    .where('approval_state', '=', 'pending')
    .returningAll()
    .executeTakeFirst();
  const votesOf = async () => (await approvalVotes(trx, [id])).get(id) ?? [];
  if (!locked) {
    const row = await trx.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst();
    return row
      ? { outcome: 'refused', session: deps.toSession(row), votes: await votesOf() }
      : { outcome: 'unknown' };
  }
  const current = deps.toSession(locked);
  const approval = current.approval as SessionApproval;
  const before = await votesOf();
  // Past its deadline, or its client stopped waiting (lease): the sweep ends it; nobody decides.
  if (current.expiresAt <= vote.at || current.leaseExpiresAt <= vote.at) {
    return { outcome: 'refused', session: current, votes: before };
  }
  if (vote.decision === 'approve' && before.some((v) => v.by === vote.by && v.decision === 'approve')) {
    return {
      outcome: 'repeated',
      session: current,
      votes: before,
      tally: tallyApprovals(approval.requirements, before),
    };
  }
  await trx
    .insertInto('session_approvals')
    .values({
      session_id: id,
      operator: vote.by,
      decision: vote.decision,
      at: vote.at,
      note: vote.note,
      groups: JSON.stringify(vote.groups),
    })
    // Only a denial can meet an earlier vote of the same operator (their approval): it replaces it.
    .onConflict((oc) =>
      oc.columns(['session_id', 'operator']).doUpdateSet({
        decision: vote.decision,
        at: vote.at,
        note: vote.note,
        groups: JSON.stringify(vote.groups),
      }),
    )
    .execute();
  const votes = [...before.filter((v) => v.by !== vote.by), vote];
  const tally = tallyApprovals(approval.requirements, votes);
  if (vote.decision === 'deny') {
    const row = await trx
      .updateTable('sessions')
      .set({
        state: 'ended',
        end_reason: 'approval_denied',
        ended_at: vote.at,
        ended_by: vote.by,
        end_note: vote.note,
      })
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow();
    const session = deps.toSession(row);
    const written = await deps.append(trx, [events.denied(session, tally), events.ended(session)], vote.at);
    await deps.notifyEnded(trx, id);
    return { outcome: 'denied', session, votes, tally, events: written };
  }
  if (!tally.met) {
    const written = await deps.append(trx, [events.granted(current, tally)], vote.at);
    return { outcome: 'counted', session: current, votes, tally, events: written };
  }
  const row = await trx
    .updateTable('sessions')
    .set({ approval_state: 'approved', approved_at: vote.at, expires_at: vote.at + approval.ttlMs })
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirstOrThrow();
  const session = deps.toSession(row);
  const written = await deps.append(
    trx,
    [events.granted(session, tally), events.opened(session, tally)],
    vote.at,
  );
  return { outcome: 'approved', session, votes, tally, events: written };
}
