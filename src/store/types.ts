// The store contract the gateway, the CLI and the tests program against. Two engines implement
// it (SQLite, PostgreSQL) with identical behaviour; test/store runs one suite against both.

import type { JsonObject } from '../audit/canonical.js';
import type { ChainRow } from '../audit/chain.js';
import type { AuditEvent, AuditEventInput, SessionEndReason } from '../audit/events.js';
import type { JobUser } from '../identity/job-user.js';
import type { ApprovalRequirement, ApprovalTally, ApprovalVote } from '../policy/approval.js';
import type { AuditSearch, AuditSearchPage, SessionTraffic } from './audit-search.js';
import type { OperatorSessionStore } from './operator-sessions.js';
import type { AuditSinkStore } from './sink-cursors.js';

export type StoreEngine = 'sqlite' | 'postgres';
export type SessionState = 'active' | 'ended';

/** A session as stored. Times are epoch milliseconds. */
export interface SessionRecord {
  id: string;
  /** hex SHA-256 of the session secret; the secret itself is never stored. */
  secretHash: string;
  issuer: string;
  subject: string;
  /** The normalised principal (identity layer), kept as JSON. */
  principal: JsonObject;
  targets: string[];
  /** The allowing rule. */
  rule: string | null;
  state: SessionState;
  endReason: SessionEndReason | null;
  createdAt: number;
  expiresAt: number;
  /** The session ends when no heartbeat arrives before this. */
  leaseExpiresAt: number;
  endedAt: number | null;
  /** The gateway instance that opened it (several gateways may share a PostgreSQL store). */
  gatewayId: string | null;
  /**
   * The CI job the session is bound to (a src/jobs `JobRef`, as JSON), or null/absent when job
   * liveness does not apply. Kept so a restarted gateway watches the job again.
   */
  jobRef?: JsonObject | null;
  /** The rule that granted each target (target -> rule name); absent for older sessions. */
  targetRules?: Record<string, string> | null;
  /**
   * Who ended it, when someone did: an operator (`token:<name>`, docs/operators.md) for
   * `revoked`, the job API for `job_finished`; null otherwise and for sessions ended before
   * migration 0007. The same text as its `session.ended` event's `by`.
   */
  endedBy?: string | null;
  /** The operator's reason (`--reason`, already escaped), as `session.ended`'s `note`. */
  endNote?: string | null;
  /**
   * Approval (docs/approvals.md, migration 0010): null or absent when its granting rules need
   * none. While `pending`, the session is stored `active` (its lease runs, the client heartbeats)
   * but opens no tunnel, and `expiresAt` is the approval deadline; approval sets `expiresAt` to
   * the approval time plus `ttlMs`.
   */
  approval?: SessionApproval | null;
}

/** A session's approval: its terms, fixed when it was requested, and how far it got. */
export interface SessionApproval {
  state: 'pending' | 'approved';
  requirements: ApprovalRequirement[];
  /** Epoch ms: the approval deadline (the session's `expiresAt` while pending). */
  deadline: number;
  requestedAt: number;
  /** The session's lifetime from approval on. */
  ttlMs: number;
  /** The job's user, who may not decide on it (src/identity/job-user.ts). */
  requester: JobUser;
  /** When the last needed approval came; null while pending. */
  approvedAt: number | null;
}

export type NewSession = Omit<SessionRecord, 'state' | 'endReason' | 'endedAt'>;

/** A token id that may open one session only (issuers with `single_use_jti: true`). */
export interface SingleUseJti {
  issuer: string;
  jti: string;
  /** Epoch ms; the token's `exp`. The entry is pruned after it. */
  expiresAt: number;
}

/** Called with the id of a session that some gateway sharing the store has ended. */
export type SessionEndedListener = (sessionId: string) => void;

/** The audit event written with a state change, or a function building it from the new record. */
export type EventFor = AuditEventInput | ((session: SessionRecord) => AuditEventInput);

export interface SessionChange {
  session: SessionRecord;
  event: AuditEvent;
}

/** An enrolled agent as stored. Times are epoch milliseconds. */
export interface StoredAgent {
  /** `agt_…`; the credential is `cpa_<id>.<secret>`. */
  id: string;
  /** Several agents may share a name (replicas); revoking by name revokes them all. */
  name: string;
  /** hex SHA-256 of the credential's secret part; the secret itself is never stored. */
  credentialHash: string;
  createdAt: number;
  revokedAt: number | null;
  lastSeenAt: number | null;
  /** The current credential is accepted while `now < credentialExpiresAt`. */
  credentialExpiresAt: number;
  /** hex SHA-256 of the secret the last rotation replaced, or null (never rotated). */
  previousHash: string | null;
  /** The previous secret is accepted while `now < previousValidUntil` (the rotation's grace). */
  previousValidUntil: number | null;
  /**
   * The targets this agent may serve (lower-case names, sorted; migration 0006): the gateway
   * routes nothing else to it, whatever it advertises.
   */
  targets: string[];
}

/** A one-time enrollment token to store (see `Store.createEnrollment`). */
export interface NewEnrollment {
  /** hex SHA-256 of the enrollment token; the token itself is never stored. */
  tokenHash: string;
  /** The name the agent that redeems the token gets. */
  name: string;
  /** The targets the agent that redeems the token is bound to (see StoredAgent.targets). */
  targets: string[];
  createdAt: number;
  expiresAt: number;
}

/** The agent record `Store.redeemEnrollment` creates; its name comes from the enrollment. */
export interface NewAgent {
  id: string;
  /** hex SHA-256 of the credential's secret part. */
  credentialHash: string;
  createdAt: number;
  /** When the credential expires (it must be rotated before). */
  credentialExpiresAt: number;
}

/** The audit event written with an agent change, or a function building it from the record. */
export type AgentEventFor = AuditEventInput | ((agent: StoredAgent) => AuditEventInput);

export interface AgentChange {
  agent: StoredAgent;
  event: AuditEvent;
}

/** Called with the id of an agent that some gateway sharing the store has revoked. */
export type AgentRevokedListener = (agentId: string) => void;

/** A gateway instance sharing the store (discovery). Times are epoch milliseconds. */
export interface GatewayRecord {
  id: string;
  /** Where clients and agents reach this gateway. */
  url: string;
  startedAt: number;
  /** The last registration or heartbeat. */
  lastSeenAt: number;
}

/**
 * The audit events of an approval decision (decideApproval), built from the session as the
 * decision leaves it. The store appends them in the same transaction as the change.
 */
export interface ApprovalEventsFor {
  /** `approval.granted` for this approver. */
  granted(session: SessionRecord, tally: ApprovalTally): AuditEventInput;
  /** `session.opened`: the approval met the requirements. */
  opened(session: SessionRecord, tally: ApprovalTally): AuditEventInput;
  /** `approval.denied`. */
  denied(session: SessionRecord, tally: ApprovalTally): AuditEventInput;
  /** `session.ended` with reason `approval_denied`. */
  ended(session: SessionRecord): AuditEventInput;
}

/**
 * What decideApproval did. `refused`: the session is not pending any more, or its deadline has
 * passed (the caller tells which from `session`); `repeated`: this operator had approved it
 * already (nothing written; an approval counts once); `counted`: recorded, not enough yet.
 */
export type ApprovalOutcome =
  | { outcome: 'unknown' }
  | { outcome: 'refused'; session: SessionRecord; votes: ApprovalVote[] }
  | { outcome: 'repeated'; session: SessionRecord; votes: ApprovalVote[]; tally: ApprovalTally }
  | {
      outcome: 'counted' | 'approved' | 'denied';
      session: SessionRecord;
      votes: ApprovalVote[];
      tally: ApprovalTally;
      events: AuditEvent[];
    };

/** Approvals (docs/approvals.md, migration 0010). */
export interface ApprovalStore {
  /**
   * Record `vote` on the pending session `id`, in ONE transaction that first locks the session row
   * with a conditional update (`… where state = 'active' and approval_state = 'pending'`), so
   * that of concurrent deciders on every gateway each sees the votes of those before it:
   * - `deny`: the session ends (`approval_denied`, `by` and `note` kept) with
   *   `events.denied` and `events.ended`; the end is NOTIFYed like any other;
   * - `approve`: the vote is inserted unless the operator approved already (`repeated`); when the
   *   approvals now meet the requirements the session becomes `approved`, `expiresAt` becomes
   *   `vote.at + ttlMs`, with `events.granted` and `events.opened`; otherwise `events.granted`.
   * A session past its deadline, or not pending, is `refused` and nothing is written.
   */
  decideApproval(id: string, vote: ApprovalVote, events: ApprovalEventsFor): Promise<ApprovalOutcome>;
  /** The votes on each of `sessionIds`, in decision order (sessions without votes: absent). */
  approvalVotes(sessionIds: readonly string[]): Promise<Map<string, ApprovalVote[]>>;
}

export interface ListSessionsOptions {
  /**
   * Epoch ms. Lists sessions alive at some point since then: created, ended or still active
   * after `since`. Active sessions are always listed. Omit for all sessions.
   */
  since?: number;
  activeOnly?: boolean;
  /** Only active sessions waiting for approval (implies activeOnly). */
  pendingApproval?: boolean;
  /** Newest first; default 1000. */
  limit?: number;
}

export interface AuditQuery {
  /** Epoch ms, inclusive. */
  since?: number;
  /** Epoch ms, exclusive. */
  until?: number;
  /** Only events with seq > afterSeq (keyset paging). */
  afterSeq?: number;
  /** Default 1000, at most 10000. */
  limit?: number;
}

/** The gateways sharing the store (src/gateway/peers.ts). */
export interface GatewayStore {
  /** Insert or replace the gateway `id` (url, startedAt and lastSeenAt become `at`). */
  registerGateway(gateway: { id: string; url: string; at: number }): Promise<void>;
  /** Set the gateway's lastSeenAt to `at`. False when it is not registered (register it again). */
  heartbeatGateway(id: string, at: number): Promise<boolean>;
  /** Gateways seen at or after `aliveSince` (epoch ms), oldest start first. */
  listGateways(aliveSince: number): Promise<GatewayRecord[]>;
  /** Deregister (on drain). False when it was not registered. */
  removeGateway(id: string): Promise<boolean>;
}

/** Sessions: every state change commits together with its audit event. */
export interface SessionStore {
  /**
   * Insert an active session and append `event` (normally `session.opened`) atomically. With
   * `options.jti`, the jti is recorded in the same transaction; when it is already recorded (and
   * not yet past its expiry) nothing is written and CIPORT_E_TOKEN_REPLAYED is thrown. Expired
   * jti entries are pruned on the way.
   */
  createSession(
    session: NewSession,
    event: EventFor,
    options?: { jti?: SingleUseJti },
  ): Promise<SessionChange>;

  /**
   * End an active session and append `event` (normally `session.ended`) atomically. Returns
   * undefined, and writes nothing, when the session is unknown or already ended: of several
   * concurrent callers (reaper, client, operator, another gateway) exactly one wins.
   * `current`: the caller's copy of the record, a hint that may spare the store a read; a stale
   * copy changes nothing but speed (the store checks it against the row under its write lock).
   * `by` and `note` (who ended it and why) are kept with the row (SessionRecord.endedBy/endNote).
   * Several events are appended in order; `event` of the change is the last. `approval_timeout`
   * ends only a session still pending approval whose deadline has passed at `at` (an approval
   * committed meanwhile wins); `approval_denied` is decideApproval's alone.
   */
  endSession(
    id: string,
    reason: SessionEndReason,
    event: EventFor | readonly EventFor[],
    options?: { at?: number; current?: SessionRecord; by?: string | undefined; note?: string | undefined },
  ): Promise<SessionChange | undefined>;
  /**
   * Extend the lease of a live session to `leaseUntil`. False when the session is unknown, ended,
   * or already past its lease or expiry at `now` (a late heartbeat does not resurrect it).
   */
  heartbeat(id: string, leaseUntil: number, now?: number): Promise<boolean>;
  getSession(id: string): Promise<SessionRecord | undefined>;
  /** Any state: the caller decides whether an ended session's secret gets a 401 or a 410. */
  findBySecretHash(secretHash: string): Promise<SessionRecord | undefined>;
  listSessions(options?: ListSessionsOptions): Promise<SessionRecord[]>;
  /** Active sessions past their expiry or lease at `now`; see `expiryReason`. Oldest first. */
  expiredSessions(now?: number): Promise<SessionRecord[]>;

  /**
   * Be told when any gateway sharing the store ends a session. PostgreSQL: LISTEN/NOTIFY (the
   * NOTIFY is sent inside the endSession transaction, so it is delivered exactly when the end
   * commits); the listening connection reconnects by itself, and notifications lost while it is
   * down are covered by the session manager's periodic sweep. SQLite: a no-op (one process per
   * file; the sweep covers ends written by the CLI). Resolves to an unsubscribe function.
   */
  subscribe(listener: SessionEndedListener): Promise<() => Promise<void>>;
}

/** The audit chain. */
export interface AuditStore {
  /** Append one event that records no other state change. */
  appendAudit(event: AuditEventInput): Promise<AuditEvent>;
  /** Events in ascending seq order. */
  auditEvents(query?: AuditQuery): Promise<AuditEvent[]>;
  /** Stored rows verbatim (data as stored text) for verification; ascending seq. */
  auditRows(query?: Pick<AuditQuery, 'afterSeq' | 'limit'>): Promise<ChainRow[]>;
  /**
   * One page of the events matching `search`, newest first, paged by seq (store/audit-search.ts:
   * indexed, never OFFSET). The console's audit search and session detail.
   */
  searchAudit(search: AuditSearch): Promise<AuditSearchPage>;
  /** Closed connections and their bytes for each of `sessionIds` (at most 500) that has any. */
  sessionTraffic(sessionIds: readonly string[]): Promise<Map<string, SessionTraffic>>;
  /** The last event's seq and hash, or undefined for an empty log. */
  auditHead(): Promise<{ seq: number; hash: string; time: number } | undefined>;
  /**
   * Resolve if the store can write now (SQLite: its writer thread is up, or a new one could be
   * started after a crash); reject with CIPORT_E_STORE_UNAVAILABLE otherwise. /readyz uses it.
   */
  checkWritable?(): Promise<void>;
}

/** Agents: enrollment, credentials, revocation, bindings (docs/agent.md). */
export interface AgentStore {
  /**
   * Store a one-time enrollment token (by hash) and append `event` (normally `agent.enrolled`,
   * stage `token_created`) atomically. On the way, enrollments spent or expired more than a day
   * before `enrollment.createdAt` are pruned. A token hash already stored is a programming error
   * (tokens are random) and fails without writing anything.
   */
  createEnrollment(enrollment: NewEnrollment, event: AuditEventInput): Promise<AuditEvent>;

  /**
   * Redeem an enrollment token: in ONE transaction, mark the enrollment used
   * (`… where token_hash = ? and used_at is null and expires_at > now`), and only if that changed
   * the row insert `agent` (named after the enrollment) and append `event` (normally
   * `agent.enrolled`, stage `registered`). Returns undefined, and writes nothing, when the token is
   * unknown, expired or already used: of concurrent redeemers (on any gateway) exactly one wins.
   */
  redeemEnrollment(
    tokenHash: string,
    now: number,
    agent: NewAgent,
    event: AgentEventFor,
  ): Promise<AgentChange | undefined>;

  /**
   * Rotate an agent's credential: in ONE transaction, a conditional
   * `UPDATE agents … WHERE id = ? AND credential_hash = currentHash AND revoked_at IS NULL AND
   * credential_expires_at > at` sets `credential_hash = newHash`, `previous_hash = currentHash`,
   * `previous_valid_until = graceUntil`, `credential_expires_at = expiresAt`, and only if that
   * changed the row appends `event` (normally `agent.credential_rotated`). Returns undefined, and
   * writes nothing, when the agent is unknown, revoked, expired or its credential is no longer
   * `currentHash`: of concurrent rotations with one current credential (on any gateway) exactly
   * one wins. Both hashes must be hex SHA-256 (never the secret) and differ.
   */
  rotateAgentCredential(
    id: string,
    currentHash: string,
    newHash: string,
    at: number,
    expiresAt: number,
    graceUntil: number,
    event: AgentEventFor,
  ): Promise<AgentChange | undefined>;

  /** Any state: the caller refuses revoked agents. */
  getAgent(id: string): Promise<StoredAgent | undefined>;
  /** Every agent, revoked ones included, oldest first. */
  listAgents(): Promise<StoredAgent[]>;
  /** Record that a (not revoked) agent was seen at `at`. False when unknown or revoked. */
  touchAgent(id: string, at: number): Promise<boolean>;

  /**
   * Revoke every not yet revoked agent whose id or name is `idOrName`, appending one `event` per
   * revoked agent (normally `agent.revoked`) in the same transaction. Returns the revoked agents
   * (empty when none matched or all were revoked already; of concurrent revokers exactly one
   * revokes each agent). PostgreSQL: also NOTIFYs every revoked agent's id inside the
   * transaction, for `subscribeAgentRevoked`.
   */
  revokeAgents(idOrName: string, at: number, event: AgentEventFor): Promise<AgentChange[]>;

  /**
   * Change the target binding of every not revoked agent whose id or name is `idOrName`: per
   * agent, `next(current)` gives the new list (normalised: lower case, sorted, unique); an agent
   * whose list does not change is left alone. Each change is a conditional UPDATE on the list it
   * was computed from (a concurrent change makes it recompute), in one transaction with
   * `event(agent after, targets before)` (normally `agent.targets_changed`). Returns the changed
   * agents; empty when none matched or nothing changed.
   */
  setAgentTargets(
    idOrName: string,
    at: number,
    next: (current: readonly string[]) => string[],
    event: (agent: StoredAgent, before: readonly string[]) => AuditEventInput,
  ): Promise<AgentChange[]>;

  /**
   * Be told when any gateway sharing the store revokes an agent (this one included). Same
   * mechanism as `subscribe` (PostgreSQL: LISTEN on the same self-reconnecting connection;
   * notifications lost while it is down are not replayed, so callers sweep `listAgents` now and
   * then; SQLite: a no-op). Resolves to an unsubscribe function.
   */
  subscribeAgentRevoked(listener: AgentRevokedListener): Promise<() => Promise<void>>;
}

/** Small key/value facts (the deployment id, agents' last advertisements, …). */
export interface MetaStore {
  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /**
   * Store `value` under `key` unless the key already has a value; either way return the stored
   * value. Gateways starting at once on a shared store all get the first one written.
   */
  initMeta(key: string, value: string): Promise<string>;
}

/**
 * Everything a store engine holds. Parts of the code take the narrow interface they use
 * (SessionStore, AuditStore, AgentStore, GatewayStore, MetaStore, AuditSinkStore,
 * OperatorSessionStore), so what each may touch is
 * visible in its signature.
 */
export interface Store
  extends SessionStore,
    AuditStore,
    AgentStore,
    GatewayStore,
    MetaStore,
    AuditSinkStore,
    OperatorSessionStore,
    ApprovalStore {
  readonly engine: StoreEngine;

  /**
   * Commit what was handed over, then release the database. Waits at most `timeoutMs` (default
   * STORE_CLOSE_TIMEOUT_MS) for queued audit events; past it (another process holding the
   * database's write lock, say) they are abandoned and close rejects with
   * CIPORT_E_STORE_UNAVAILABLE saying so, so that a shutdown cannot hang on a locked store.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Why an expired session ends: its TTL if that passed, else its lease. */
export function expiryReason(session: SessionRecord, now: number): 'expired' | 'lease_expired' {
  return session.expiresAt <= now ? 'expired' : 'lease_expired';
}

/**
 * The state people see (API, CLI, console): `pending` while the session waits for approval —
 * it is stored `active` (it holds its lease and deadline) but opens nothing yet.
 */
export function shownState(session: SessionRecord): SessionState | 'pending' {
  return session.state === 'active' && session.approval?.state === 'pending' ? 'pending' : session.state;
}
