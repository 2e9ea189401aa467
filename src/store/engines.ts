// The two engines behind the one Store: how to connect, how to run a write transaction, and how
// to serialise appends to the audit chain.

import { closeSync, existsSync, mkdirSync, openSync, realpathSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  type SqliteDatabase,
  SqliteDialect,
  type SqliteStatement,
  sql,
} from 'kysely';
import { StoreError, wrapStoreError } from './errors.js';
import type { Database } from './schema.js';
import {
  type BatchEvent,
  type ChainedEvent,
  isWriterGone,
  openSqliteWriter,
  type SqliteWriter,
  type WriteJob,
} from './sqlite-writer.js';
import type { StoreEngine } from './types.js';

export const SQLITE_BUSY_TIMEOUT_MS = 5_000;

/**
 * Key of the transaction-scoped advisory lock that serialises audit appends in PostgreSQL:
 * (0x63697074 = "cipt", 1). Every gateway sharing the database takes it before reading the
 * chain's head, so concurrent appends queue up and the chain never forks.
 */
export const AUDIT_LOCK_KEY: readonly [number, number] = [0x63697074, 1];

export interface Engine {
  readonly kind: StoreEngine;
  /** Reads (SQLite: a main-thread connection; PostgreSQL: the pool). */
  readonly db: Kysely<Database>;
  /** What write transactions and migrations run on (SQLite: the writer thread's connection). */
  readonly writeDb: Kysely<Database>;
  /** Human name of the store for messages: a path, or postgres://host:port/db. Never a password. */
  readonly where: string;
  /** Strings that must never appear in messages (the PostgreSQL password). */
  readonly scrub: readonly string[];
  /** Run `fn` in a write transaction; commit if it resolves, roll back if it throws. */
  write<T>(fn: (trx: Kysely<Database>) => Promise<T>): Promise<T>;
  /** Called inside a write transaction before the chain head is read. */
  lockAuditChain(trx: Kysely<Database>): Promise<void>;
  /**
   * Optional fast path for a batch of audit events on their own (no state change): chain and
   * commit them in one transaction of their own, with the same lock and order guarantees.
   */
  appendAuditBatch?(events: readonly BatchEvent[], now: number): Promise<ChainedEvent[]>;
  /**
   * Optional fast path for a state change given as data (SQLite: run entirely in the writer
   * thread, one message): its statements, then its events chained, atomically, in the same group
   * commit as the other writes. Resolves after the commit to where its events went in the chain,
   * or to null when a `stop` statement stopped it.
   */
  writeJob?(job: WriteJob): Promise<ChainedEvent[] | null>;
  /**
   * True when write, writeJob and appendAuditBatch are committed in the order they are called
   * (SQLite: one queue). Otherwise the store waits for the audit batches it handed over before
   * it starts a state change.
   */
  readonly ordered?: boolean;
  /** Resolve if the store can write now (SQLite: the writer thread is up or can be restarted). */
  checkWritable?(): Promise<void>;
  /** Inside a write transaction: insert chained audit rows, in order, with as few round trips as the engine allows. */
  insertAuditRows(trx: Kysely<Database>, rows: readonly AuditRow[]): Promise<void>;
  /** Run the schema migrations with whatever exclusion the engine needs. */
  migrate<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Inside a write transaction: tell the other store users something happened (PG NOTIFY,
   * delivered when the transaction commits; SQLite: nothing).
   */
  notify(trx: Kysely<Database>, channel: NotifyChannel, payload: string): Promise<void>;
  /**
   * Listen on a channel (PG: LISTEN on ONE dedicated, self-reconnecting connection shared by all
   * channels and listeners; SQLite: a no-op). Resolves once listening; to an unsubscribe function.
   */
  listen(channel: NotifyChannel, fn: (payload: string) => void): Promise<() => Promise<void>>;
  destroy(): Promise<void>;
}

/** The PostgreSQL NOTIFY channel of session ends; the payload is the session id. */
export const SESSION_ENDED_CHANNEL = 'ciport_session_ended';
/** The PostgreSQL NOTIFY channel of agent revocations; the payload is the agent id. */
export const AGENT_REVOKED_CHANNEL = 'ciport_agent_revoked';

/** The channels the store notifies on (fixed identifiers: they are spliced into LISTEN). */
export type NotifyChannel = typeof SESSION_ENDED_CHANNEL | typeof AGENT_REVOKED_CHANNEL;

// ---- SQLite --------------------------------------------------------------------------------

/**
 * better-sqlite3 is synchronous: if two connections of one process contend for the write lock,
 * the loser's busy wait blocks the very thread the winner needs to commit. So writers in this
 * process queue on a mutex per database file first; BEGIN IMMEDIATE plus busy_timeout then
 * handles other processes (the CLI reading or verifying while the gateway runs).
 */
class Mutex {
  #tail: Promise<void> = Promise.resolve();
  refs = 0;

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn);
    this.#tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

const fileMutexes = new Map<string, Mutex>();

function acquireFileMutex(key: string): Mutex {
  let m = fileMutexes.get(key);
  if (!m) {
    m = new Mutex();
    fileMutexes.set(key, m);
  }
  m.refs++;
  return m;
}

function releaseFileMutex(key: string, m: Mutex): void {
  m.refs--;
  if (m.refs === 0 && fileMutexes.get(key) === m) fileMutexes.delete(key);
}

/**
 * better-sqlite3 objects must never be garbage-collected on Node 24: its ObjectWrap destructor
 * looks up the current environment, and a GC finaliser running outside any JS context makes
 * that lookup fail and aborts the process ("Assertion failed: (env) != nullptr"). So Database
 * handles are retained for the life of the process (a gateway opens one or two), and prepared
 * statements are cached per SQL text (Kysely's queries come in a bounded set of shapes) instead
 * of being prepared per query and dropped. Node frees them itself at exit, with a context.
 */
const retainedHandles = new Set<unknown>();

type BetterSqliteDatabase = {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): unknown;
  close(): unknown;
};

function retainingDatabase(sqlite: BetterSqliteDatabase): SqliteDatabase {
  retainedHandles.add(sqlite);
  const statements = new Map<string, SqliteStatement>();
  return {
    prepare(sql: string): SqliteStatement {
      let stmt = statements.get(sql);
      if (!stmt) {
        stmt = sqlite.prepare(sql);
        statements.set(sql, stmt);
        retainedHandles.add(stmt);
      }
      return stmt;
    },
    close(): void {
      sqlite.close();
    },
  };
}

export async function openSqliteEngine(path: string): Promise<Engine> {
  const memory = path === ':memory:';
  const file = memory ? path : resolve(path);
  const where = `sqlite ${file}`;
  const { default: BetterSqlite3 } = await import('better-sqlite3');
  if (!memory) {
    try {
      mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      // The file holds session hashes and the audit log: owner-only from the first byte.
      if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
    } catch (err) {
      throw asUnavailable(err, where);
    }
  }
  // Writes (and their fsyncs) run in the writer thread (src/store/sqlite-writer.ts), which also
  // switches the file to WAL and sets synchronous=FULL on its connection.
  let writer: SqliteWriter;
  try {
    writer = await openSqliteWriter(file, { timeout: SQLITE_BUSY_TIMEOUT_MS, wal: !memory });
  } catch (err) {
    if ((err as { code?: unknown }).code === 'CIPORT_WAL') {
      throw new StoreError('CIPORT_E_STORE_UNAVAILABLE', `${where}: ${(err as Error).message}`);
    }
    throw asUnavailable(err, where);
  }
  const writeDb = new Kysely<Database>({ dialect: writer.dialect });
  // Reads stay on the main thread, on a connection of their own (WAL: they never wait for the
  // writer). An in-memory database exists only in the writer's connection: read there too.
  let db = writeDb;
  let reader: InstanceType<typeof BetterSqlite3> | undefined;
  if (!memory) {
    try {
      reader = new BetterSqlite3(file, { timeout: SQLITE_BUSY_TIMEOUT_MS });
      reader.exec(`PRAGMA foreign_keys = ON; PRAGMA busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS};`);
    } catch (err) {
      reader?.close();
      await writeDb.destroy().catch(() => {});
      throw asUnavailable(err, where);
    }
    db = new Kysely<Database>({ dialect: new SqliteDialect({ database: retainingDatabase(reader) }) });
  }

  const key = memory ? `:memory:${Math.random()}` : realpathSync(file);
  const mutex = acquireFileMutex(key);
  let destroyed = false;

  // BEGIN IMMEDIATE … COMMIT on the writer connection; a failure rolls back whatever is open.
  const transaction = <T>(fn: (conn: Kysely<Database>) => Promise<T>): Promise<T> =>
    writeDb.connection().execute(async (conn) => {
      await sql`begin immediate`.execute(conn);
      try {
        const result = await fn(conn);
        await sql`commit`.execute(conn);
        return result;
      } catch (err) {
        await writer.rollback().catch(() => {});
        throw err;
      }
    });

  // Group commit for state changes: write transactions that queue up while one is in flight run
  // together in ONE transaction, each inside a savepoint of its own, and share its commit (one
  // fsync). A job that throws is rolled back to its savepoint and fails alone; if the
  // transaction itself fails, every job in it fails and none is committed. Each job's promise
  // settles only after the commit.
  // A job is a Kysely callback, or a state change given as data (`data`, see writeJob): a group
  // of data jobs only is ONE message to the writer thread (begin, savepoint each, commit).
  //
  // Audit batches (appendAuditBatch) are jobs of this same queue (`audit`: a data job with no
  // statement), so events and state changes are chained in the order they were handed over.
  // Nobody can be refused for an audit batch (its events were relayed already): when the group's
  // transaction fails because another process holds the write lock past busy_timeout
  // (SQLITE_BUSY/LOCKED), or because the writer thread died, its audit jobs go back to the head
  // of the queue and are retried after a backoff (100 ms doubling to 2 s), ahead of everything
  // queued after them; the state changes of that group fail (CIPORT_E_STORE_UNAVAILABLE).
  type Job = {
    fn: (conn: Kysely<Database>) => Promise<unknown>;
    data?: WriteJob;
    audit?: boolean;
    resolve: (v: unknown) => void;
    reject: (e: unknown) => void;
  };
  const jobs: Job[] = [];
  let draining = false;
  const retryable = (err: unknown): boolean => {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))) {
      return true;
    }
    // An in-memory database died with its thread: nothing to retry on.
    return !memory && isWriterGone(err);
  };
  /** The group's transaction failed: its audit jobs to retry; the others fail with `err`. */
  const failGroup = (group: Job[], err: unknown): Job[] => {
    const again = retryable(err) && !destroyed ? group.filter((job) => job.audit) : [];
    for (const job of group) if (!again.includes(job)) job.reject(err);
    return again;
  };
  const runGroup = async (group: Job[]): Promise<Job[]> => {
    const lone = group.length === 1 ? group[0] : undefined;
    if (lone?.audit && lone.data) {
      // An audit batch alone: the writer's plain append (no savepoint), one transaction.
      try {
        lone.resolve(await writer.appendAudit(lone.data.events, lone.data.now));
      } catch (err) {
        return failGroup(group, err);
      }
      return [];
    }
    if (group.every((job) => job.data)) {
      let outcomes: Awaited<ReturnType<SqliteWriter['runJobs']>>;
      try {
        outcomes = await writer.runJobs(
          group.map((job) => job.data as WriteJob),
          true,
        );
      } catch (err) {
        return failGroup(group, err);
      }
      group.forEach((job, i) => {
        const o = outcomes[i];
        if (o && 'ok' in o) job.resolve(o.ok);
        else job.reject(o?.err);
      });
      return [];
    }
    if (group.length === 1) {
      const job = group[0] as Job;
      await transaction(job.fn).then(job.resolve, job.reject);
      return [];
    }
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      await transaction(async (conn) => {
        for (const job of group) {
          await sql`savepoint ciport_job`.execute(conn);
          try {
            const value = await job.fn(conn);
            await sql`release ciport_job`.execute(conn);
            outcomes.push({ ok: true, value });
          } catch (error) {
            // Undo this job only. If even that fails, the transaction is gone: fail them all.
            try {
              await sql`rollback to ciport_job`.execute(conn);
              await sql`release ciport_job`.execute(conn);
            } catch {
              throw error;
            }
            outcomes.push({ ok: false, error });
          }
        }
      });
    } catch (err) {
      return failGroup(group, err);
    }
    group.forEach((job, i) => {
      const o = outcomes[i];
      if (o?.ok) job.resolve(o.value);
      else job.reject(o?.error);
    });
    return [];
  };
  const drain = async (): Promise<void> => {
    draining = true;
    let backoff = 0;
    try {
      while (jobs.length > 0) {
        const group = jobs.splice(0, MAX_GROUP_JOBS);
        const again = await mutex.run(() => runGroup(group));
        if (again.length === 0) {
          backoff = 0;
          continue;
        }
        jobs.unshift(...again);
        backoff = Math.min(AUDIT_RETRY_MAX_MS, Math.max(AUDIT_RETRY_MIN_MS, backoff * 2));
        await new Promise((r) => setTimeout(r, backoff));
      }
    } finally {
      draining = false;
    }
  };
  const enqueue = (job: Job): void => {
    jobs.push(job);
    if (!draining) void drain();
  };
  // A state change or audit batch given as data; in a group with Kysely jobs it runs inside
  // their transaction (and its savepoint).
  const dataJob = (data: WriteJob, audit: boolean) =>
    new Promise<ChainedEvent[] | null>((resolve, reject) => {
      const fn = async () => {
        const [o] = await writer.runJobs([data], false);
        if (o && 'err' in o) throw o.err;
        return o?.ok ?? null;
      };
      enqueue({ fn, data, audit, resolve: resolve as (v: unknown) => void, reject });
    });

  return {
    kind: 'sqlite',
    db,
    writeDb,
    where,
    scrub: [],
    ordered: true,
    write: <T>(fn: (conn: Kysely<Database>) => Promise<T>) =>
      new Promise<T>((resolve, reject) => {
        enqueue({ fn, resolve: resolve as (v: unknown) => void, reject });
      }),
    writeJob: (data) => dataJob(data, false),
    // BEGIN IMMEDIATE already holds the database's single write lock.
    lockAuditChain: async () => {},
    // The writer thread chains and commits the batch, in the queue's order, in the group commit
    // of the state changes around it: one message, one fsync.
    appendAuditBatch: async (events, now) => {
      const chained = await dataJob({ steps: [], events, now }, true);
      return chained ?? [];
    },
    checkWritable: () => writer.ping(),
    insertAuditRows: async (_trx, rows) => {
      // One prepared statement run per row in the writer thread: one message for the batch.
      await writer.runMany(INSERT_AUDIT_ROW, rows.map(auditRowParams));
    },
    // Kysely's SQLite dialect has one connection and its Migrator runs no transaction of its own
    // there, so wrapping it in BEGIN IMMEDIATE makes the whole migration atomic and exclusive.
    migrate: (fn) =>
      mutex.run(async () => {
        await sql`begin immediate`.execute(writeDb);
        try {
          const result = await fn();
          await sql`commit`.execute(writeDb);
          return result;
        } catch (err) {
          await writer.rollback().catch(() => {});
          throw err;
        }
      }),
    notify: async () => {},
    listen: async () => async () => {},
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      releaseFileMutex(key, mutex);
      await mutex.run(async () => {
        await writeDb.destroy().catch(() => {});
        if (reader) await db.destroy();
      });
    },
  };
}

/** Most write transactions one SQLite group commit carries. */
const MAX_GROUP_JOBS = 64;
/** Backoff between attempts of an audit batch the SQLite writer could not commit (busy, crash). */
const AUDIT_RETRY_MIN_MS = 100;
const AUDIT_RETRY_MAX_MS = 2_000;

/** One row of audit_events as the writer inserts it. */
export interface AuditRow {
  seq: number;
  time: number;
  type: string;
  data: string;
  hash: string;
  prevHash: string;
}

const INSERT_AUDIT_ROW =
  'insert into "audit_events" ("seq", "time", "type", "data", "hash", "prev_hash") values (?, ?, ?, ?, ?, ?)';

const auditRowParams = (r: AuditRow): unknown[] => [r.seq, r.time, r.type, r.data, r.hash, r.prevHash];

/** Rows per multi-row INSERT on PostgreSQL (6 parameters each; the protocol allows 65 535). */
const PG_AUDIT_ROWS_PER_INSERT = 1000;

// ---- PostgreSQL ----------------------------------------------------------------------------

export async function openPostgresEngine(url: string): Promise<Engine> {
  const { where, password } = describePostgresUrl(url);
  const scrub = password ? [password, encodeURIComponent(password)] : [];
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    application_name: 'ciport',
  });
  // An idle client lost its connection (server restart, failover). The pool drops it and the
  // next checkout reconnects; without a listener the process would crash.
  pool.on('error', () => {});
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const notifications = new PgNotifications(pg.Client, url);
  let destroyed = false;
  return {
    kind: 'postgres',
    db,
    writeDb: db,
    where,
    scrub,
    write: (fn) => db.transaction().execute(fn),
    lockAuditChain: async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(AUDIT_LOCK_KEY[0])}, ${sql.lit(AUDIT_LOCK_KEY[1])})`.execute(
        trx,
      );
    },
    insertAuditRows: async (trx, rows) => {
      for (let i = 0; i < rows.length; i += PG_AUDIT_ROWS_PER_INSERT) {
        const chunk = rows.slice(i, i + PG_AUDIT_ROWS_PER_INSERT);
        const values = chunk.map((_, j) => {
          const n = j * 6;
          return `($${n + 1}, $${n + 2}, $${n + 3}, $${n + 4}, $${n + 5}, $${n + 6})`;
        });
        await trx.executeQuery(
          CompiledQuery.raw(
            `insert into "audit_events" ("seq", "time", "type", "data", "hash", "prev_hash") values ${values.join(', ')}`,
            chunk.flatMap(auditRowParams),
          ),
        );
      }
    },
    // Kysely's Migrator takes its own session advisory lock and runs in one transaction on PG.
    migrate: (fn) => fn(),
    notify: async (trx, channel, payload) => {
      await sql`select pg_notify(${channel}, ${payload})`.execute(trx);
    },
    listen: (channel, fn) => notifications.listen(channel, fn),
    destroy: async () => {
      if (destroyed) return;
      destroyed = true;
      await notifications.stop();
      await db.destroy();
    },
  };
}

type PgClientClass = typeof import('pg').Client;

/**
 * One dedicated connection doing LISTEN for every channel and listener of the engine (a pooled
 * connection cannot: the pool would hand it to queries and drop the subscription). It is opened
 * by the first listener and closed when the last one leaves. On error or end it reconnects with
 * backoff (250 ms doubling to 5 s) and LISTENs again on every channel that has listeners;
 * notifications sent while it is away are lost, which the callers' sweeps cover.
 */
class PgNotifications {
  readonly #Client: PgClientClass;
  readonly #url: string;
  /** channel -> listeners; a channel is here only while it has listeners. */
  readonly #channels = new Map<NotifyChannel, Set<(payload: string) => void>>();
  /** The connected client, and the channels it LISTENs on. */
  #client: InstanceType<PgClientClass> | undefined;
  #listening = new Set<string>();
  #connecting: Promise<InstanceType<PgClientClass>> | undefined;
  #stopped = false;
  #retryMs = 250;
  #timer: NodeJS.Timeout | undefined;

  constructor(Client: PgClientClass, url: string) {
    this.#Client = Client;
    this.#url = url;
  }

  /** Add a listener; resolves once the connection LISTENs on `channel` (rejects if it cannot). */
  async listen(channel: NotifyChannel, fn: (payload: string) => void): Promise<() => Promise<void>> {
    if (this.#stopped) throw new Error('Cannot use a pool after calling end on the pool');
    // A distinct wrapper per subscription, so subscribing one function twice is two subscriptions.
    const entry = (payload: string) => fn(payload);
    let set = this.#channels.get(channel);
    if (!set) {
      set = new Set();
      this.#channels.set(channel, set);
    }
    set.add(entry);
    try {
      const client = await this.#connected();
      if (!this.#listening.has(channel)) {
        await client.query(`listen ${channel}`);
        if (this.#client === client) this.#listening.add(channel);
      }
    } catch (err) {
      await this.#remove(channel, entry);
      throw err;
    }
    let removed = false;
    return async () => {
      if (removed) return;
      removed = true;
      await this.#remove(channel, entry);
    };
  }

  async #remove(channel: NotifyChannel, entry: (payload: string) => void): Promise<void> {
    const set = this.#channels.get(channel);
    set?.delete(entry);
    if (set && set.size === 0) this.#channels.delete(channel);
    // The channel stays LISTENed until the connection closes (an UNLISTEN could race with a new
    // listener of the same channel); notifications for it are simply dropped.
    if (this.#channels.size > 0) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const client = this.#client;
    this.#client = undefined;
    this.#listening = new Set();
    if (client) await client.end().catch(() => {});
  }

  /** The connected client, connecting (once, shared by concurrent callers) if need be. */
  #connected(): Promise<InstanceType<PgClientClass>> {
    if (this.#client) return Promise.resolve(this.#client);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<InstanceType<PgClientClass>> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const client = new this.#Client({ connectionString: this.#url, application_name: 'ciport-listen' });
    let lost = false;
    const onLost = () => {
      lost = true;
      this.#lost(client);
    };
    client.on('error', onLost);
    client.on('end', onLost);
    client.on('notification', (msg) => {
      if (!msg.payload) return;
      const set = this.#channels.get(msg.channel as NotifyChannel);
      if (!set) return;
      for (const fn of [...set]) {
        try {
          fn(msg.payload);
        } catch {
          // a listener's failure is its own; the others still hear about it
        }
      }
    });
    const channels = [...this.#channels.keys()];
    try {
      await client.connect();
      for (const channel of channels) await client.query(`listen ${channel}`);
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    if (this.#stopped || lost || this.#channels.size === 0) {
      // Stopped, dropped, or every listener left while connecting: do not keep this connection.
      await client.end().catch(() => {});
      throw new Error(
        this.#stopped
          ? 'Cannot use a pool after calling end on the pool'
          : 'Connection terminated while starting to LISTEN',
      );
    }
    this.#client = client;
    this.#listening = new Set(channels);
    this.#retryMs = 250;
    return client;
  }

  #lost(client: InstanceType<PgClientClass>): void {
    if (this.#stopped || this.#client !== client) return;
    this.#client = undefined;
    this.#listening = new Set();
    client.end().catch(() => {});
    this.#reconnectLater();
  }

  #reconnectLater(): void {
    if (this.#stopped || this.#timer || this.#channels.size === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopped || this.#client || this.#channels.size === 0) return;
      this.#connected().catch(() => {
        this.#retryMs = Math.min(5_000, this.#retryMs * 2);
        this.#reconnectLater();
      });
    }, this.#retryMs);
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#channels.clear();
    const client = this.#client;
    this.#client = undefined;
    if (client) await client.end().catch(() => {});
    await this.#connecting?.catch(() => {});
  }
}

function describePostgresUrl(url: string): { where: string; password: string } {
  try {
    const u = new URL(url);
    const host = u.hostname || 'localhost';
    const port = u.port || '5432';
    const database = decodeURIComponent(u.pathname.replace(/^\//, '')) || '(default)';
    return { where: `postgres ${host}:${port}/${database}`, password: decodeURIComponent(u.password) };
  } catch {
    // libpq key=value strings and socket paths: say nothing that might contain the password.
    return { where: 'postgres (connection string)', password: '' };
  }
}

function asUnavailable(err: unknown, where: string): unknown {
  const wrapped = wrapStoreError(err, where);
  if (wrapped !== err) return wrapped;
  if (err instanceof StoreError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new StoreError('CIPORT_E_STORE_UNAVAILABLE', `store unavailable: ${where}: ${reason}`, {
    cause: err,
  });
}
