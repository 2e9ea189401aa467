// Session lifetime. The store is the authority on a session's state, lease and expiry (several
// gateways may share it); this manager keeps, per session it serves, the open tunnel
// connections and a timer for its next deadline. A session ends at the first of: client end,
// lease lapse, TTL, revocation, gateway shutdown. Ending cuts its connections at once
// (RST_STREAM), then commits the state change with its `session.ended` event.
import { type AuditEventInput, auditEvent } from '../audit/events.js';
import type { GatewayConfig } from '../config/schema.js';
import { CiportError } from '../errors/index.js';
import { jobUserOf } from '../identity/job-user.js';
import { type Operator, operatorRef } from '../identity/operator.js';
import type { VerifiedToken } from '../identity/verify.js';
import type { JobLiveness, JobRef } from '../jobs/index.js';
import { type ApprovalTally, type ApprovalVote, approvalTermsFor } from '../policy/approval.js';
import type { Decision, Policy } from '../policy/engine.js';
import type { ApprovalStore, AuditStore, SessionRecord, SessionStore, Store } from '../store/types.js';
import {
  decisionEvents,
  decisionGate,
  endedError,
  pendingError,
  refusal,
  requestedEvent,
  timedOutEvent,
} from './approvals.js';
import { ByteBudget } from './byte-budget.js';
import { publish } from './events.js';
import { principalJson, principalSummary } from './principal.js';
import { type EndReason, storeReason } from './reasons.js';
import { hashSecret, newSessionId, newSessionSecret, secretMatches } from './secret.js';

/** What the manager needs of a logger (pino's Logger satisfies it). */
export interface SessionLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** One open tunnel connection of a session, as the manager sees it. */
export interface SessionConnection {
  readonly id: string;
  readonly target: string;
  /** Reset at once: the session ended. */
  cut(reason: EndReason): void;
  /** Settles once the connection is closed and its `connection.closed` event is written. */
  readonly done: Promise<void>;
  /** Bytes carried so far, from the client (`in`) and to it (`out`), when metered. */
  readonly metered?: { readonly in: number; readonly out: number };
}

/** An open connection as the console shows it (docs/console.md). */
export interface LiveConnection {
  id: string;
  target: string;
  /** Bytes from the app towards the target, and back, so far. */
  bytesIn: number;
  bytesOut: number;
}

/** A session this gateway serves: the stored record plus what lives only in this process. */
export class LiveSession {
  record: SessionRecord;
  readonly connections = new Set<SessionConnection>();
  #abort: AbortController | undefined;
  #aborted = false;
  maxConnections: number;
  /** Bytes its tunnels carried through this gateway, against the rule's `limits.bytes`. */
  readonly bytes: ByteBudget;
  timer: NodeJS.Timeout | undefined;
  ending: Promise<SessionRecord | undefined> | undefined;
  /** Set as soon as ending starts, before the store has recorded it. */
  endingReason: EndReason | undefined;

  constructor(record: SessionRecord, maxConnections: number, maxBytes?: number) {
    this.record = record;
    this.maxConnections = maxConnections;
    this.bytes = new ByteBudget(maxBytes);
  }

  get id(): string {
    return this.record.id;
  }

  /**
   * Aborted when the session starts ending: pending upstream dials give up. Made on first use
   * (most sessions never dial while ending): aborting one costs an AbortError with its stack.
   */
  get abort(): AbortController {
    if (!this.#abort) {
      this.#abort = new AbortController();
      if (this.#aborted) this.#abort.abort();
    }
    return this.#abort;
  }

  /** The session is ending: abort its pending dials, now and any asked for later. */
  abortDials(): void {
    this.#aborted = true;
    this.#abort?.abort();
  }
}

export interface SessionManagerOptions {
  /** Sessions and their audit events; `engine` tells whether other gateways may share it. */
  store: SessionStore & AuditStore & ApprovalStore & Pick<Store, 'engine'>;
  config: Readonly<GatewayConfig>;
  policy: Policy;
  log: SessionLog;
  /** This gateway instance (stored with the sessions it opens). */
  gatewayId: string;
  now?: () => number;
  /** How often the store is swept for lapsed sessions and remote revocations (default 1000 ms). */
  sweepIntervalMs?: number;
  /**
   * Job liveness (docs/job-liveness.md): every session this gateway serves whose record names a
   * job is watched, from open or adoption (a restart re-watches) until it ends; a finished job
   * ends it with `job_finished`.
   */
  liveness?: JobLiveness;
  /** The other gateways sharing the store: a draining gateway leaves its sessions to them. */
  peers?: { others(): Promise<string[]> } | undefined;
}

export interface OpenedSession {
  record: SessionRecord;
  /** The session secret: returned to the client once, never stored. */
  secret: string;
  decision: Decision;
  ttlMs: number;
  /** The session waits for approval (docs/approvals.md): no tunnel until it is approved. */
  pending: boolean;
}

/** What an operator's decision on a pending session did (SessionManager.decide). */
export interface ApprovalResult {
  /** `pending`: counted (or counted before: `counted: false`), not enough approvals yet. */
  status: 'pending' | 'approved' | 'denied';
  /** False when this operator had approved already: an approval counts once. */
  counted: boolean;
  record: SessionRecord;
  votes: ApprovalVote[];
  tally: ApprovalTally;
}

/** Longest a client may wait in one approval long-poll (GET /v1/sessions/{id}/approval). */
export const APPROVAL_WAIT_MAX_MS = 25_000;
/** Long-polls one pending session may hold at once; more are answered at once. */
const MAX_WAITERS = 8;

/** A gateway is considered alive while its registry entry is younger than this. */
/** Upper bound on waiting for cut connections to write their close events before ending. */
const CUT_SETTLE_MS = 2_000;
/** Upper bound on awaiting one lifecycle hook; a slower hook is logged and left behind. */
const HOOK_TIMEOUT_MS = 5_000;

/**
 * Session lifecycle hooks (`onOpened`, `onEnded`). Contract:
 * - `onOpened(record)` runs after a session opened on THIS gateway is committed (store row and
 *   `session.opened` event), before `open()` resolves, i.e. before the client gets its secret.
 * - `onEnded(record, reason)` runs once per session per gateway process, on every end path this
 *   process takes part in: client end, lease, TTL, revocation, `job_finished`, shutdown, the
 *   start-up reaper (`expired_while_down`), and sessions ended by ANOTHER gateway once this one
 *   notices (sweep, notification, a deadline check). `record` is the ended record when known.
 *   It runs after the session's connections were cut and after the end was committed (or seen).
 * - Hooks are awaited, each bounded by HOOK_TIMEOUT_MS; errors and timeouts are logged, never
 *   thrown, and never stop the other hooks or the end itself. Hooks run in registration order.
 * - Each `onX` returns an unsubscribe function.
 */
export type SessionOpenedHook = (record: SessionRecord) => void | Promise<void>;
export type SessionEndedHook = (record: SessionRecord, reason: EndReason) => void | Promise<void>;

export class SessionManager {
  readonly #store: SessionStore & AuditStore & ApprovalStore & Pick<Store, 'engine'>;
  readonly #config: Readonly<GatewayConfig>;
  #policy: Policy;
  readonly #log: SessionLog;
  readonly #gatewayId: string;
  readonly #now: () => number;
  readonly #sweepMs: number;
  readonly #live = new Map<string, LiveSession>();
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping = false;
  #sweeps = 0;
  readonly #peers: { others(): Promise<string[]> } | undefined;
  #stopped = false;
  readonly #openedHooks: SessionOpenedHook[] = [];
  readonly #endedHooks: SessionEndedHook[] = [];
  /** Ids whose onEnded hooks already ran in this process (bounded; oldest forgotten first). */
  readonly #endNotified = new Set<string>();
  readonly #liveness: JobLiveness | undefined;
  #unsubscribe: (() => Promise<void>) | undefined;
  /** Long-polls waiting for a pending session's decision, by session id (waitForApproval). */
  readonly #waiters = new Map<string, Set<() => void>>();

  constructor(options: SessionManagerOptions) {
    this.#store = options.store;
    this.#config = options.config;
    this.#policy = options.policy;
    this.#log = options.log;
    this.#gatewayId = options.gatewayId;
    this.#peers = options.peers;
    this.#now = options.now ?? Date.now;
    this.#sweepMs = options.sweepIntervalMs ?? 1000;
    this.#liveness = options.liveness;
  }

  /** A reloaded configuration's policy (SIGHUP): sessions opened from now on use its rule limits. */
  usePolicy(policy: Policy): void {
    this.#policy = policy;
  }

  get leaseTimeoutMs(): number {
    return this.#config.sessions.lease_timeout;
  }

  /** Clients heartbeat at a third of the lease, so two lost heartbeats do not end a session. */
  get heartbeatIntervalMs(): number {
    return Math.max(100, Math.floor(this.#config.sessions.lease_timeout / 3));
  }

  /** Number of open tunnel connections across the sessions this gateway serves. */
  get connectionCount(): number {
    let n = 0;
    for (const live of this.#live.values()) n += live.connections.size;
    return n;
  }

  get liveCount(): number {
    return this.#live.size;
  }

  /** Register a hook run after a session opens on this gateway (see the contract above). */
  onOpened(fn: SessionOpenedHook): () => void {
    this.#openedHooks.push(fn);
    return () => {
      const i = this.#openedHooks.indexOf(fn);
      if (i >= 0) this.#openedHooks.splice(i, 1);
    };
  }

  /** Register a hook run once per ended session, whatever ended it (see the contract above). */
  onEnded(fn: SessionEndedHook): () => void {
    this.#endedHooks.push(fn);
    return () => {
      const i = this.#endedHooks.indexOf(fn);
      if (i >= 0) this.#endedHooks.splice(i, 1);
    };
  }

  /**
   * Another component learned that session `id` ended (e.g. a store notification from another
   * gateway): cut its connections here and run the onEnded hooks. No store write.
   */
  async noticeEnded(id: string): Promise<void> {
    const live = this.#live.get(id);
    if (!live || live.ending) return;
    const fresh = await this.#store.getSession(id);
    if (fresh && fresh.state === 'active') return;
    this.#cutEndedElsewhere(live, fresh);
  }

  /**
   * Start: end the sessions whose TTL or lease passed while no gateway ran
   * (`expired_while_down`), adopt the remaining active ones, start the sweep.
   */
  async start(): Promise<{ reaped: number; adopted: number }> {
    const now = this.#now();
    let reaped = 0;
    for (const stale of await this.#store.expiredSessions(now)) {
      // A pending session past its approval deadline timed out, gateway or not.
      const reason: EndReason =
        isPending(stale) && stale.expiresAt <= now ? 'approval_timeout' : 'expired_while_down';
      const change = await this.#store.endSession(
        stale.id,
        storeReason(reason),
        await this.#endEvents(stale.id, reason, now),
        { at: now },
      );
      if (change) {
        reaped++;
        publish('sessionEnded', { gateway: this.#gatewayId, session: stale.id, reason });
        this.#log.info({ session: stale.id, reason }, 'session ended');
        await this.#runEnded(change.session, reason);
      }
    }
    let adopted = 0;
    for (const record of await this.#store.listSessions({ activeOnly: true })) {
      if (record.state !== 'active' || this.#live.has(record.id)) continue;
      this.#adopt(record);
      adopted++;
    }
    // Several gateways (PostgreSQL): an end committed anywhere reaches us at once; the sweep
    // below stays as the fallback for a missed notification.
    try {
      this.#unsubscribe = await this.#store.subscribe((id) => {
        this.noticeEnded(id).catch((err) => this.#fail('notification', err));
      });
    } catch (err) {
      this.#log.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'cannot listen for session ends; relying on the periodic sweep',
      );
    }
    this.#sweepTimer = setInterval(() => void this.#sweep(), this.#sweepMs);
    this.#sweepTimer.unref();
    return { reaped, adopted };
  }

  /**
   * Open a session for a verified token that policy allowed. `options.jobRef`: the CI job the
   * session is bound to (stored with it, watched while it lives). An issuer with
   * `single_use_jti: true` lets the token's `jti` open one session only (CIPORT_E_TOKEN_REPLAYED).
   */
  async open(
    verified: VerifiedToken,
    decision: Decision,
    options: { jobRef?: JobRef | null } = {},
  ): Promise<OpenedSession> {
    if (decision.decision !== 'allow' || decision.ttlMs === null || decision.rule === null) {
      throw new CiportError('CIPORT_E_INTERNAL', 'open() called with a denial');
    }
    const now = this.#now();
    const ttlMs = decision.ttlMs;
    const expiresAt = now + ttlMs;
    const secret = newSessionSecret();
    const principal = verified.principal;
    const rule = decision.rule;
    const targets = decision.targets.map((t) => t.target);
    // A granting rule with `approval:` makes the session pending: until approved its expiry is
    // the approval deadline, its TTL starts at approval (docs/approvals.md).
    const terms = approvalTermsFor(decision, (name) => this.#policy.rule(name)?.approval, now);
    const sessionExpiresAt = terms ? terms.deadline : expiresAt;
    let jti: { issuer: string; jti: string; expiresAt: number } | undefined;
    if (verified.issuer.single_use_jti) {
      const value = verified.claims.jti;
      if (typeof value !== 'string' || value.length === 0 || value.length > 512) {
        throw new CiportError(
          'CIPORT_E_TOKEN_MISSING_CLAIM',
          `issuer "${verified.issuer.name}" requires single-use tokens: the token has no usable jti claim`,
        );
      }
      const exp = typeof verified.claims.exp === 'number' ? verified.claims.exp * 1000 : expiresAt;
      // Kept until the token can no longer verify (exp + leeway).
      jti = { issuer: verified.issuer.name, jti: value, expiresAt: Math.ceil(exp + verified.issuer.leeway) };
    }
    const { session } = await this.#store.createSession(
      {
        id: newSessionId(),
        secretHash: hashSecret(secret),
        issuer: verified.issuer.name,
        subject: principal.subject ?? '',
        principal: principalJson(principal),
        targets,
        rule,
        createdAt: now,
        expiresAt: sessionExpiresAt,
        leaseExpiresAt: Math.min(sessionExpiresAt, now + this.leaseTimeoutMs),
        gatewayId: this.#gatewayId,
        jobRef: options.jobRef ? ({ ...options.jobRef } as unknown as SessionRecord['principal']) : null,
        targetRules: Object.fromEntries(decision.targets.map((t) => [t.target, t.rule])),
        approval: terms
          ? {
              state: 'pending',
              requirements: terms.requirements,
              deadline: terms.deadline,
              requestedAt: now,
              ttlMs,
              requester: jobUserOf(principal.kind, verified.claims),
              approvedAt: null,
            }
          : null,
      },
      (s) =>
        terms
          ? requestedEvent(s, ttlMs, this.#gatewayId, now)
          : auditEvent(
              'session.opened',
              {
                session: s.id,
                principal: principalSummary(principal),
                targets,
                rule,
                expires_at: new Date(expiresAt).toISOString(),
                ttl_ms: ttlMs,
                gateway: this.#gatewayId,
              },
              now,
            ),
      jti ? { jti } : {},
    );
    this.#adopt(session);
    if (terms) {
      publish('approvalRequested', { gateway: this.#gatewayId, session: session.id });
      this.#log.info(
        {
          session: session.id,
          issuer: session.issuer,
          subject: session.subject,
          targets,
          rule,
          groups: terms.requirements.flatMap((r) => r.groups),
          deadline: new Date(terms.deadline).toISOString(),
        },
        'session pending approval',
      );
      return { record: session, secret, decision, ttlMs, pending: true };
    }
    await this.#runOpened(session);
    publish('sessionOpened', { gateway: this.#gatewayId, session: session.id, issuer: verified.issuer.name });
    this.#log.info(
      { session: session.id, issuer: session.issuer, subject: session.subject, targets, rule, ttl_ms: ttlMs },
      'session opened',
    );
    return { record: session, secret, decision, ttlMs, pending: false };
  }

  /**
   * The live session `id` if `secret` is its secret. 404 unknown id, 401 wrong secret, 410 ended
   * (with `end_reason`). A session whose deadline passed is ended on the spot. A session waiting
   * for approval is refused (409 CIPORT_E_APPROVAL_PENDING: it carries no tunnel) unless
   * `options.pending` is `allow` (heartbeats and the approval wait). That is decided from memory,
   * without a store read a hostile job could repeat at will: an approval through this gateway
   * updates the record at once, one through another gateway within a sweep (pending sessions
   * are refreshed every sweep), before the waiting client is woken either way.
   */
  async authenticate(id: string, secret: string, options: { pending?: 'allow' } = {}): Promise<LiveSession> {
    const record = await this.#recordFor(id, secret);
    if (record.state !== 'active') throw endedError(record);
    const live = this.#live.get(id) ?? this.#adopt(record);
    if (live.ending)
      throw endedError({ ...live.record, endReason: live.endingReason ?? live.record.endReason });
    const now = this.#now();
    if (now >= live.record.expiresAt || now >= live.record.leaseExpiresAt) {
      const after = await this.#deadline(live);
      if (after) throw endedError(after);
    }
    if (isPending(live.record) && options.pending !== 'allow') throw pendingError(live.record);
    return live;
  }

  /** Extend the lease (a pending session's too). Returns the record as it now stands. */
  async heartbeat(id: string, secret: string): Promise<SessionRecord> {
    const live = await this.authenticate(id, secret, { pending: 'allow' });
    const now = this.#now();
    const leaseUntil = Math.min(live.record.expiresAt, now + this.leaseTimeoutMs);
    const ok = await this.#store.heartbeat(id, leaseUntil, now);
    if (!ok) {
      // Lapsed or ended between the check and the write (another gateway, the sweep).
      const after = (await this.#deadline(live)) ?? (await this.#store.getSession(id));
      if (after?.state === 'active') {
        live.record = after; // another gateway extended it meanwhile
        return after;
      }
      throw endedError(after ?? { id, endReason: storeReason('lease_expired') });
    }
    live.record = { ...live.record, leaseExpiresAt: leaseUntil };
    return live.record;
  }

  /** The client ends its own session (idempotent: an ended session reports how it ended). */
  async clientEnd(id: string, secret: string): Promise<SessionRecord> {
    const record = await this.#recordFor(id, secret);
    if (record.state !== 'active') return record;
    return (await this.end(id, 'client_end')) ?? record;
  }

  /**
   * An operator ends a session (a pending one too); `note` (their reason, already sanitised) goes
   * into `session.ended`. Unknown id: 404. Already ended: its record, unchanged, with `revoked:
   * false` (also when another end won a race with this one).
   */
  async revoke(id: string, by?: string, note?: string): Promise<{ record: SessionRecord; revoked: boolean }> {
    const record = this.#live.get(id)?.record ?? (await this.#store.getSession(id));
    if (!record) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
    if (record.state !== 'active') return { record, revoked: false };
    const after = (await this.end(id, 'revoked', by, note)) ?? record;
    return { record: after, revoked: after.endReason === 'revoked' && after.endedBy === (by ?? null) };
  }

  /**
   * An operator approves or denies the pending session `id` (docs/approvals.md). The operator's
   * role was checked by the caller; here: the session exists (404) and needs approval, the
   * operator is in one of its groups and is not the job's user (decisionGate), and it is still
   * pending before its deadline (refusal). The store decides atomically; on approval the session
   * opens here (its opened hooks run) and its waiting client is woken, here or, through the
   * sweep, on the gateway it waits on; on denial it ends like any other end.
   */
  async decide(
    id: string,
    operator: Operator,
    decision: 'approve' | 'deny',
    note?: string,
  ): Promise<ApprovalResult> {
    const known = this.#live.get(id)?.record ?? (await this.#store.getSession(id));
    if (!known) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
    const groups = decisionGate(operator, known);
    const now = this.#now();
    const vote: ApprovalVote = { by: operatorRef(operator), decision, at: now, note: note ?? null, groups };
    const result = await this.#store.decideApproval(id, vote, decisionEvents(vote, this.#gatewayId));
    if (result.outcome === 'unknown') throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
    if (result.outcome === 'refused') {
      const err = refusal(result.session, result.votes, now);
      // Past its deadline and still stored pending: end it now rather than at the next sweep.
      if (err.code === 'CIPORT_E_APPROVAL_TIMEOUT' && result.session.state === 'active') {
        await this.#endPending(id).catch((e) => this.#fail('approval timeout', e));
      }
      throw err;
    }
    const { session, votes, tally } = result;
    const live = this.#live.get(id);
    this.#log.info(
      { session: id, by: vote.by, decision, outcome: result.outcome, approvals: tally.approvers.length },
      'approval decision',
    );
    if (result.outcome === 'repeated' || result.outcome === 'counted') {
      if (live) live.record = session;
      return { status: 'pending', counted: result.outcome === 'counted', record: session, votes, tally };
    }
    if (result.outcome === 'approved') {
      publish('approvalDecided', { gateway: this.#gatewayId, session: id, outcome: 'approved' });
      if (live) this.#refresh(live, session);
      await this.#runOpened(session);
      publish('sessionOpened', { gateway: this.#gatewayId, session: id, issuer: session.issuer });
      return { status: 'approved', counted: true, record: session, votes, tally };
    }
    publish('approvalDecided', { gateway: this.#gatewayId, session: id, outcome: 'denied' });
    publish('sessionEnded', { gateway: this.#gatewayId, session: id, reason: 'approval_denied' });
    if (live && !live.ending) {
      live.endingReason = 'approval_denied';
      live.record = session;
      live.abortDials();
      for (const c of live.connections) c.cut('approval_denied');
      this.#drop(live);
      live.ending = Promise.resolve(session);
    }
    await this.#runEnded(session, 'approval_denied');
    return { status: 'denied', counted: true, record: session, votes, tally };
  }

  /**
   * The job's client waits for the decision on its pending session (long-poll): resolves with
   * the record once it is no longer pending, or as it stands after `maxMs` (at most
   * APPROVAL_WAIT_MAX_MS); throws the ended error (410: denied, timed out, …) once it ended.
   * Woken at once by a decision on this gateway, within a sweep by one on another; `signal`
   * (the request went away) ends the wait early.
   */
  async waitForApproval(
    id: string,
    secret: string,
    maxMs: number,
    signal?: AbortSignal,
  ): Promise<SessionRecord> {
    const live = await this.authenticate(id, secret, { pending: 'allow' });
    const set = this.#waiters.get(id) ?? new Set<() => void>();
    // A job waits with one long-poll; a few more are tolerated, not thousands of timers.
    if (!isPending(live.record) || maxMs <= 0 || this.#stopped || set.size >= MAX_WAITERS) return live.record;
    await new Promise<void>((resolve) => {
      this.#waiters.set(id, set);
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        set.delete(done);
        if (set.size === 0 && this.#waiters.get(id) === set) this.#waiters.delete(id);
        resolve();
      };
      const timer = setTimeout(done, Math.min(maxMs, APPROVAL_WAIT_MAX_MS));
      timer.unref();
      signal?.addEventListener('abort', done, { once: true });
      set.add(done);
    });
    return (await this.authenticate(id, secret, { pending: 'allow' })).record;
  }

  /** Sessions waiting for approval (every gateway's), newest first, with their votes. */
  async pendingApprovals(limit = 1000): Promise<Array<{ record: SessionRecord; votes: ApprovalVote[] }>> {
    const records = await this.#store.listSessions({ pendingApproval: true, limit });
    const votes = await this.#store.approvalVotes(records.map((r) => r.id));
    return records.map((record) => ({ record, votes: votes.get(record.id) ?? [] }));
  }

  /** One session with its approval votes (any state), or undefined. */
  async withVotes(id: string): Promise<{ record: SessionRecord; votes: ApprovalVote[] } | undefined> {
    const record = await this.#store.getSession(id);
    if (!record) return undefined;
    const votes = record.approval ? ((await this.#store.approvalVotes([id])).get(id) ?? []) : [];
    return { record, votes };
  }

  /**
   * End a session with `reason`: cut its connections now, then commit the end and its
   * `session.ended` event. Resolves to the ended record (whoever ended it), or undefined for
   * an unknown id.
   */
  end(id: string, reason: EndReason, by?: string, note?: string): Promise<SessionRecord | undefined> {
    if (reason === 'approval_timeout') return this.#endPending(id);
    const live = this.#live.get(id);
    if (!live) return this.#endStored(id, reason, by, true, note);
    live.endingReason ??= reason;
    live.ending ??= (async () => {
      live.abortDials();
      clearTimeout(live.timer);
      const connections = [...live.connections];
      for (const c of connections) c.cut(reason);
      if (connections.length > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.allSettled(connections.map((c) => c.done)),
          new Promise<void>((resolve) => {
            timer = setTimeout(resolve, CUT_SETTLE_MS);
          }),
        ]);
        clearTimeout(timer);
      }
      let result: SessionRecord | undefined;
      try {
        result = await this.#endStored(id, reason, by, false, note);
        if (result) live.record = result;
      } finally {
        this.#drop(live);
      }
      const endedAs = (result?.endReason as EndReason | null | undefined) ?? reason;
      await this.#runEnded(result ?? live.record, endedAs);
      return result;
    })();
    return live.ending;
  }

  /**
   * End a pending session whose approval deadline passed (`approval_timeout`). The store's end is
   * conditional (still pending, deadline passed), so an approval committed meanwhile wins: then
   * the session stays live here with its new expiry, and nothing was cut (a pending session has
   * no tunnel and no dial). Resolves to the record as the store has it (ended or approved).
   */
  #endPending(id: string): Promise<SessionRecord | undefined> {
    const live = this.#live.get(id);
    if (!live) return this.#endStored(id, 'approval_timeout', undefined, true);
    if (live.ending) return live.ending;
    const ending = (async () => {
      const result = await this.#endStored(id, 'approval_timeout', undefined, false);
      if (result?.state === 'active') {
        live.ending = undefined;
        this.#refresh(live, result);
        return result;
      }
      const reason = (result?.endReason ?? 'approval_timeout') as EndReason;
      live.endingReason = reason;
      if (result) live.record = result;
      live.abortDials();
      for (const c of live.connections) c.cut(reason);
      this.#drop(live);
      await this.#runEnded(live.record, reason);
      return result;
    })();
    live.ending = ending;
    return ending;
  }

  /**
   * Admin list: sessions alive in the last `sinceMs` (default 24 h), newest first. `activeOnly`:
   * every active session, up to the store's largest page (ACTIVE_LIST_MAX).
   */
  list(options: { activeOnly?: boolean; sinceMs?: number } = {}): Promise<SessionRecord[]> {
    return this.#store.listSessions({
      since: this.#now() - (options.sinceMs ?? 86_400_000),
      activeOnly: options.activeOnly ?? false,
      ...(options.activeOnly ? { limit: ACTIVE_LIST_MAX } : {}),
    });
  }

  /**
   * The id of every active session in the store (every gateway sharing it). The per-session
   * account reapers drop each account whose session is not in it, so a list cut short would drop
   * live sessions' accounts (and, for MySQL, kill their connections): this throws instead when
   * the store may have cut it (a reaper then skips its run).
   */
  async activeIds(): Promise<Set<string>> {
    const rows = await this.#store.listSessions({ activeOnly: true, limit: ACTIVE_LIST_MAX });
    if (rows.length >= ACTIVE_LIST_MAX) {
      throw new CiportError(
        'CIPORT_E_INTERNAL',
        `${rows.length} or more active sessions: the list may be incomplete, per-session accounts not reaped`,
      );
    }
    return new Set(rows.map((r) => r.id));
  }

  /**
   * Register a tunnel connection, or refuse it with 429 when the session is at its limit. The
   * check and the registration are one synchronous step, so concurrent opens cannot overshoot.
   */
  attach(live: LiveSession, connection: SessionConnection): void {
    if (live.ending)
      throw endedError({ ...live.record, endReason: live.endingReason ?? live.record.endReason });
    if (isPending(live.record)) throw pendingError(live.record);
    if (live.bytes.exceeded) {
      throw new CiportError(
        'CIPORT_E_BYTE_LIMIT',
        `session ${live.id} has carried its byte limit (${live.bytes.limit} bytes); it accepts no more connections`,
      );
    }
    if (live.connections.size >= live.maxConnections) {
      throw new CiportError(
        'CIPORT_E_CONNECTION_LIMIT',
        `session ${live.id} already has ${live.connections.size} open connections (limit ${live.maxConnections})`,
      );
    }
    live.connections.add(connection);
  }

  /** The open connections of session `id` on this gateway (none when another gateway serves it). */
  liveConnections(id: string): LiveConnection[] {
    const live = this.#live.get(id);
    if (!live) return [];
    return [...live.connections].map((c) => ({
      id: c.id,
      target: c.target,
      bytesIn: c.metered?.in ?? 0,
      bytesOut: c.metered?.out ?? 0,
    }));
  }

  detach(live: LiveSession, connection: SessionConnection): void {
    live.connections.delete(connection);
  }

  /**
   * Drain: end every session this gateway serves with `gateway_shutdown` — unless another
   * gateway sharing the store is alive and can serve them (their leases still apply there).
   */
  async endAllForShutdown(): Promise<{ ended: number; handedOver: number }> {
    const others = await this.#otherGatewaysAlive();
    const lives = [...this.#live.values()];
    if (others.length > 0) {
      for (const live of lives) for (const c of live.connections) c.cut('gateway_shutdown');
      this.#log.info({ sessions: lives.length, gateways: others }, 'sessions left to the other gateways');
      return { ended: 0, handedOver: lives.length };
    }
    const results = await Promise.allSettled(lives.map((live) => this.end(live.id, 'gateway_shutdown')));
    return { ended: results.filter((r) => r.status === 'fulfilled' && r.value).length, handedOver: 0 };
  }

  /** Stop timers and leave the registry; sessions stay as stored (a restart adopts them). */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#sweepTimer);
    this.#wakeAll();
    for (const live of this.#live.values()) {
      clearTimeout(live.timer);
      this.#liveness?.unwatch(live.id);
    }
    await this.#unsubscribe?.().catch(() => {});
    this.#unsubscribe = undefined;
  }

  /** Forget local state without touching the store (a crash, as far as the store can tell). */
  abandon(): void {
    this.#stopped = true;
    clearInterval(this.#sweepTimer);
    this.#wakeAll();
    for (const live of this.#live.values()) {
      clearTimeout(live.timer);
      this.#liveness?.unwatch(live.id);
      for (const c of live.connections) c.cut('gateway_shutdown');
    }
    this.#live.clear();
    const unsubscribe = this.#unsubscribe;
    this.#unsubscribe = undefined;
    void unsubscribe?.().catch(() => {});
    publish('sessionsLive', { gateway: this.#gatewayId, count: 0 });
  }

  // ---- internals ----------------------------------------------------------------------------

  async #recordFor(id: string, secret: string): Promise<SessionRecord> {
    const record = this.#live.get(id)?.record ?? (await this.#store.getSession(id));
    if (!record) throw new CiportError('CIPORT_E_SESSION_NOT_FOUND', `no session ${id}`);
    if (!secretMatches(secret, record.secretHash)) {
      throw new CiportError('CIPORT_E_SESSION_UNAUTHORIZED', `wrong secret for session ${id}`);
    }
    return record;
  }

  #adopt(record: SessionRecord): LiveSession {
    const existing = this.#live.get(record.id);
    if (existing) return existing;
    const limits = record.rule ? this.#policy.rule(record.rule)?.limits : undefined;
    const live = new LiveSession(record, this.#connectionLimit(record), limits?.bytes ?? undefined);
    this.#live.set(record.id, live);
    publish('sessionsLive', { gateway: this.#gatewayId, count: this.#live.size });
    this.#schedule(live);
    this.#watchJob(record);
    return live;
  }

  #watchJob(record: SessionRecord): void {
    const ref = record.jobRef as unknown as JobRef | null | undefined;
    if (!this.#liveness || !ref || this.#stopped) return;
    this.#liveness.watch(ref, record.id, (event) => {
      const by = `job_api ${event.issuer}: ${event.status} (${event.source})`;
      this.end(record.id, 'job_finished', by).catch((err) => this.#fail('job_finished end', err));
    });
  }

  #drop(live: LiveSession): void {
    clearTimeout(live.timer);
    if (this.#live.get(live.id) === live) this.#live.delete(live.id);
    publish('sessionsLive', { gateway: this.#gatewayId, count: this.#live.size });
    this.#wake(live.id);
  }

  /**
   * The store's copy of a session this gateway serves, taken in: a pending session another
   * gateway (or this one) approved gets its new expiry scheduled and its waiting client woken.
   */
  #refresh(live: LiveSession, fresh: SessionRecord): void {
    const wasPending = isPending(live.record);
    live.record = { ...fresh };
    if (wasPending && !isPending(fresh)) {
      this.#schedule(live);
      this.#log.info(
        { session: live.id, expires_at: new Date(fresh.expiresAt).toISOString() },
        'session approved',
      );
      this.#wake(live.id);
    }
  }

  /** Wake the approval long-polls of session `id` (they re-read its state). */
  #wake(id: string): void {
    const set = this.#waiters.get(id);
    if (!set) return;
    for (const done of [...set]) done();
  }

  #wakeAll(): void {
    for (const id of [...this.#waiters.keys()]) this.#wake(id);
  }

  #connectionLimit(record: SessionRecord): number {
    const max = this.#config.sessions.max_connections;
    const ruleLimit = record.rule ? this.#policy.rule(record.rule)?.limits?.connections : undefined;
    return ruleLimit === undefined ? max : Math.min(max, ruleLimit);
  }

  #schedule(live: LiveSession): void {
    if (this.#stopped) return;
    clearTimeout(live.timer);
    const at = Math.min(live.record.expiresAt, live.record.leaseExpiresAt);
    const delay = Math.min(Math.max(0, at - this.#now()), 2_147_483_647);
    live.timer = setTimeout(
      () => void this.#deadline(live).catch((err) => this.#fail('deadline', err)),
      delay,
    );
    live.timer.unref();
  }

  /**
   * A deadline of `live` is due: end it for TTL, or for its lease unless the store knows of a
   * later heartbeat (through another gateway). Returns the ended record, or undefined when the
   * session lives on.
   */
  async #deadline(live: LiveSession): Promise<SessionRecord | undefined> {
    if (live.ending) return live.ending;
    const now = this.#now();
    if (isPending(live.record) && now >= live.record.expiresAt) return this.#approvalDeadline(live);
    if (now >= live.record.expiresAt) return this.end(live.id, 'expired');
    if (now < live.record.leaseExpiresAt) {
      this.#schedule(live);
      return undefined;
    }
    const fresh = await this.#store.getSession(live.id);
    if (fresh?.state !== 'active') {
      if (fresh) live.record = fresh;
      this.#cutEndedElsewhere(live, fresh);
      return fresh;
    }
    live.record = fresh;
    if (this.#now() < fresh.leaseExpiresAt && this.#now() < fresh.expiresAt) {
      this.#schedule(live);
      return undefined;
    }
    return this.end(live.id, this.#now() >= fresh.expiresAt ? 'expired' : 'lease_expired');
  }

  /**
   * A pending session's approval deadline passed: unless the store says it was approved (an
   * approval through another gateway wins; the store's end is conditional too), it ends with
   * `approval_timeout`.
   */
  async #approvalDeadline(live: LiveSession): Promise<SessionRecord | undefined> {
    const fresh = await this.#store.getSession(live.id);
    if (fresh?.state === 'active' && !isPending(fresh)) {
      this.#refresh(live, fresh);
      return this.#deadline(live);
    }
    if (fresh?.state !== 'active') {
      this.#cutEndedElsewhere(live, fresh);
      return fresh;
    }
    const after = await this.#endPending(live.id);
    if (after?.endReason === 'approval_timeout') {
      publish('approvalDecided', { gateway: this.#gatewayId, session: live.id, outcome: 'timed_out' });
    }
    return after?.state === 'active' ? this.#deadline(live) : after;
  }

  /** The store says a session we serve ended (another gateway, an operator): cut locally. */
  #cutEndedElsewhere(live: LiveSession, record: SessionRecord | undefined): void {
    if (live.ending) return;
    const reason = (record?.endReason ?? 'revoked') as unknown as EndReason;
    live.endingReason = reason;
    live.abortDials();
    for (const c of live.connections) c.cut(reason);
    this.#drop(live);
    this.#log.info({ session: live.id, reason }, 'session ended elsewhere; connections cut');
    live.ending = this.#runEnded(record ?? live.record, reason).then(() => record);
  }

  async #endStored(
    id: string,
    reason: EndReason,
    by?: string,
    hooks = true,
    note?: string,
  ): Promise<SessionRecord | undefined> {
    const now = this.#now();
    const change = await this.#store.endSession(
      id,
      storeReason(reason),
      await this.#endEvents(id, reason, now, by, note),
      { at: now, current: this.#live.get(id)?.record, by, note },
    );
    if (change) {
      publish('sessionEnded', { gateway: this.#gatewayId, session: id, reason });
      this.#log.info({ session: id, reason, ...(by ? { by } : {}) }, 'session ended');
      if (hooks) await this.#runEnded(change.session, reason);
      return change.session;
    }
    return this.#store.getSession(id);
  }

  async #runOpened(record: SessionRecord): Promise<void> {
    for (const hook of [...this.#openedHooks]) await this.#runHook('opened', record.id, () => hook(record));
  }

  /** Run the onEnded hooks for `record` unless this process already did. */
  async #runEnded(record: SessionRecord, reason: EndReason): Promise<void> {
    this.#liveness?.unwatch(record.id);
    if (this.#endNotified.has(record.id)) return;
    this.#endNotified.add(record.id);
    if (this.#endNotified.size > 10_000) {
      const oldest = this.#endNotified.values().next().value;
      if (oldest !== undefined) this.#endNotified.delete(oldest);
    }
    for (const hook of [...this.#endedHooks])
      await this.#runHook('ended', record.id, () => hook(record, reason));
  }

  async #runHook(kind: string, session: string, call: () => void | Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      // A hook that finished synchronously needs no deadline (no timer per session and hook).
      const pending = call();
      if (!isThenable(pending)) return;
      await Promise.race([
        pending,
        new Promise<void>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`timed out after ${HOOK_TIMEOUT_MS} ms`)),
            HOOK_TIMEOUT_MS,
          );
          timer.unref();
        }),
      ]);
    } catch (err) {
      this.#log.error(
        { session, hook: kind, err: err instanceof Error ? err.message : String(err) },
        `session ${kind} hook failed`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** The events of an end: `session.ended`, after `approval.timed_out` for an approval timeout. */
  async #endEvents(
    id: string,
    reason: EndReason,
    now: number,
    by?: string,
    note?: string,
  ): Promise<Array<(s: SessionRecord) => AuditEventInput>> {
    const ended = (s: SessionRecord) => this.#endedEvent(s, reason, now, by, note);
    if (reason !== 'approval_timeout') return [ended];
    const votes = (await this.#store.approvalVotes([id])).get(id) ?? [];
    return [(s) => timedOutEvent(s, votes, now), ended];
  }

  #endedEvent(s: SessionRecord, reason: EndReason, now: number, by?: string, note?: string) {
    return auditEvent(
      'session.ended',
      {
        session: s.id,
        principal: principalSummary(s.principal),
        targets: s.targets,
        rule: s.rule,
        reason: storeReason(reason),
        duration_ms: Math.max(0, now - s.createdAt),
        ...(by ? { by } : {}),
        ...(note ? { note } : {}),
      },
      now,
    );
  }

  async #sweep(): Promise<void> {
    if (this.#sweeping || this.#stopped) return;
    this.#sweeping = true;
    try {
      const now = this.#now();
      // Lapsed sessions, whichever gateway opened them.
      for (const record of await this.#store.expiredSessions(now)) {
        const live = this.#live.get(record.id);
        if (live) await this.#deadline(live);
        else if (isPending(record) && record.expiresAt <= now) {
          const after = await this.#endPending(record.id);
          if (after?.endReason === 'approval_timeout') {
            publish('approvalDecided', {
              gateway: this.#gatewayId,
              session: record.id,
              outcome: 'timed_out',
            });
          }
        } else await this.end(record.id, record.expiresAt <= now ? 'expired' : 'lease_expired');
      }
      // Sessions served here that were ended through another gateway (a missed or absent
      // notification): cut their connections and run the onEnded hooks. Sessions with open
      // connections are checked every sweep, the others every fifth; sessions waiting for
      // approval every sweep too (an approval through another gateway wakes their client).
      const all = this.#sweeps++ % 5 === 0;
      const due = [...this.#live.values()].filter(
        (l) => !l.ending && (all || l.connections.size > 0 || isPending(l.record)),
      );
      // Several: one query for the active sessions instead of one per session (a thousand
      // sessions with idle tunnels made a thousand queries a second). Those it does not list
      // (ended, or beyond its limit) are looked up one by one, as before.
      const active = due.length > 1 ? await this.#activeSessions() : undefined;
      for (const live of due) {
        if (live.ending) continue;
        const fresh = active?.get(live.id) ?? (await this.#store.getSession(live.id));
        if (fresh?.state !== 'active') this.#cutEndedElsewhere(live, fresh);
        else this.#refresh(live, fresh);
      }
    } catch (err) {
      this.#fail('sweep', err);
    } finally {
      this.#sweeping = false;
    }
  }

  async #activeSessions(): Promise<Map<string, SessionRecord>> {
    const list = await this.#store.listSessions({ activeOnly: true, limit: 10_000 });
    return new Map(list.map((r) => [r.id, r]));
  }

  #fail(what: string, err: unknown): void {
    this.#log.error({ err: err instanceof Error ? err.message : String(err) }, `session ${what} failed`);
  }

  async #otherGatewaysAlive(): Promise<string[]> {
    // SQLite: one gateway per file.
    if (this.#store.engine === 'sqlite') return [];
    return (await this.#peers?.others()) ?? [];
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as { then?: unknown } | null | undefined)?.then === 'function';
}

/** The largest page of sessions the store returns (its MAX_LIMIT). */
const ACTIVE_LIST_MAX = 10_000;

/** Waiting for approval: stored active, but opening nothing until approved. */
function isPending(record: SessionRecord): boolean {
  return record.approval?.state === 'pending';
}
