// Raw SQLite access for tests that tamper with the store as an attacker with file access would.
// Like the store's engine (src/store/engines.ts), it never lets a better-sqlite3 object be
// garbage-collected: on Node 24 that aborts the process.
import BetterSqlite3 from 'better-sqlite3';

const retained: unknown[] = [];

export interface RawSqlite {
  exec(sql: string): void;
  prepare(sql: string): BetterSqlite3.Statement;
  close(): void;
}

export function openRawSqlite(file: string): RawSqlite {
  const db = new BetterSqlite3(file, { timeout: 5000 });
  retained.push(db);
  const statements = new Map<string, BetterSqlite3.Statement>();
  return {
    exec: (sql) => {
      db.exec(sql);
    },
    prepare: (sql) => {
      let stmt = statements.get(sql);
      if (!stmt) {
        stmt = db.prepare(sql);
        statements.set(sql, stmt);
        retained.push(stmt);
      }
      return stmt;
    },
    close: () => db.close(),
  };
}
