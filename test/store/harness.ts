// One harness per engine so the same suites run against SQLite and PostgreSQL.
//
// SQLite: a fresh file in a temp dir per test. PostgreSQL: one throwaway database per test file
// run (`ciport_test_<random>`, dropped afterwards) whose public schema is recreated per test.
// PostgreSQL is required: if it is unreachable the suite FAILS with instructions; it never skips.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { Secret } from '../../src/config/secret.js';
import { openStore, type Store, type StoreConfig, type StoreEngine } from '../../src/store/index.js';
import { openRawSqlite, type RawSqlite } from '../helpers/sqlite.js';

/** Admin connection for the PostgreSQL tests; override with CIPORT_TEST_PG_URL. */
export const PG_ADMIN_URL = process.env.CIPORT_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface RawDb {
  /** Run SQL directly, outside the store. `?` placeholders (converted to $n for PostgreSQL). */
  exec(text: string, params?: unknown[]): Promise<void>;
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /** Drop the append-only guard, as an attacker with database access would. */
  allowTampering(): Promise<void>;
  /** Make every insert into audit_events fail, to force a failure inside a store transaction. */
  failAuditInserts(): Promise<void>;
}

export interface TestDb {
  config: StoreConfig;
  raw: RawDb;
  /** Open a store on this database; closed by dispose(). */
  open(options?: { clock?: () => number }): Promise<Store>;
  dispose(): Promise<void>;
}

export interface Harness {
  engine: StoreEngine;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  fresh(): Promise<TestDb>;
  /** A config whose database cannot be reached, and a string that must not leak into errors. */
  unreachable(): { config: StoreConfig; secret?: string };
}

function tracker(config: StoreConfig, dataDir: string) {
  const stores: Store[] = [];
  return {
    open: async (options: { clock?: () => number } = {}) => {
      const store = await openStore(config, { dataDir, ...options });
      stores.push(store);
      return store;
    },
    closeAll: async () => {
      await Promise.all(stores.map((s) => s.close()));
    },
  };
}

// ---- SQLite --------------------------------------------------------------------------------

export function sqliteHarness(): Harness {
  let root = '';
  return {
    engine: 'sqlite',
    async setup() {
      root = mkdtempSync(join(tmpdir(), 'ciport-store-'));
    },
    async teardown() {
      if (root) rmSync(root, { recursive: true, force: true });
    },
    async fresh() {
      const dir = mkdtempSync(join(root, 't-'));
      const file = join(dir, 'ciport.db');
      const config: StoreConfig = { sqlite: { path: file } };
      const stores = tracker(config, dir);
      let conn: RawSqlite | undefined;
      const db = () => {
        conn ??= openRawSqlite(file);
        return conn;
      };
      const raw: RawDb = {
        async exec(text, params = []) {
          db()
            .prepare(text)
            .run(...(params as unknown[]));
        },
        async query<T>(text: string, params: unknown[] = []) {
          return db()
            .prepare(text)
            .all(...(params as unknown[])) as T[];
        },
        async allowTampering() {
          db().exec('drop trigger audit_events_no_update; drop trigger audit_events_no_delete;');
        },
        async failAuditInserts() {
          db().exec(
            "create trigger test_fail_audit before insert on audit_events begin select raise(abort, 'injected failure'); end",
          );
        },
      };
      return {
        config,
        raw,
        open: stores.open,
        async dispose() {
          await stores.closeAll();
          conn?.close();
        },
      };
    },
    unreachable() {
      // The parent "directory" is a regular file: the database can never be created.
      const dir = mkdtempSync(join(root, 'u-'));
      const blocker = join(dir, 'not-a-dir');
      writeFileSync(blocker, 'just a file');
      return { config: { sqlite: { path: join(blocker, 'ciport.db') } } };
    },
  };
}

// ---- PostgreSQL ----------------------------------------------------------------------------

export function postgresHarness(): Harness {
  const dbName = `ciport_test_${randomBytes(6).toString('hex')}`;
  let admin: pg.Client | undefined;
  let conn: pg.Client | undefined;
  const dbUrl = () => {
    const u = new URL(PG_ADMIN_URL);
    u.pathname = `/${dbName}`;
    return u.toString();
  };
  const pgText = (text: string) => {
    let n = 0;
    return text.replace(/\?/g, () => `$${++n}`);
  };
  return {
    engine: 'postgres',
    async setup() {
      admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
      try {
        await admin.connect();
      } catch (err) {
        await admin.end().catch(() => {});
        admin = undefined;
        throw new Error(
          `PostgreSQL is required for the store contract tests and is not reachable at ${redact(PG_ADMIN_URL)} ` +
            `(${(err as Error).message}). Install and start PostgreSQL 13 or later with trust ` +
            `authentication for user "postgres" on 127.0.0.1:5432 (Debian/Ubuntu: ` +
            '`apt-get install postgresql && pg_ctlcluster <version> main start`; or ' +
            '`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`), ' +
            'or point CIPORT_TEST_PG_URL at a server where the user may CREATE DATABASE.',
        );
      }
      await admin.query(`create database ${dbName}`);
      conn = new pg.Client({ connectionString: dbUrl() });
      await conn.connect();
    },
    async teardown() {
      await conn?.end().catch(() => {});
      if (admin) {
        await admin.query(`drop database if exists ${dbName} with (force)`);
        await admin.end();
      }
    },
    async fresh() {
      if (!conn) throw new Error('postgres harness not set up');
      const c = conn;
      await c.query('drop schema public cascade; create schema public;');
      // Exercise the Secret form of `store.postgres.url`.
      const config: StoreConfig = { postgres: { url: new Secret({ env: 'CIPORT_TEST_PG' }, dbUrl()) } };
      const stores = tracker(config, tmpdir());
      const raw: RawDb = {
        async exec(text, params = []) {
          await c.query(pgText(text), params);
        },
        async query<T>(text: string, params: unknown[] = []) {
          return (await c.query(pgText(text), params)).rows as T[];
        },
        async allowTampering() {
          await c.query('drop trigger audit_events_append_only on audit_events');
        },
        async failAuditInserts() {
          await c.query(`
            create function test_fail_audit() returns trigger language plpgsql as $$
            begin raise exception 'injected failure'; end $$;
            create trigger test_fail_audit before insert on audit_events
            for each row execute function test_fail_audit();`);
        },
      };
      return { config, raw, open: stores.open, dispose: stores.closeAll };
    },
    unreachable() {
      return {
        config: { postgres: { url: 'postgres://ciport:hunter2-do-not-leak@127.0.0.1:1/ciport' } },
        secret: 'hunter2-do-not-leak',
      };
    },
  };
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(CIPORT_TEST_PG_URL)';
  }
}

/** Both engines, for `for (const h of engines()) describe(...)`. */
export function engines(): Harness[] {
  return [sqliteHarness(), postgresHarness()];
}
