// The store contract the gateway, the CLI and the tests program against. Two engines implement
// it (SQLite, PostgreSQL) with identical behaviour; test/store runs one suite against both.

import type { JsonObject } from '../audit/canonical.js';
import type { ChainRow } from '../audit/chain.js';
import type { AuditEvent, AuditEventInput, SessionEndReason } from '../audit/events.js';

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

export interface ListSessionsOptions {
  /**
   * Epoch ms. Lists sessions alive at some point since then: created, ended or still active
   * after `since`. Active sessions are always listed. Omit for all sessions.
   */
  since?: number;
  activeOnly?: boolean;
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

export interface Store {
  readonly engine: StoreEngine;

  // ---- sessions: every state change commits together with its audit event ----

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
   */
  endSession(
    id: string,
    reason: SessionEndReason,
    event: EventFor,
    options?: { at?: number },
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

  // ---- audit ----

  /** Append one event that records no other state change. */
  appendAudit(event: AuditEventInput): Promise<AuditEvent>;
  /** Events in ascending seq order. */
  auditEvents(query?: AuditQuery): Promise<AuditEvent[]>;
  /** Stored rows verbatim (data as stored text) for verification; ascending seq. */
  auditRows(query?: Pick<AuditQuery, 'afterSeq' | 'limit'>): Promise<ChainRow[]>;
  /** The last event's seq and hash, or undefined for an empty log. */
  auditHead(): Promise<{ seq: number; hash: string; time: number } | undefined>;

  // ---- meta: small key/value facts (gateway id, CA fingerprint, …) ----

  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;

  /**
   * Be told when any gateway sharing the store ends a session. PostgreSQL: LISTEN/NOTIFY (the
   * NOTIFY is sent inside the endSession transaction, so it is delivered exactly when the end
   * commits); the listening connection reconnects by itself, and notifications lost while it is
   * down are covered by the session manager's periodic sweep. SQLite: a no-op (one process per
   * file; the sweep covers ends written by the CLI). Resolves to an unsubscribe function.
   */
  subscribe(listener: SessionEndedListener): Promise<() => Promise<void>>;

  close(): Promise<void>;
}

/** Why an expired session ends: its TTL if that passed, else its lease. */
export function expiryReason(session: SessionRecord, now: number): 'expired' | 'lease_expired' {
  return session.expiresAt <= now ? 'expired' : 'lease_expired';
}
