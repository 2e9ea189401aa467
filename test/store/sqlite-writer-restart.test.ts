// The SQLite writer thread restarts after a crash (src/store/sqlite-writer.ts): a connection is
// reopened on the new thread, but a transaction begun on the dead thread is not continued there
// (its statements would otherwise run, and commit, one by one outside any transaction).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kysely, sql } from 'kysely';
import { afterEach, describe, expect, it } from 'vitest';
import { crashWriterThreadForTests, openSqliteWriter } from '../../src/store/sqlite-writer.js';

describe('sqlite writer thread restart', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('reopens the connection on a new thread, and fails the rest of a transaction begun on the dead one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciport-writer-'));
    dirs.push(dir);
    const writer = await openSqliteWriter(join(dir, 'w.db'), { timeout: 1000, wal: true });
    const db = new Kysely<{ t: { v: number } }>({ dialect: writer.dialect });
    try {
      await sql`create table t (v integer)`.execute(db);
      await db.connection().execute(async (conn) => {
        await sql`begin immediate`.execute(conn);
        await sql`insert into t (v) values (1)`.execute(conn);
        await crashWriterThreadForTests();
        // The transaction died with its thread: the next statement and the commit fail.
        await expect(sql`insert into t (v) values (2)`.execute(conn)).rejects.toMatchObject({
          code: 'CIPORT_E_STORE_UNAVAILABLE',
        });
        await expect(sql`commit`.execute(conn)).rejects.toMatchObject({ code: 'CIPORT_E_STORE_UNAVAILABLE' });
      });
      // The next write runs on a new thread (after a short backoff: this thread lived < 1 s), on
      // the reopened file: nothing of the dead transaction.
      await sql`insert into t (v) values (3)`.execute(db);
      await expect(writer.ping()).resolves.toBeUndefined();
      const rows = await sql<{ v: number }>`select v from t order by v`.execute(db);
      expect(rows.rows.map((r) => r.v)).toEqual([3]);
    } finally {
      await db.destroy();
    }
  });
});
