// SQLite writes off the event loop. better-sqlite3 is synchronous: every statement, and above all
// every COMMIT (synchronous=FULL: an fsync of the WAL), would otherwise stop the gateway's event
// loop — no relaying, no TLS, no new sessions — for as long as the disk takes. So every write
// transaction runs in ONE worker thread per process that owns its own better-sqlite3 connection
// per store; the main thread keeps a connection of its own for reads (WAL: readers never wait
// for the writer and see each transaction once it committed).
//
// The worker lives as long as the process (unref'd while idle, so it never keeps the process up):
// better-sqlite3 objects must never be garbage-collected on Node 24 (src/store/engines.ts), and a
// worker that exits tears its heap down with them. Stores close their connection explicitly
// (`close`) instead; the handles stay retained in the worker until the process ends. If the
// thread dies anyway (a crash), the next request starts a new one and reopens the connection
// there (openSqliteWriter; with a backoff after a thread that died at once).

import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import {
  CompiledQuery,
  type DatabaseConnection,
  type Dialect,
  type Driver,
  type Kysely,
  type QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from 'kysely';
import { CiportError, type ErrorCode } from '../errors/index.js';
import { StoreError } from './errors.js';

/**
 * The worker's code, evaluated: kept as text so it runs the same from src and dist. It runs as
 * CommonJS or as a module (the thread inherits `--input-type=module` from a `node -e` parent),
 * so it loads everything through process.getBuiltinModule instead of `require`.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = process.getBuiltinModule('node:worker_threads');
const { createHash } = process.getBuiltinModule('node:crypto');
const { createRequire } = process.getBuiltinModule('node:module');
const GENESIS = '0'.repeat(64);
const HEAD = 'select "seq", "hash", "time" from "audit_events" order by "seq" desc limit 1';
const INSERT = 'insert into "audit_events" ("seq", "time", "type", "data", "hash", "prev_hash") values (?, ?, ?, ?, ?, ?)';
// chainHash of src/audit/chain.ts (docs/audit.md): the canonical envelope spliced around the
// canonical data text. Every store test verifies chains this writes.
function chainHash(prev, seq, time, type, dataText) {
  return createHash('sha256')
    .update(prev + '{"data":' + dataText + ',"seq":' + JSON.stringify(seq) + ',"time":' + JSON.stringify(time) + ',"type":' + JSON.stringify(type) + '}', 'utf8')
    .digest('hex');
}
const Database = createRequire(workerData.driver)(workerData.driver);
const conns = new Map();
const retained = [];
function conn(id) {
  const c = conns.get(id);
  if (!c) throw Object.assign(new Error('The database connection is not open'), { code: 'SQLITE_MISUSE' });
  return c;
}
function statement(c, sql) {
  let st = c.stmts.get(sql);
  if (!st) {
    st = c.db.prepare(sql);
    c.stmts.set(sql, st);
    retained.push(st);
  }
  return st;
}
const STOP = { stop: true };
// One job: its statements in order (a statement marked ifNone that changes no row fails the job
// with the given code, or stops it: undone, no event), then its events chained from the head.
function runJob(c, job) {
  for (const step of job.steps) {
    const r = statement(c, step.sql).run(step.params);
    if (r.changes === 0 && step.ifNone) {
      if (step.ifNone === 'stop') throw STOP;
      throw Object.assign(new Error(step.message), { code: step.code });
    }
  }
  if (job.events.length === 0) return [];
  const last = statement(c, HEAD).get();
  const insert = statement(c, INSERT);
  let seq = last ? Number(last.seq) : 0;
  let prev = last ? last.hash : GENESIS;
  let prevTime = last ? Number(last.time) : 0;
  const out = [prev];
  for (const e of job.events) {
    seq++;
    const time = Math.max(e.time === undefined ? job.now : e.time, prevTime);
    const hash = chainHash(prev, seq, time, e.type, e.dataText);
    insert.run([seq, time, e.type, e.dataText, hash, prev]);
    out.push(seq, time, hash);
    prev = hash;
    prevTime = time;
  }
  return out;
}
function errorReply(err) {
  const e = err || {};
  return { message: String(e.message || e), code: typeof e.code === 'string' ? e.code : undefined, name: e.name };
}
function handle(m) {
  switch (m.op) {
    case 'open': {
      const db = new Database(m.file, { timeout: m.timeout });
      retained.push(db);
      const c = { db, stmts: new Map() };
      try {
        if (m.wal) {
          const rows = statement(c, 'PRAGMA journal_mode = WAL').all();
          const mode = rows[0] && rows[0].journal_mode;
          if (String(mode).toLowerCase() !== 'wal') {
            throw Object.assign(new Error('cannot enable WAL (journal_mode is ' + mode + ')'), { code: 'CIPORT_WAL' });
          }
        }
        // FULL: a committed audit event survives power loss, not only a crash of the process.
        db.exec('PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = ' + m.timeout + ';');
      } catch (err) {
        db.close();
        throw err;
      }
      conns.set(m.conn, c);
      return null;
    }
    case 'query': {
      const st = statement(conn(m.conn), m.sql);
      if (st.reader) return { rows: st.all(m.params) };
      const r = st.run(m.params);
      return { changes: r.changes, lastInsertRowid: r.lastInsertRowid };
    }
    case 'runMany': {
      const st = statement(conn(m.conn), m.sql);
      for (const params of m.rows) st.run(params);
      return null;
    }
    case 'append': {
      // One audit batch in one transaction: head, chain in order, insert, commit (one fsync).
      const c = conn(m.conn);
      const head = statement(c, HEAD);
      const insert = statement(c, INSERT);
      c.db.exec('begin immediate');
      try {
        const last = head.get();
        let seq = last ? Number(last.seq) : 0;
        let prev = last ? last.hash : GENESIS;
        let prevTime = last ? Number(last.time) : 0;
        const first = prev;
        const out = [];
        for (const e of m.events) {
          seq++;
          const time = Math.max(e.time === undefined ? m.now : e.time, prevTime);
          const hash = chainHash(prev, seq, time, e.type, e.dataText);
          insert.run([seq, time, e.type, e.dataText, hash, prev]);
          out.push(seq, time, hash);
          prev = hash;
          prevTime = time;
        }
        c.db.exec('commit');
        return { first, out };
      } catch (err) {
        if (c.db.inTransaction) c.db.exec('rollback');
        throw err;
      }
    }
    case 'jobs': {
      // State changes, each a fixed list of statements plus the audit events that record it:
      // the whole group in one message. With m.begin: one transaction (BEGIN IMMEDIATE holds
      // the write lock, so the chain head cannot move under us), one commit (one fsync). Without:
      // inside the caller's transaction. Either way a savepoint per job: a failing job is undone
      // alone and reported in its result.
      const c = conn(m.conn);
      if (m.begin) c.db.exec('begin immediate');
      try {
        const results = [];
        for (const job of m.jobs) {
          c.db.exec('savepoint ciport_data');
          try {
            results.push({ ok: runJob(c, job) });
            c.db.exec('release ciport_data');
          } catch (err) {
            c.db.exec('rollback to ciport_data');
            c.db.exec('release ciport_data');
            results.push(err === STOP ? { ok: null } : { err: errorReply(err) });
          }
        }
        if (m.begin) c.db.exec('commit');
        return results;
      } catch (err) {
        if (m.begin && c.db.inTransaction) c.db.exec('rollback');
        throw err;
      }
    }
    case 'rollback': {
      const c = conn(m.conn);
      if (c.db.inTransaction) c.db.exec('rollback');
      return null;
    }
    case 'close': {
      const c = conns.get(m.conn);
      if (c) {
        conns.delete(m.conn);
        if (c.db.inTransaction) c.db.exec('rollback');
        c.db.close();
      }
      return null;
    }
    case 'ping':
      conn(m.conn);
      return null;
    case 'crash':
      // Tests: an unexpected failure of the thread itself.
      setImmediate(() => { throw new Error('writer thread crashed (test)'); });
      return null;
    default:
      throw new Error('unknown op ' + m.op);
  }
}
parentPort.on('message', (m) => {
  let reply;
  try {
    reply = { id: m.id, ok: handle(m) };
  } catch (err) {
    reply = { id: m.id, err: errorReply(err) };
  }
  parentPort.postMessage(reply);
});
`;

type Reply = { id: number; ok?: unknown; err?: { message: string; code?: string; name?: string } };
type Pending = { resolve: (v: unknown) => void; reject: (err: unknown) => void };

/** The process's writer thread: requests are answered in the order they were sent. */
class WriterThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #dead: Error | undefined;
  readonly #startedAt = performance.now();

  constructor() {
    const driver = createRequire(import.meta.url).resolve('better-sqlite3');
    this.#worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { driver } });
    this.#worker.unref();
    this.#worker.on('message', (reply: Reply) => this.#settle(reply));
    this.#worker.on('error', (err) => this.#die(err));
    this.#worker.on('exit', (code) => this.#die(new Error(`writer thread exited (code ${code})`)));
  }

  get alive(): boolean {
    return this.#dead === undefined;
  }

  /** Why the thread died (undefined while it is alive). */
  get error(): Error | undefined {
    return this.#dead;
  }

  request(message: Record<string, unknown>): Promise<unknown> {
    if (this.#dead) return Promise.reject(threadGone(this.#dead));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      // Keep the process up while a write is in flight (it may be the last thing it does).
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(id, { resolve, reject });
      this.#worker.postMessage({ ...message, id });
    });
  }

  #settle(reply: Reply): void {
    const p = this.#pending.get(reply.id);
    if (!p) return;
    this.#pending.delete(reply.id);
    if (this.#pending.size === 0) this.#worker.unref();
    if (reply.err) {
      p.reject(replyError(reply.err));
    } else {
      p.resolve(reply.ok);
    }
  }

  #die(err: Error): void {
    if (this.#dead) return;
    this.#dead = err;
    if (thread === this) {
      thread = undefined;
      // The next write starts a new thread: at once after a thread that ran for a while, after a
      // backoff (100 ms doubling to 5 s) after one that died soon after it started, so a thread
      // that cannot run does not make the process spin starting threads.
      const now = performance.now();
      restartBackoffMs =
        now - this.#startedAt < RESTART_SHORT_LIFE_MS
          ? Math.min(RESTART_MAX_MS, Math.max(RESTART_MIN_MS, restartBackoffMs * 2))
          : 0;
      restartAt = now + restartBackoffMs;
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(threadGone(err));
  }
}

/** An error as the thread reported it: ciport's own codes become CiportErrors again. */
function replyError(e: NonNullable<Reply['err']>): Error {
  if (e.code?.startsWith('CIPORT_E_')) return new CiportError(e.code as ErrorCode, e.message);
  const err = new Error(e.message) as Error & { code?: string };
  if (e.name) err.name = e.name;
  if (e.code) err.code = e.code;
  return err;
}

/** The error of a request that the writer thread could not answer because it died. */
const GONE = Symbol('ciport.writerGone');

/** Whether `err` says the writer thread died (the request may or may not have run). */
export function isWriterGone(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { [GONE]?: boolean })[GONE] === true;
}

function threadGone(err: Error): StoreError {
  return markGone(
    new StoreError(
      'CIPORT_E_STORE_UNAVAILABLE',
      `store unavailable: sqlite writer thread failed: ${err.message}`,
      {
        cause: err,
      },
    ),
  );
}

function markGone(err: StoreError): StoreError {
  Object.defineProperty(err, GONE, { value: true });
  return err;
}

let thread: WriterThread | undefined;
let nextConn = 1;
/** When a new thread may be started after a crash, and the current restart backoff. */
let restartAt = 0;
let restartBackoffMs = 0;
const RESTART_SHORT_LIFE_MS = 1_000;
const RESTART_MIN_MS = 100;
const RESTART_MAX_MS = 5_000;

/** The live writer thread; after a crash a new one, once the restart backoff has passed. */
async function liveThread(): Promise<WriterThread> {
  if (thread) return thread;
  const wait = restartAt - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  thread ??= new WriterThread();
  return thread;
}

/** Tests: make the writer thread fail as an unexpected crash would. */
export async function crashWriterThreadForTests(): Promise<void> {
  const t = thread;
  if (!t) return;
  await t.request({ op: 'crash' }).catch(() => {});
  while (t.alive) await new Promise((r) => setTimeout(r, 5));
}

/** An audit event ready to chain (src/audit/chain.ts PreparedEvent). */
export interface BatchEvent {
  readonly type: string;
  readonly time: number | undefined;
  readonly dataText: string;
}

/** Where the writer put an event in the chain. */
export interface ChainedEvent {
  seq: number;
  time: number;
  hash: string;
  prevHash: string;
}

/**
 * One statement of a write job. `ifNone`: what a statement that changes no row means — `fail`
 * the job with `code` and `message`, or `stop` it (undone, no event, resolves to null).
 */
export interface WriteStep {
  readonly sql: string;
  readonly params: readonly unknown[];
  readonly ifNone?: 'fail' | 'stop';
  readonly code?: string;
  readonly message?: string;
}

/**
 * A state change as data, run entirely in the writer thread: its statements in order, then its
 * audit events chained from the current head (time defaulting to `now`), atomically.
 */
export interface WriteJob {
  readonly steps: readonly WriteStep[];
  readonly events: readonly BatchEvent[];
  readonly now: number;
}

/** A job's outcome: where its events went in the chain, null if a `stop` step stopped it. */
export type WriteJobOutcome = { ok: ChainedEvent[] | null } | { err: Error };

/** One store's connection in the writer thread. */
export interface SqliteWriter {
  /** Kysely over the writer connection (one connection: callers queue for it). */
  readonly dialect: Dialect;
  /** Run one statement for each row of `rows`, in the connection's current transaction. */
  runMany(sql: string, rows: unknown[][]): Promise<void>;
  /**
   * Append a batch of prepared audit events in a transaction of its own, chained in order from
   * the current head; resolves once committed, to each event's seq, time, hash and prev_hash.
   */
  appendAudit(events: readonly BatchEvent[], now: number): Promise<ChainedEvent[]>;
  /**
   * Run write jobs in one message, a savepoint each (a job that fails is undone alone and
   * reported in its outcome). `begin`: in one transaction of their own, resolving after its
   * commit; otherwise inside the connection's current transaction.
   */
  runJobs(jobs: readonly WriteJob[], begin: boolean): Promise<WriteJobOutcome[]>;
  /** Roll back the connection's transaction, if one is open. */
  rollback(): Promise<void>;
  /**
   * Resolve if the connection can write: its thread is alive, or a new one could be started and
   * the file opened in it now. Rejects with CIPORT_E_STORE_UNAVAILABLE otherwise.
   */
  ping(): Promise<void>;
  /** Close the connection (idempotent). */
  close(): Promise<void>;
}

/**
 * Open `file` in the writer thread with the store's pragmas (WAL when `wal`, synchronous=FULL,
 * foreign keys, busy timeout). Rejects with the driver's error (code SQLITE_…) if it cannot.
 *
 * If the writer thread dies, the next request starts a new thread (liveThread: with a backoff
 * after a thread that died at once) and opens the file again there before it is sent; an
 * in-memory database died with its thread and is not reopened. A transaction begun on the dead
 * thread died with it: its remaining statements (and its commit) fail with
 * CIPORT_E_STORE_UNAVAILABLE instead of running, uncommitted, on the new connection.
 */
export async function openSqliteWriter(
  file: string,
  options: { timeout: number; wal: boolean },
): Promise<SqliteWriter> {
  const id = nextConn++;
  const memory = file === ':memory:';
  const openMessage = { op: 'open', conn: id, file, timeout: options.timeout, wal: options.wal };
  let bound = await liveThread();
  await bound.request(openMessage);
  let closing = false;
  let reopening: Promise<WriterThread> | undefined;
  /** The thread a transaction (Kysely path: begin … commit/rollback) was begun on. */
  let txOn: WriterThread | undefined;
  const current = (): Promise<WriterThread> => {
    if (bound.alive) return Promise.resolve(bound);
    if (memory || closing) return Promise.reject(threadGone(bound.error ?? new Error('closed')));
    reopening ??= (async () => {
      const t = await liveThread();
      if (t !== bound) {
        await t.request(openMessage);
        bound = t;
      }
      return t;
    })().finally(() => {
      reopening = undefined;
    });
    return reopening;
  };
  const send = async (message: Record<string, unknown>, kind?: TxKind): Promise<unknown> => {
    if (txOn && !txOn.alive) {
      const dead = txOn;
      if (kind === 'rollback') {
        txOn = undefined;
        return message.op === 'query' ? { changes: 0, lastInsertRowid: 0 } : null;
      }
      if (kind === 'end') txOn = undefined;
      throw threadGone(dead.error ?? new Error('exited'));
    }
    const t = await current();
    const r = await t.request({ ...message, conn: id });
    if (kind === 'begin') txOn = t;
    else if (kind === 'end' || kind === 'rollback') txOn = undefined;
    return r;
  };
  let closed: Promise<void> | undefined;
  const connection = new WorkerConnection(send);
  return {
    dialect: {
      createAdapter: () => new SqliteAdapter(),
      createDriver: () => new WorkerDriver(connection, () => closeOnce()),
      createQueryCompiler: () => new SqliteQueryCompiler(),
      createIntrospector: (db: Kysely<unknown>) => new SqliteIntrospector(db),
    },
    runMany: async (sql, rows) => {
      await send({ op: 'runMany', sql, rows });
    },
    appendAudit: async (events, now) => {
      const batch = events.map((e) => ({ type: e.type, time: e.time, dataText: e.dataText }));
      const r = (await send({ op: 'append', events: batch, now })) as {
        first: string;
        out: Array<number | string>;
      };
      const chained: ChainedEvent[] = [];
      let prevHash = r.first;
      for (let i = 0; i < r.out.length; i += 3) {
        const hash = r.out[i + 2] as string;
        chained.push({ seq: r.out[i] as number, time: r.out[i + 1] as number, hash, prevHash });
        prevHash = hash;
      }
      return chained;
    },
    runJobs: async (jobs, begin) => {
      const replies = (await send({ op: 'jobs', jobs, begin })) as Array<{
        ok?: Array<number | string> | null;
        err?: Reply['err'];
      }>;
      return replies.map((r): WriteJobOutcome => {
        if (r.err) return { err: replyError(r.err) };
        const out = r.ok;
        if (!out) return { ok: null };
        const chained: ChainedEvent[] = [];
        let prevHash = out[0] as string;
        for (let i = 1; i < out.length; i += 3) {
          const hash = out[i + 2] as string;
          chained.push({ seq: out[i] as number, time: out[i + 1] as number, hash, prevHash });
          prevHash = hash;
        }
        return { ok: chained };
      });
    },
    rollback: async () => {
      await send({ op: 'rollback' }, 'rollback');
    },
    ping: async () => {
      if (bound.alive) return;
      // In the restart backoff after a thread that died at once: say so now, do not wait.
      if (!thread && restartAt > performance.now()) {
        throw threadGone(bound.error ?? new Error('exited'));
      }
      await send({ op: 'ping' });
    },
    close: () => closeOnce(),
  };
  function closeOnce(): Promise<void> {
    closing = true;
    closed ??= bound.alive
      ? bound.request({ op: 'close', conn: id }).then(
          () => undefined,
          () => undefined,
        )
      : Promise.resolve();
    return closed;
  }
}

/** What a statement does to the connection's transaction (Kysely path). */
type TxKind = 'begin' | 'end' | 'rollback';

function txKind(sql: string): TxKind | undefined {
  const s = sql.trim().toLowerCase();
  if (s.startsWith('begin')) return 'begin';
  if (s === 'commit' || s === 'end') return 'end';
  if (s === 'rollback') return 'rollback';
  return undefined;
}

class WorkerConnection implements DatabaseConnection {
  readonly #send: (message: Record<string, unknown>, kind?: TxKind) => Promise<unknown>;

  constructor(send: (message: Record<string, unknown>, kind?: TxKind) => Promise<unknown>) {
    this.#send = send;
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<QueryResult<R>> {
    const r = (await this.#send(
      { op: 'query', sql: compiled.sql, params: compiled.parameters },
      txKind(compiled.sql),
    )) as { rows: R[] } | { changes: number; lastInsertRowid: number | bigint };
    if ('rows' in r) return { rows: r.rows };
    return { numAffectedRows: BigInt(r.changes), insertId: BigInt(r.lastInsertRowid), rows: [] };
  }

  // biome-ignore lint/correctness/useYield: the store never streams from the writer connection
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('the sqlite writer connection does not stream');
  }
}

/** Kysely driver with one connection (like Kysely's own SQLite driver): callers queue for it. */
class WorkerDriver implements Driver {
  readonly #connection: WorkerConnection;
  readonly #close: () => Promise<void>;
  #tail: Promise<void> = Promise.resolve();
  #release: (() => void) | undefined;

  constructor(connection: WorkerConnection, close: () => Promise<void>) {
    this.#connection = connection;
    this.#close = close;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise((resolve) => {
      release = resolve;
    });
    await previous;
    this.#release = release;
    return this.#connection;
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin'));
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('commit'));
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('rollback'));
  }

  async releaseConnection(): Promise<void> {
    const release = this.#release;
    this.#release = undefined;
    release?.();
  }

  async destroy(): Promise<void> {
    await this.#close();
  }
}
