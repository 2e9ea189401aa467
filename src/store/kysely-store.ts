// The Store on Kysely: one implementation, the engine supplies transactions and locking.

import { type CompiledQuery, type Kysely, Migrator, type Selectable } from 'kysely';
import type { JsonObject } from '../audit/canonical.js';
import {
  type ChainRow,
  chainHash,
  GENESIS_HASH,
  type PreparedEvent,
  prepareAuditEvent,
} from '../audit/chain.js';
import {
  type AuditEvent,
  type AuditEventInput,
  SESSION_END_REASONS,
  type SessionEndReason,
} from '../audit/events.js';
import { TARGET_NAME_RE } from '../config/target-name.js';
import { CiportError } from '../errors/index.js';
import type { ApprovalVote } from '../policy/approval.js';
import { approvalColumns, approvalVotes, decideApproval, readApproval } from './approvals.js';
import {
  type AuditSearch,
  type AuditSearchPage,
  type SessionTraffic,
  searchAudit,
  sessionTraffic,
  toAuditEvent,
} from './audit-search.js';
import { AGENT_REVOKED_CHANNEL, type AuditRow, type Engine, SESSION_ENDED_CHANNEL } from './engines.js';
import { StoreError, wrapStoreError } from './errors.js';
import { MIGRATION_LOCK_TABLE, MIGRATION_TABLE, migrationNames, migrationProvider } from './migrations.js';
import {
  createOperatorSession,
  endOperatorSession,
  type OperatorSessionRecord,
  operatorSession,
} from './operator-sessions.js';
import { type AgentsTable, type Database, type GatewaysTable, type SessionsTable, toInt } from './schema.js';
import {
  type AuditSinkCursor,
  advanceAuditSink,
  auditSinkCursors,
  claimAuditSink,
  haltAuditSinkRow,
  releaseAuditSink,
  resumeAuditSinkRow,
} from './sink-cursors.js';
import type { ChainedEvent, WriteJob, WriteStep } from './sqlite-writer.js';
import type {
  AgentChange,
  AgentEventFor,
  AgentRevokedListener,
  ApprovalEventsFor,
  ApprovalOutcome,
  AuditQuery,
  EventFor,
  GatewayRecord,
  ListSessionsOptions,
  NewAgent,
  NewEnrollment,
  NewSession,
  SessionChange,
  SessionEndedListener,
  SessionRecord,
  SingleUseJti,
  Store,
  StoredAgent,
  StoreEngine,
} from './types.js';

const DEFAULT_LIMIT = 1000;
const MAX_LIMIT = 10_000;
const HEX64 = /^[0-9a-f]{64}$/;
const DAY = 86_400_000;

interface PendingAudit {
  prepared: PreparedEvent;
  resolve: (event: AuditEvent) => void;
  reject: (err: unknown) => void;
}

/** Most events one group commit carries; the rest go in the next. */
const MAX_AUDIT_BATCH = 500;

/**
 * Group-commit delay (like PostgreSQL's commit_delay): when events arrived while a commit was in
 * flight (several producers, or one producer that does not wait), the next commit starts this
 * long after the previous one started, so the events of the interval share one transaction and
 * one fsync instead of each paying its own. An event that finds the writer idle — a lone event,
 * or a caller awaiting each append in turn — is committed at once, unless it is one nobody waits
 * for (DEFERRABLE_AUDIT): those wait for AUDIT_DEFERRED_COMMIT_MS since the previous commit.
 */
export const AUDIT_COMMIT_INTERVAL_MS = 5;

/**
 * How often events nobody waits for (DEFERRABLE_AUDIT) are committed when no other event is
 * pending. Each commit is an fsync (SQLite `synchronous=FULL`), and on this class of machine an
 * fsync costs ~1 ms of CPU: at the 5 ms interval, a few busy connections' statements alone made
 * the writer thread commit 200 times a second, which cost more than writing the events
 * (docs/performance.md, "Query audit path"). What a crash can lose grows by the same interval.
 */
export const AUDIT_DEFERRED_COMMIT_MS = 25;

/**
 * Event types whose producers never wait for their commit before going on: the relays' `query`
 * events (a connection's statements of one window) and the tunnels' `connection.opened` /
 * `connection.closed` (bytes flow without waiting for the first; the second is awaited only by
 * the tunnel's own end, after its bytes are done). `http.request` is not one: the gateway
 * acknowledges an agent's only after its commit, and an agent sends them one after the other.
 * Such an event that finds the writer idle waits until AUDIT_DEFERRED_COMMIT_MS after the
 * previous commit started, so they share commits; any other event arriving meanwhile, or
 * close(), starts the commit at once (AUDIT_COMMIT_INTERVAL_MS applies to it).
 */
const DEFERRABLE_AUDIT: ReadonlySet<string> = new Set(['query', 'connection.opened', 'connection.closed']);

export class KyselyStore implements Store {
  readonly #engine: Engine;
  readonly #db: Kysely<Database>;
  readonly #clock: () => number;
  #closed = false;
  /** Audit events waiting for the next group commit, and the flush draining them. */
  #pendingAudit: PendingAudit[] = [];
  #flushing: Promise<void> | undefined;
  /** performance.now() when the last audit commit started. */
  #lastAuditCommit = Number.NEGATIVE_INFINITY;
  /** A pending event someone may wait for (not DEFERRABLE_AUDIT), or close() called. */
  #urgentAudit = false;
  /** Ends a deferrable-only wait early (an urgent event arrived, or close()). */
  #wakeAudit: (() => void) | undefined;
  /** Audit batches handed to the engine and not settled yet; settles after the last of them. */
  #auditInFlight = 0;
  #auditTail: Promise<void> = Promise.resolve();

  /**
   * The session reads of every session open and end, compiled once: Kysely builds and compiles
   * a query on every call otherwise. Each call binds its own parameter (same SQL, both engines).
   */
  readonly #sessionById: CompiledQuery<Selectable<SessionsTable>>;
  readonly #sessionBySecretHash: CompiledQuery<Selectable<SessionsTable>>;

  private constructor(engine: Engine, clock: () => number) {
    this.#engine = engine;
    this.#db = engine.db;
    this.#clock = clock;
    this.#sessionById = this.#db.selectFrom('sessions').selectAll().where('id', '=', '').compile();
    this.#sessionBySecretHash = this.#db
      .selectFrom('sessions')
      .selectAll()
      .where('secret_hash', '=', '')
      .compile();
  }

  /** The first row of a precompiled query run with `parameters` in place of its own. */
  async #first<R>(query: CompiledQuery<R>, parameters: readonly unknown[]): Promise<R | undefined> {
    const result = await this.#db.executeQuery<R>({ ...query, parameters });
    return result.rows[0];
  }

  /** Wrap an opened engine: run the migrations, then hand out the store. */
  static async open(engine: Engine, clock: () => number = Date.now): Promise<KyselyStore> {
    try {
      await migrate(engine);
    } catch (err) {
      await engine.destroy().catch(() => {});
      throw err;
    }
    return new KyselyStore(engine, clock);
  }

  get engine(): StoreEngine {
    return this.#engine.kind;
  }

  // ---- sessions ----------------------------------------------------------------------------

  async createSession(
    input: NewSession,
    event: EventFor,
    options: { jti?: SingleUseJti } = {},
  ): Promise<SessionChange> {
    checkNewSession(input);
    const session: SessionRecord = {
      ...input,
      jobRef: input.jobRef ?? null,
      targetRules: input.targetRules ?? null,
      state: 'active',
      endReason: null,
      endedAt: null,
      endedBy: null,
      endNote: null,
      approval: input.approval ? { ...input.approval, approvedAt: null } : null,
    };
    const approvalRow = approvalColumns(session.approval);
    const jti = options.jti;
    if (jti) {
      if (typeof jti.jti !== 'string' || jti.jti.length === 0 || jti.jti.length > 512) {
        throw new CiportError('CIPORT_E_INTERNAL', 'invalid jti');
      }
      checkInt('jti.expiresAt', jti.expiresAt);
    }
    const writeJob = this.#engine.writeJob ? (job: WriteJob) => this.#writeJob(job) : undefined;
    if (writeJob) {
      // The whole change as data, run in the writer thread: one message (src/store/sqlite-writer.ts).
      const prepared = prepareAuditEvent(resolveEvent(event, session));
      const steps: WriteStep[] = [];
      if (jti) {
        steps.push(
          { sql: PRUNE_JTIS, params: [session.createdAt] },
          {
            sql: CLAIM_JTI,
            params: [jti.issuer, jti.jti, jti.expiresAt, session.id],
            ifNone: 'fail',
            code: 'CIPORT_E_TOKEN_REPLAYED',
            message: replayedMessage(jti.issuer),
          },
        );
      }
      steps.push({
        sql: INSERT_SESSION,
        params: [
          ...sessionParams(session),
          approvalRow.approval,
          approvalRow.approval_state,
          approvalRow.approved_at,
        ],
      });
      return this.#guard(async () => {
        const chained = await writeJob({ steps, events: [prepared], now: session.createdAt });
        const c = chained?.[0];
        if (!c) throw new CiportError('CIPORT_E_INTERNAL', 'the session write returned no event');
        return { session, event: storedEvent(c.seq, c.time, prepared, c.hash, c.prevHash) };
      });
    }
    return this.#guard(() =>
      this.#write(async (trx) => {
        if (jti) {
          // Prune, then claim: the primary key (issuer, jti) makes the claim atomic across
          // gateways; a conflicting row means the token was used before.
          await trx.deleteFrom('used_jtis').where('expires_at', '<', session.createdAt).execute();
          const claimed = await trx
            .insertInto('used_jtis')
            .values({ issuer: jti.issuer, jti: jti.jti, expires_at: jti.expiresAt, session_id: session.id })
            .onConflict((oc) => oc.columns(['issuer', 'jti']).doNothing())
            .executeTakeFirst();
          if (!claimed || Number(claimed.numInsertedOrUpdatedRows ?? 0n) === 0) {
            throw new CiportError('CIPORT_E_TOKEN_REPLAYED', replayedMessage(jti.issuer));
          }
        }
        await trx
          .insertInto('sessions')
          .values({
            id: session.id,
            secret_hash: session.secretHash,
            issuer: session.issuer,
            subject: session.subject,
            principal: JSON.stringify(session.principal),
            targets: JSON.stringify(session.targets),
            rule: session.rule,
            state: 'active',
            end_reason: null,
            created_at: session.createdAt,
            expires_at: session.expiresAt,
            lease_expires_at: session.leaseExpiresAt,
            ended_at: null,
            gateway_id: session.gatewayId,
            job_ref: session.jobRef ? JSON.stringify(session.jobRef) : null,
            target_rules: session.targetRules ? JSON.stringify(session.targetRules) : null,
            ...approvalRow,
          })
          .execute();
        const written = await this.#append(trx, resolveEvent(event, session), session.createdAt);
        return { session, event: written };
      }),
    );
  }

  async endSession(
    id: string,
    reason: SessionEndReason,
    event: EventFor | readonly EventFor[],
    options: {
      at?: number;
      current?: SessionRecord;
      by?: string | undefined;
      note?: string | undefined;
    } = {},
  ): Promise<SessionChange | undefined> {
    if (!(SESSION_END_REASONS as readonly string[]).includes(reason)) {
      throw new CiportError('CIPORT_E_INTERNAL', `unknown session end reason "${reason}"`);
    }
    if (reason === 'approval_denied') {
      throw new CiportError('CIPORT_E_INTERNAL', 'a denial is recorded with decideApproval');
    }
    const eventsFor = (session: SessionRecord) =>
      (Array.isArray(event) ? event : [event]).map((e: EventFor) => resolveEvent(e, session));
    // A timeout ends only a session still pending past its deadline: an approval wins a race.
    const timeout = reason === 'approval_timeout';
    const at = options.at ?? this.#clock();
    const endedBy = options.by ?? null;
    const endNote = options.note ?? null;
    const writeJob = this.#engine.writeJob && !timeout ? (job: WriteJob) => this.#writeJob(job) : undefined;
    if (writeJob) {
      // The change as data, run in the writer thread (one message). Its events are built from the
      // record as the update will leave it: the caller's copy or a read now, and the update is
      // conditional on the row still being exactly that (active, same lease and expiry; only a
      // heartbeat and an approval change an active session), so the events are what the generic
      // path would write. If the row moved meanwhile, the generic path below decides.
      const fast = await this.#guard(async () => {
        const hint = options.current;
        const current = hint?.id === id && hint.state === 'active' ? hint : await this.getSession(id);
        if (!current) return { done: true as const, change: undefined };
        if (current.state !== 'active') return { done: true as const, change: undefined };
        const session: SessionRecord = {
          ...current,
          state: 'ended',
          endReason: reason,
          endedAt: at,
          endedBy,
          endNote,
        };
        const prepared = eventsFor(session).map(prepareAuditEvent);
        const chained = await writeJob({
          steps: [
            {
              sql: END_SESSION,
              params: [reason, at, endedBy, endNote, id, current.leaseExpiresAt, current.expiresAt],
              ifNone: 'stop',
            },
          ],
          events: prepared,
          now: at,
        });
        const c = chained?.at(-1);
        if (!c) return { done: false as const };
        const written = storedEvent(c.seq, c.time, prepared.at(-1) as PreparedEvent, c.hash, c.prevHash);
        return { done: true as const, change: { session, event: written } };
      });
      if (fast.done) return fast.change;
    }
    return this.#guard(() =>
      this.#write(async (trx) => {
        // The conditional update is the arbiter: of concurrent enders only one sees a row.
        let q = trx
          .updateTable('sessions')
          .set({ state: 'ended', end_reason: reason, ended_at: at, ended_by: endedBy, end_note: endNote })
          .where('id', '=', id)
          .where('state', '=', 'active');
        if (timeout) q = q.where('approval_state', '=', 'pending').where('expires_at', '<=', at);
        const row = await q.returningAll().executeTakeFirst();
        if (!row) return undefined;
        const session = toSession(row);
        const written = (await this.#appendMany(trx, eventsFor(session), at)).at(-1) as AuditEvent;
        await this.#engine.notify(trx, SESSION_ENDED_CHANNEL, id);
        return { session, event: written };
      }),
    );
  }

  async heartbeat(id: string, leaseUntil: number, now: number = this.#clock()): Promise<boolean> {
    checkInt('leaseUntil', leaseUntil);
    return this.#guard(() =>
      this.#write(async (trx) => {
        const result = await trx
          .updateTable('sessions')
          .set({ lease_expires_at: leaseUntil })
          .where('id', '=', id)
          .where('state', '=', 'active')
          .where('lease_expires_at', '>', now)
          .where('expires_at', '>', now)
          .executeTakeFirst();
        return result.numUpdatedRows > 0n;
      }),
    );
  }

  getSession(id: string): Promise<SessionRecord | undefined> {
    return this.#guard(async () => {
      const row = await this.#first(this.#sessionById, [id]);
      return row ? toSession(row) : undefined;
    });
  }

  findBySecretHash(secretHash: string): Promise<SessionRecord | undefined> {
    return this.#guard(async () => {
      const row = await this.#first(this.#sessionBySecretHash, [secretHash]);
      return row ? toSession(row) : undefined;
    });
  }

  listSessions(options: ListSessionsOptions = {}): Promise<SessionRecord[]> {
    const limit = clampLimit(options.limit);
    return this.#guard(async () => {
      let q = this.#db.selectFrom('sessions').selectAll();
      if (options.activeOnly || options.pendingApproval) q = q.where('state', '=', 'active');
      if (options.pendingApproval) q = q.where('approval_state', '=', 'pending');
      const since = options.since;
      if (since !== undefined) {
        q = q.where((eb) =>
          eb.or([eb('state', '=', 'active'), eb('created_at', '>=', since), eb('ended_at', '>=', since)]),
        );
      }
      const rows = await q.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
      return rows.map(toSession);
    });
  }

  expiredSessions(now: number = this.#clock()): Promise<SessionRecord[]> {
    return this.#guard(async () => {
      const rows = await this.#db
        .selectFrom('sessions')
        .selectAll()
        .where('state', '=', 'active')
        .where((eb) => eb.or([eb('expires_at', '<=', now), eb('lease_expires_at', '<=', now)]))
        .orderBy('created_at', 'asc')
        .orderBy('id', 'asc')
        .execute();
      return rows.map(toSession);
    });
  }

  // ---- approvals (approvals.ts) ------------------------------------------------------------

  decideApproval(id: string, vote: ApprovalVote, events: ApprovalEventsFor): Promise<ApprovalOutcome> {
    checkInt('vote.at', vote.at);
    checkId('vote.by', vote.by);
    return this.#guard(() =>
      this.#write((trx) =>
        decideApproval(
          trx,
          {
            toSession,
            append: (t, inputs, at) => this.#appendMany(t, inputs, at),
            notifyEnded: (t, sessionId) => this.#engine.notify(t, SESSION_ENDED_CHANNEL, sessionId),
          },
          id,
          vote,
          events,
        ),
      ),
    );
  }

  approvalVotes(sessionIds: readonly string[]): Promise<Map<string, ApprovalVote[]>> {
    return this.#guard(() => approvalVotes(this.#db, sessionIds));
  }

  // ---- audit -------------------------------------------------------------------------------

  /**
   * Append one event; resolves once it is committed. Events that arrive while a commit is in
   * flight are chained and committed together in the next transaction (group commit): each
   * still gets its own seq and hash in arrival order, but a busy gateway pays one fsync per
   * batch instead of one per event. A lone event is committed at once, as before.
   */
  appendAudit(event: AuditEventInput): Promise<AuditEvent> {
    let prepared: PreparedEvent;
    try {
      prepared = prepareAuditEvent(event); // programming errors surface before any lock
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<AuditEvent>((resolve, reject) => {
      this.#pendingAudit.push({ prepared, resolve, reject });
      if (!DEFERRABLE_AUDIT.has(prepared.type)) this.#hurryAudit();
      this.#flushing ??= this.#flushAudit();
    });
  }

  /**
   * Hand a batch of pending events to the engine now; resolves once its items are settled.
   * Batches are chained in the order they are handed over: an ordered engine (SQLite: one queue)
   * keeps the order of the calls itself; otherwise a batch starts after the previous one settled.
   */
  #handAudit(batch: PendingAudit[]): Promise<void> {
    const run = (): Promise<void> =>
      this.#guard(() => this.#appendAlone(batch.map((item) => item.prepared))).then(
        (events) => {
          batch.forEach((item, i) => {
            item.resolve(events[i] as AuditEvent);
          });
        },
        (err) => {
          for (const item of batch) item.reject(err);
        },
      );
    const sequential = this.#engine.ordered || this.#auditInFlight === 0;
    this.#auditInFlight++;
    const done = (sequential ? run() : this.#auditTail.then(run)).finally(() => {
      this.#auditInFlight--;
    });
    this.#auditTail = done;
    return done;
  }

  /**
   * Before a state change goes to the engine: events handed to appendAudit before it are handed
   * to the engine first (not after the group-commit delay), so they are chained ahead of it.
   * Resolves when the state change may be started (at once on an ordered engine).
   */
  #auditFirst(): Promise<void> | undefined {
    while (this.#pendingAudit.length > 0) void this.#handAudit(this.#pendingAudit.splice(0, MAX_AUDIT_BATCH));
    this.#urgentAudit = false;
    if (this.#engine.ordered || this.#auditInFlight === 0) return undefined;
    return this.#auditTail;
  }

  /** A state change as a Kysely transaction, chained after the events handed over before it. */
  #write<T>(fn: (trx: Kysely<Database>) => Promise<T>): Promise<T> {
    const before = this.#auditFirst();
    return before ? before.then(() => this.#engine.write(fn)) : this.#engine.write(fn);
  }

  /** A state change as data (engine.writeJob), chained after the events handed over before it. */
  #writeJob(job: WriteJob): Promise<ChainedEvent[] | null> {
    const writeJob = this.#engine.writeJob as (job: WriteJob) => Promise<ChainedEvent[] | null>;
    const before = this.#auditFirst();
    return before ? before.then(() => writeJob(job)) : writeJob(job);
  }

  #hurryAudit(): void {
    this.#urgentAudit = true;
    this.#wakeAudit?.();
  }

  async #flushAudit(): Promise<void> {
    let first = true;
    try {
      while (this.#pendingAudit.length > 0) {
        // Events someone may wait for: at most every AUDIT_COMMIT_INTERVAL_MS, and the first pass
        // at once. Only deferrable events pending: every AUDIT_DEFERRED_COMMIT_MS at most. An
        // urgent event arriving during a wait ends it, and the loop decides again.
        const urgent = this.#urgentAudit;
        const interval = urgent ? AUDIT_COMMIT_INTERVAL_MS : AUDIT_DEFERRED_COMMIT_MS;
        const wait = this.#lastAuditCommit + interval - performance.now();
        if (wait > 0 && this.#pendingAudit.length < MAX_AUDIT_BATCH && !(first && urgent)) {
          const woken = await new Promise<boolean>((resolve) => {
            const timer = setTimeout(() => resolve(false), wait);
            this.#wakeAudit = () => {
              clearTimeout(timer);
              resolve(true);
            };
          });
          this.#wakeAudit = undefined;
          if (woken) continue;
        }
        first = false;
        // A state change handed the pending events over meanwhile (#auditFirst).
        if (this.#pendingAudit.length === 0) break;
        this.#lastAuditCommit = performance.now();
        const batch = this.#pendingAudit.splice(0, MAX_AUDIT_BATCH);
        this.#urgentAudit = this.#pendingAudit.some((item) => !DEFERRABLE_AUDIT.has(item.prepared.type));
        await this.#handAudit(batch);
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  auditEvents(query: AuditQuery = {}): Promise<AuditEvent[]> {
    return this.#guard(async () => {
      let q = this.#db.selectFrom('audit_events').selectAll();
      if (query.afterSeq !== undefined) q = q.where('seq', '>', query.afterSeq);
      if (query.since !== undefined) q = q.where('time', '>=', query.since);
      if (query.until !== undefined) q = q.where('time', '<', query.until);
      const rows = await q.orderBy('seq', 'asc').limit(clampLimit(query.limit)).execute();
      return rows.map(toAuditEvent);
    });
  }

  searchAudit(search: AuditSearch): Promise<AuditSearchPage> {
    return this.#guard(() => searchAudit(this.#db, this.#engine.kind, search));
  }

  sessionTraffic(sessionIds: readonly string[]): Promise<Map<string, SessionTraffic>> {
    return this.#guard(() => sessionTraffic(this.#db, this.#engine.kind, sessionIds));
  }

  auditRows(query: Pick<AuditQuery, 'afterSeq' | 'limit'> = {}): Promise<ChainRow[]> {
    return this.#guard(async () => {
      let q = this.#db.selectFrom('audit_events').selectAll();
      if (query.afterSeq !== undefined) q = q.where('seq', '>', query.afterSeq);
      const rows = await q.orderBy('seq', 'asc').limit(clampLimit(query.limit)).execute();
      return rows.map((row) => ({
        seq: toInt(row.seq),
        time: toInt(row.time),
        type: row.type,
        data: row.data,
        hash: row.hash,
        prevHash: row.prev_hash,
      }));
    });
  }

  /** Resolve if the store can write now; CIPORT_E_STORE_UNAVAILABLE otherwise (readiness). */
  checkWritable(): Promise<void> {
    return this.#guard(async () => {
      await this.#engine.checkWritable?.();
    });
  }

  auditHead(): Promise<{ seq: number; hash: string; time: number } | undefined> {
    return this.#guard(async () => {
      const row = await this.#db
        .selectFrom('audit_events')
        .select(['seq', 'hash', 'time'])
        .orderBy('seq', 'desc')
        .limit(1)
        .executeTakeFirst();
      return row ? { seq: toInt(row.seq), hash: row.hash, time: toInt(row.time) } : undefined;
    });
  }

  /** Chain and commit a batch of events that record no state change, in a transaction of their own. */
  async #appendAlone(batch: readonly PreparedEvent[]): Promise<AuditEvent[]> {
    const fast = this.#engine.appendAuditBatch;
    if (!fast) return this.#engine.write((trx) => this.#appendBatch(trx, batch));
    const chained = await fast(batch, this.#clock());
    return chained.map((c, i) => storedEvent(c.seq, c.time, batch[i] as PreparedEvent, c.hash, c.prevHash));
  }

  /**
   * Chain one event inside the caller's write transaction. The engine's lock (PostgreSQL:
   * advisory xact lock; SQLite: BEGIN IMMEDIATE) is held from reading the head until commit.
   */
  async #append(trx: Kysely<Database>, input: AuditEventInput, defaultTime?: number): Promise<AuditEvent> {
    const [event] = await this.#appendMany(trx, [input], defaultTime);
    return event as AuditEvent;
  }

  /** Chain several events, in order, inside the caller's write transaction (see #append). */
  #appendMany(
    trx: Kysely<Database>,
    inputs: readonly AuditEventInput[],
    defaultTime?: number,
  ): Promise<AuditEvent[]> {
    return this.#appendBatch(trx, inputs.map(prepareAuditEvent), defaultTime);
  }

  /**
   * Chain `batch` in order inside the caller's write transaction: take the engine's lock, read
   * the head once, hash every event in memory, insert them all in one go.
   */
  async #appendBatch(
    trx: Kysely<Database>,
    batch: readonly PreparedEvent[],
    defaultTime?: number,
  ): Promise<AuditEvent[]> {
    await this.#engine.lockAuditChain(trx);
    const last = await trx
      .selectFrom('audit_events')
      .select(['seq', 'hash', 'time'])
      .orderBy('seq', 'desc')
      .limit(1)
      .executeTakeFirst();
    let seq = last ? toInt(last.seq) : 0;
    let prevHash = last ? last.hash : GENESIS_HASH;
    let prevTime = last ? toInt(last.time) : 0;
    const now = defaultTime ?? this.#clock();
    const rows: AuditRow[] = [];
    const events: AuditEvent[] = [];
    for (const prepared of batch) {
      seq++;
      // Time never runs backwards along the chain, so a time window is a contiguous seq range.
      const time = Math.max(prepared.time ?? now, prevTime);
      const hash = chainHash(prevHash, seq, time, prepared.type, prepared.dataText);
      rows.push({ seq, time, type: prepared.type, data: prepared.dataText, hash, prevHash });
      events.push(storedEvent(seq, time, prepared, hash, prevHash));
      prevHash = hash;
      prevTime = time;
    }
    await this.#engine.insertAuditRows(trx, rows);
    return events;
  }

  // ---- agents ------------------------------------------------------------------------------

  async createEnrollment(enrollment: NewEnrollment, event: AuditEventInput): Promise<AuditEvent> {
    const { tokenHash, name, createdAt, expiresAt } = enrollment;
    checkHash('tokenHash', tokenHash);
    checkId('enrollment name', name);
    const targets = targetList('enrollment targets', enrollment.targets);
    checkInt('createdAt', createdAt);
    checkInt('expiresAt', expiresAt);
    return this.#guard(() =>
      this.#write(async (trx) => {
        // Spent or expired for more than a day: of no further use, not even for diagnosis.
        const cutoff = createdAt - DAY;
        await trx
          .deleteFrom('agent_enrollments')
          .where((eb) => eb.or([eb('used_at', '<', cutoff), eb('expires_at', '<', cutoff)]))
          .execute();
        await trx
          .insertInto('agent_enrollments')
          .values({
            token_hash: tokenHash,
            name,
            created_at: createdAt,
            expires_at: expiresAt,
            targets: JSON.stringify(targets),
          })
          .execute();
        return this.#append(trx, event, createdAt);
      }),
    );
  }

  async redeemEnrollment(
    tokenHash: string,
    now: number,
    agent: NewAgent,
    event: AgentEventFor,
  ): Promise<AgentChange | undefined> {
    checkInt('now', now);
    checkId('agent.id', agent.id);
    checkHash('agent.credentialHash', agent.credentialHash);
    checkInt('agent.createdAt', agent.createdAt);
    checkInt('agent.credentialExpiresAt', agent.credentialExpiresAt);
    if (typeof tokenHash !== 'string' || !HEX64.test(tokenHash)) return undefined; // never stored
    return this.#guard(() =>
      this.#write(async (trx) => {
        // The conditional update is the arbiter: of concurrent redeemers only one sees the row
        // (PostgreSQL re-checks `used_at is null` after waiting for the winner's row lock).
        const claimed = await trx
          .updateTable('agent_enrollments')
          .set({ used_at: now, agent_id: agent.id })
          .where('token_hash', '=', tokenHash)
          .where('used_at', 'is', null)
          .where('expires_at', '>', now)
          .returning(['name', 'targets'])
          .executeTakeFirst();
        if (!claimed) return undefined;
        const record: StoredAgent = {
          id: agent.id,
          name: claimed.name,
          credentialHash: agent.credentialHash,
          createdAt: agent.createdAt,
          revokedAt: null,
          lastSeenAt: null,
          credentialExpiresAt: agent.credentialExpiresAt,
          previousHash: null,
          previousValidUntil: null,
          targets: parseTargets(claimed.targets),
        };
        await trx
          .insertInto('agents')
          .values({
            id: record.id,
            name: record.name,
            credential_hash: record.credentialHash,
            created_at: record.createdAt,
            revoked_at: null,
            last_seen_at: null,
            credential_expires_at: record.credentialExpiresAt,
            previous_hash: null,
            previous_valid_until: null,
            targets: JSON.stringify(record.targets),
          })
          .execute();
        const written = await this.#append(trx, resolveAgentEvent(event, record), now);
        return { agent: record, event: written };
      }),
    );
  }

  async rotateAgentCredential(
    id: string,
    currentHash: string,
    newHash: string,
    at: number,
    expiresAt: number,
    graceUntil: number,
    event: AgentEventFor,
  ): Promise<AgentChange | undefined> {
    checkId('agent id', id);
    checkHash('currentHash', currentHash);
    checkHash('newHash', newHash);
    if (newHash === currentHash) throw new CiportError('CIPORT_E_INTERNAL', 'a rotation needs a new secret');
    checkInt('at', at);
    checkInt('expiresAt', expiresAt);
    checkInt('graceUntil', graceUntil);
    return this.#guard(() =>
      this.#write(async (trx) => {
        // The conditional update is the arbiter, as in redeemEnrollment: of concurrent rotations
        // presenting one current credential only one still sees `credential_hash = currentHash`
        // (PostgreSQL re-checks it after waiting for the winner's row lock).
        const row = await trx
          .updateTable('agents')
          .set({
            credential_hash: newHash,
            previous_hash: currentHash,
            previous_valid_until: graceUntil,
            credential_expires_at: expiresAt,
          })
          .where('id', '=', id)
          .where('credential_hash', '=', currentHash)
          .where('revoked_at', 'is', null)
          .where('credential_expires_at', '>', at)
          .returningAll()
          .executeTakeFirst();
        if (!row) return undefined;
        const agent = toAgent(row);
        const written = await this.#append(trx, resolveAgentEvent(event, agent), at);
        return { agent, event: written };
      }),
    );
  }

  getAgent(id: string): Promise<StoredAgent | undefined> {
    return this.#guard(async () => {
      const row = await this.#db.selectFrom('agents').selectAll().where('id', '=', id).executeTakeFirst();
      return row ? toAgent(row) : undefined;
    });
  }

  listAgents(): Promise<StoredAgent[]> {
    return this.#guard(async () => {
      const rows = await this.#db
        .selectFrom('agents')
        .selectAll()
        .orderBy('created_at', 'asc')
        .orderBy('id', 'asc')
        .execute();
      return rows.map(toAgent);
    });
  }

  async touchAgent(id: string, at: number): Promise<boolean> {
    checkInt('at', at);
    return this.#guard(() =>
      this.#write(async (trx) => {
        const result = await trx
          .updateTable('agents')
          .set({ last_seen_at: at })
          .where('id', '=', id)
          .where('revoked_at', 'is', null)
          .executeTakeFirst();
        return result.numUpdatedRows > 0n;
      }),
    );
  }

  async revokeAgents(idOrName: string, at: number, event: AgentEventFor): Promise<AgentChange[]> {
    checkInt('at', at);
    return this.#guard(() =>
      this.#write(async (trx) => {
        // Conditional like endSession: an agent already revoked (by anyone) is not revoked again.
        const rows = await trx
          .updateTable('agents')
          .set({ revoked_at: at })
          .where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)]))
          .where('revoked_at', 'is', null)
          .returningAll()
          .execute();
        const agents = rows.map(toAgent).sort((a, b) => a.createdAt - b.createdAt || cmp(a.id, b.id));
        const changes: AgentChange[] = [];
        for (const agent of agents) {
          changes.push({ agent, event: await this.#append(trx, resolveAgentEvent(event, agent), at) });
        }
        for (const agent of agents) await this.#engine.notify(trx, AGENT_REVOKED_CHANNEL, agent.id);
        return changes;
      }),
    );
  }

  async setAgentTargets(
    idOrName: string,
    at: number,
    next: (current: readonly string[]) => string[],
    event: (agent: StoredAgent, before: readonly string[]) => AuditEventInput,
  ): Promise<AgentChange[]> {
    checkInt('at', at);
    return this.#guard(() =>
      this.#write(async (trx) => {
        const rows = await trx
          .selectFrom('agents')
          .selectAll()
          .where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)]))
          .where('revoked_at', 'is', null)
          .orderBy('created_at', 'asc')
          .orderBy('id', 'asc')
          .execute();
        const changes: AgentChange[] = [];
        for (let row of rows) {
          // Conditional on the list the change was computed from: a concurrent change on another
          // gateway (PostgreSQL, read committed) makes this one recompute from the new list.
          for (let attempt = 0; ; attempt++) {
            const before = parseTargets(row.targets);
            const after = targetList('targets', next(before));
            if (sameList(before, after)) break;
            const updated = await trx
              .updateTable('agents')
              .set({ targets: JSON.stringify(after) })
              .where('id', '=', row.id)
              .where('targets', '=', row.targets)
              .where('revoked_at', 'is', null)
              .returningAll()
              .executeTakeFirst();
            if (updated) {
              const agent = toAgent(updated);
              changes.push({ agent, event: await this.#append(trx, event(agent, before), at) });
              break;
            }
            const fresh = await trx
              .selectFrom('agents')
              .selectAll()
              .where('id', '=', row.id)
              .executeTakeFirst();
            if (!fresh || fresh.revoked_at !== null || attempt >= 10) break;
            row = fresh;
          }
        }
        return changes;
      }),
    );
  }

  subscribeAgentRevoked(listener: AgentRevokedListener): Promise<() => Promise<void>> {
    return this.#guard(() => this.#engine.listen(AGENT_REVOKED_CHANNEL, listener));
  }

  // ---- gateways ----------------------------------------------------------------------------

  async registerGateway(gateway: { id: string; url: string; at: number }): Promise<void> {
    const { id, url, at } = gateway;
    checkId('gateway id', id);
    if (typeof url !== 'string' || url.length === 0 || url.length > 2048) {
      throw new CiportError('CIPORT_E_INTERNAL', 'invalid gateway url');
    }
    checkInt('at', at);
    return this.#guard(() =>
      this.#write(async (trx) => {
        await trx
          .insertInto('gateways')
          .values({ id, url, started_at: at, last_seen_at: at })
          .onConflict((oc) => oc.column('id').doUpdateSet({ url, started_at: at, last_seen_at: at }))
          .execute();
      }),
    );
  }

  async heartbeatGateway(id: string, at: number): Promise<boolean> {
    checkInt('at', at);
    return this.#guard(() =>
      this.#write(async (trx) => {
        const result = await trx
          .updateTable('gateways')
          .set({ last_seen_at: at })
          .where('id', '=', id)
          .executeTakeFirst();
        return result.numUpdatedRows > 0n;
      }),
    );
  }

  async listGateways(aliveSince: number): Promise<GatewayRecord[]> {
    checkInt('aliveSince', aliveSince);
    return this.#guard(async () => {
      const rows = await this.#db
        .selectFrom('gateways')
        .selectAll()
        .where('last_seen_at', '>=', aliveSince)
        .orderBy('started_at', 'asc')
        .orderBy('id', 'asc')
        .execute();
      return rows.map(toGateway);
    });
  }

  removeGateway(id: string): Promise<boolean> {
    return this.#guard(() =>
      this.#write(async (trx) => {
        const result = await trx.deleteFrom('gateways').where('id', '=', id).executeTakeFirst();
        return result.numDeletedRows > 0n;
      }),
    );
  }

  // ---- meta --------------------------------------------------------------------------------

  getMeta(key: string): Promise<string | undefined> {
    return this.#guard(async () => {
      const row = await this.#db.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst();
      return row?.value;
    });
  }

  setMeta(key: string, value: string): Promise<void> {
    return this.#guard(() =>
      this.#write(async (trx) => {
        await trx
          .insertInto('meta')
          .values({ key, value })
          .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
          .execute();
      }),
    );
  }

  initMeta(key: string, value: string): Promise<string> {
    return this.#guard(() =>
      this.#write(async (trx) => {
        await trx
          .insertInto('meta')
          .values({ key, value })
          .onConflict((oc) => oc.column('key').doNothing())
          .execute();
        const row = await trx.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst();
        return row?.value ?? value;
      }),
    );
  }

  // ---- audit sink cursors (sink-cursors.ts) ------------------------------------------------
  // Written through the engine directly, not #write: they record no audit event and need no
  // place in the chain's order, so they must not hurry the events waiting for a group commit.
  // Halting and resuming do record one, in the transaction of the change.

  claimAuditSink(sink: string, owner: string, now: number, until: number): Promise<number | undefined> {
    return this.#guard(() => claimAuditSink((fn) => this.#engine.write(fn), sink, owner, now, until));
  }

  advanceAuditSink(sink: string, owner: string, from: number, to: number, now: number): Promise<boolean> {
    return this.#guard(() => advanceAuditSink((fn) => this.#engine.write(fn), sink, owner, from, to, now));
  }

  releaseAuditSink(sink: string, owner: string): Promise<void> {
    return this.#guard(() => releaseAuditSink((fn) => this.#engine.write(fn), sink, owner));
  }

  auditSinkCursors(): Promise<AuditSinkCursor[]> {
    return this.#guard(() => auditSinkCursors(this.#db));
  }

  // ---- signed-in operators (operator-sessions.ts) ------------------------------------------
  // Through the engine directly too: a sign-in is audited by its caller, not in this write.

  createOperatorSession(record: Omit<OperatorSessionRecord, 'endedAt'>): Promise<void> {
    return this.#guard(() => createOperatorSession((fn) => this.#engine.write(fn), record));
  }

  operatorSession(secretHash: string, now: number): Promise<OperatorSessionRecord | undefined> {
    return this.#guard(() => operatorSession(this.#db, secretHash, now));
  }

  endOperatorSession(secretHash: string, now: number): Promise<boolean> {
    return this.#guard(() => endOperatorSession((fn) => this.#engine.write(fn), secretHash, now));
  }

  haltAuditSink(
    sink: string,
    owner: string,
    cursor: number,
    now: number,
    event: AuditEventInput,
  ): Promise<AuditEvent | undefined> {
    return this.#guard(() =>
      this.#write(async (trx) =>
        (await haltAuditSinkRow(trx, sink, owner, cursor, now)) ? this.#append(trx, event, now) : undefined,
      ),
    );
  }

  resumeAuditSink(
    sink: string,
    after: number,
    now: number,
    event: (haltedAt: number) => AuditEventInput,
  ): Promise<AuditEvent | undefined> {
    return this.#guard(() =>
      this.#write(async (trx) => {
        const haltedAt = await resumeAuditSinkRow(trx, sink, after, now);
        return haltedAt === undefined ? undefined : this.#append(trx, event(haltedAt), now);
      }),
    );
  }

  subscribe(listener: SessionEndedListener): Promise<() => Promise<void>> {
    return this.#guard(() => this.#engine.listen(SESSION_ENDED_CHANNEL, listener));
  }

  /** Prune used jtis past their expiry (also done on every single-use session creation). */
  pruneUsedJtis(now: number = this.#clock()): Promise<number> {
    return this.#guard(async () => {
      const r = await this.#db.deleteFrom('used_jtis').where('expires_at', '<', now).executeTakeFirst();
      return Number(r.numDeletedRows);
    });
  }

  async close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (this.#closed) return;
    // Events already handed to appendAudit are committed before the store goes away (also
    // those handed to it while it was closing) — within a bound: a write lock held elsewhere
    // makes the writer retry them forever, and a shutdown must end.
    this.#hurryAudit();
    const timeoutMs = options.timeoutMs ?? STORE_CLOSE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const flushed = (async () => {
      while (this.#flushing) await this.#flushing.catch(() => {});
      return true;
    })();
    const done = await Promise.race([
      flushed,
      new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    this.#closed = true;
    await this.#engine.destroy();
    if (!done) {
      throw new StoreError(
        'CIPORT_E_STORE_UNAVAILABLE',
        `store ${this.#engine.where}: audit events still waiting ${timeoutMs} ms after close began were abandoned (the database stayed locked or unreachable)`,
      );
    }
  }

  async #guard<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) {
      throw new StoreError('CIPORT_E_STORE_UNAVAILABLE', `store unavailable: ${this.#engine.where}: closed`);
    }
    try {
      return await fn();
    } catch (err) {
      throw wrapStoreError(err, this.#engine.where, this.#engine.scrub);
    }
  }
}

/** How long close() waits for queued audit events before it abandons them. */
export const STORE_CLOSE_TIMEOUT_MS = 30_000;

// The statements of the state changes that go to the engine as data (writeJob), written as
// Kysely compiles them for SQLite (the generic path below is the reference).
const PRUNE_JTIS = 'delete from "used_jtis" where "expires_at" < ?';
const CLAIM_JTI =
  'insert into "used_jtis" ("issuer", "jti", "expires_at", "session_id") values (?, ?, ?, ?) ' +
  'on conflict ("issuer", "jti") do nothing';
const INSERT_SESSION =
  'insert into "sessions" ("id", "secret_hash", "issuer", "subject", "principal", "targets", "rule", ' +
  '"state", "end_reason", "created_at", "expires_at", "lease_expires_at", "ended_at", "gateway_id", ' +
  '"job_ref", "target_rules", "approval", "approval_state", "approved_at") ' +
  'values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
const END_SESSION =
  'update "sessions" set "state" = \'ended\', "end_reason" = ?, "ended_at" = ?, "ended_by" = ?, "end_note" = ? ' +
  'where "id" = ? and "state" = \'active\' and "lease_expires_at" = ? and "expires_at" = ?';

function sessionParams(session: SessionRecord): unknown[] {
  return [
    session.id,
    session.secretHash,
    session.issuer,
    session.subject,
    JSON.stringify(session.principal),
    JSON.stringify(session.targets),
    session.rule,
    'active',
    null,
    session.createdAt,
    session.expiresAt,
    session.leaseExpiresAt,
    null,
    session.gatewayId,
    session.jobRef ? JSON.stringify(session.jobRef) : null,
    session.targetRules ? JSON.stringify(session.targetRules) : null,
  ];
}

function replayedMessage(issuer: string): string {
  return `this token (jti) already opened a session; issuer "${issuer}" allows one session per token`;
}

async function migrate(engine: Engine): Promise<void> {
  const migrator = new Migrator({
    db: engine.writeDb,
    provider: migrationProvider(engine.kind),
    migrationTableName: MIGRATION_TABLE,
    migrationLockTableName: MIGRATION_LOCK_TABLE,
  });
  try {
    await engine.migrate(async () => {
      const { error } = await migrator.migrateToLatest();
      if (error) throw error; // and roll the engine's transaction back
    });
  } catch (err) {
    const wrapped = wrapStoreError(err, engine.where, engine.scrub);
    if (wrapped !== err) throw wrapped;
    if (err instanceof CiportError) throw err;
    const message = err instanceof Error ? err.message : String(err);
    const known = migrationNames(engine.kind);
    if (/corrupted migrations|missing|unordered/i.test(message)) {
      throw new StoreError(
        'CIPORT_E_STORE_SCHEMA',
        `${engine.where}: the store's schema was written by a different (newer?) ciport version ` +
          `(${message}); this version knows migrations ${known.join(', ')}`,
        { cause: err },
      );
    }
    throw new StoreError('CIPORT_E_STORE_SCHEMA', `${engine.where}: schema migration failed: ${message}`, {
      cause: err,
    });
  }
}

/** The event as written; its data is parsed from the stored text only if someone reads it. */
function storedEvent(
  seq: number,
  time: number,
  prepared: PreparedEvent,
  hash: string,
  prevHash: string,
): AuditEvent {
  return {
    seq,
    time,
    type: prepared.type,
    get data() {
      return prepared.data;
    },
    hash,
    prevHash,
  };
}

function resolveEvent(event: EventFor, session: SessionRecord): AuditEventInput {
  return typeof event === 'function' ? event(session) : event;
}

function resolveAgentEvent(event: AgentEventFor, agent: StoredAgent): AuditEventInput {
  return typeof event === 'function' ? event(agent) : event;
}

function toAgent(row: Selectable<AgentsTable>): StoredAgent {
  return {
    id: row.id,
    name: row.name,
    credentialHash: row.credential_hash,
    createdAt: toInt(row.created_at),
    revokedAt: row.revoked_at === null ? null : toInt(row.revoked_at),
    lastSeenAt: row.last_seen_at === null ? null : toInt(row.last_seen_at),
    credentialExpiresAt: toInt(row.credential_expires_at),
    previousHash: row.previous_hash,
    previousValidUntil: row.previous_valid_until === null ? null : toInt(row.previous_valid_until),
    targets: parseTargets(row.targets),
  };
}

/** Target names as stored: a JSON array of strings; anything else reads as no target at all. */
function parseTargets(text: string | null | undefined): string[] {
  try {
    const v = JSON.parse(text ?? '[]') as unknown;
    return Array.isArray(v) ? v.filter((t): t is string => typeof t === 'string') : [];
  } catch {
    return [];
  }
}

/** A binding to store: target names (config syntax), lower-cased, unique and sorted. */
function targetList(name: string, value: unknown): string[] {
  if (!Array.isArray(value) || value.length > 1000) {
    throw new CiportError('CIPORT_E_INTERNAL', `invalid ${name}: an array of target names`);
  }
  const out = new Set<string>();
  for (const v of value) {
    const t = typeof v === 'string' ? v.toLowerCase() : '';
    if (!TARGET_NAME_RE.test(t)) throw new CiportError('CIPORT_E_INTERNAL', `invalid ${name}: ${String(v)}`);
    out.add(t);
  }
  return [...out].sort();
}

const sameList = (a: readonly string[], b: readonly string[]) =>
  a.length === b.length && a.every((x, i) => x === b[i]);

function toGateway(row: Selectable<GatewaysTable>): GatewayRecord {
  return {
    id: row.id,
    url: row.url,
    startedAt: toInt(row.started_at),
    lastSeenAt: toInt(row.last_seen_at),
  };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function toSession(row: Selectable<SessionsTable>): SessionRecord {
  return {
    id: row.id,
    secretHash: row.secret_hash,
    issuer: row.issuer,
    subject: row.subject,
    principal: JSON.parse(row.principal) as JsonObject,
    targets: JSON.parse(row.targets) as string[],
    rule: row.rule,
    state: row.state === 'ended' ? 'ended' : 'active',
    endReason: (row.end_reason as SessionEndReason | null) ?? null,
    createdAt: toInt(row.created_at),
    expiresAt: toInt(row.expires_at),
    leaseExpiresAt: toInt(row.lease_expires_at),
    endedAt: row.ended_at === null ? null : toInt(row.ended_at),
    gatewayId: row.gateway_id,
    jobRef: row.job_ref ? (JSON.parse(row.job_ref) as JsonObject) : null,
    targetRules: row.target_rules ? (JSON.parse(row.target_rules) as Record<string, string>) : null,
    endedBy: row.ended_by ?? null,
    endNote: row.end_note ?? null,
    approval: readApproval(row),
  };
}

function checkInt(name: string, value: unknown): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new CiportError('CIPORT_E_INTERNAL', `${name} must be integer epoch milliseconds`);
  }
}

/** A hash, never the secret it hashes: 64 lowercase hex characters. */
function checkHash(name: string, value: unknown): void {
  if (typeof value !== 'string' || !HEX64.test(value)) {
    throw new CiportError('CIPORT_E_INTERNAL', `${name} must be a hex SHA-256, never the secret itself`);
  }
}

/** A non-empty string of at most 200 characters (ids, names). */
function checkId(name: string, value: unknown): void {
  if (typeof value !== 'string' || value.length === 0 || value.length > 200) {
    throw new CiportError('CIPORT_E_INTERNAL', `invalid ${name}`);
  }
}

function checkNewSession(s: NewSession): void {
  const bad = (why: string) => new CiportError('CIPORT_E_INTERNAL', `invalid session record: ${why}`);
  if (typeof s.id !== 'string' || s.id.length === 0 || s.id.length > 200) throw bad('id');
  // A hash, never the secret: refuse anything that is not 64 lowercase hex characters.
  if (typeof s.secretHash !== 'string' || !HEX64.test(s.secretHash)) {
    throw bad('secretHash must be the hex SHA-256 of the session secret');
  }
  if (!Array.isArray(s.targets) || !s.targets.every((t) => typeof t === 'string')) throw bad('targets');
  if (s.principal === null || typeof s.principal !== 'object' || Array.isArray(s.principal))
    throw bad('principal');
  checkInt('createdAt', s.createdAt);
  checkInt('expiresAt', s.expiresAt);
  checkInt('leaseExpiresAt', s.leaseExpiresAt);
}

function clampLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_LIMIT;
  return Math.max(1, Math.min(MAX_LIMIT, Math.floor(limit)));
}
