// The audit writer under load: batches chained in memory and (SQLite) committed by the writer
// thread must keep ONE chain in call order, lose nothing on close, let the backlog bound memory
// while the store is stalled, and report failures with stable codes. Both engines.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AuditBacklog } from '../../src/audit/backlog.js';
import { auditEvent, verifyChain } from '../../src/audit/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import { crashWriterThreadForTests } from '../../src/store/sqlite-writer.js';
import { ensureBuilt } from '../fixtures/cli.js';
import { waitFor } from '../fixtures/wait-for.js';
import { configLoaded, newSession, opened, record } from './fixtures.js';
import { engines, type TestDb } from './harness.js';

const query = (who: string, i: number) =>
  auditEvent('query', {
    session: `ses_${who}`,
    connection: `con_${who}`,
    principal: {
      issuer: 'gl',
      subject: 's',
      project: 'p',
      ref: 'main',
      pipeline: '1',
      job: '2',
      job_url: null,
    },
    target: 'db',
    rule: 'r',
    exit: 'gateway',
    statement: `SELECT ${i} /* ${who} */`,
  } as never);

for (const h of engines()) {
  describe(`audit writer [${h.engine}]`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    const count = async () => {
      const [row] = await t.raw.query<{ n: number | string }>('select count(*) as n from audit_events');
      return Number(row?.n);
    };
    const statements = async (store: Store) =>
      (await store.auditEvents({ limit: 10_000 }))
        .filter((e) => e.type === 'query')
        .map((e) => (e.data as { statement: string }).statement);

    it('keeps one chain in call order when two stores batch appends and state changes concurrently', async () => {
      const [a, b] = [await t.open(), await t.open()];
      const ops: Array<Promise<unknown>> = [];
      const seqs = { a: [] as Array<Promise<number>>, b: [] as Array<Promise<number>> };
      for (let i = 0; i < 150; i++) {
        for (const [who, store] of [
          ['a', a],
          ['b', b],
        ] as const) {
          const p = store.appendAudit(query(who, i)).then((e) => e.seq);
          seqs[who].push(p);
          ops.push(p);
          if (i % 25 === 0) ops.push(store.createSession(record(newSession()), opened));
        }
      }
      await Promise.all(ops);
      expect(await count()).toBe(300 + 12);
      expect(await verifyChain(a)).toMatchObject({ ok: true, count: 312 });
      for (const who of ['a', 'b'] as const) {
        const got = await Promise.all(seqs[who]);
        // Each store's events are chained in the order it was called.
        expect(got).toEqual([...got].sort((x, y) => x - y));
        const mine = (await statements(a)).filter((s) => s.includes(`/* ${who} */`));
        expect(mine).toEqual(Array.from({ length: 150 }, (_, i) => `SELECT ${i} /* ${who} */`));
      }
    });

    it('concurrent state changes: one that fails is undone alone, the others commit with their events', async () => {
      const store = await t.open();
      const sessions = Array.from({ length: 12 }, () => newSession());
      const jti = { issuer: 'gitlab', jti: 'one-token', expiresAt: sessions[0]!.createdAt + 60_000 };
      const results = await Promise.allSettled(
        sessions.map((s, i) => {
          if (i === 3) {
            // The event builder throws inside the transaction.
            return store.createSession(record(s), () => {
              throw new Error('builder failed');
            });
          }
          // Two sessions present the same single-use token: exactly one may open.
          return store.createSession(record(s), opened, i === 5 || i === 7 ? { jti } : {});
        }),
      );
      const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [i] : []));
      expect(failed).toContain(3);
      expect(failed.length).toBe(2);
      const replayed = failed.find((i) => i !== 3) as number;
      expect([5, 7]).toContain(replayed);
      expect((results[replayed] as PromiseRejectedResult).reason).toMatchObject({
        code: 'CIPORT_E_TOKEN_REPLAYED',
      });
      const stored = new Set((await store.listSessions()).map((s) => s.id));
      sessions.forEach((s, i) => {
        expect(stored.has(s.id)).toBe(!failed.includes(i));
      });
      const events = await store.auditEvents();
      expect(
        events
          .filter((e) => e.type === 'session.opened')
          .map((e) => (e.data as { session: string }).session)
          .sort(),
      ).toEqual([...stored].sort());
      expect(await verifyChain(store)).toMatchObject({ ok: true, count: 10 });
    });

    it('commits every event handed to it before close() resolves', async () => {
      const store = await t.open();
      const writes = Array.from({ length: 1200 }, (_, i) => store.appendAudit(query('c', i)));
      await store.close();
      const settled = await Promise.allSettled(writes);
      expect(settled.filter((s) => s.status === 'rejected')).toEqual([]);
      expect(await count()).toBe(1200);
      const again = await t.open();
      expect(await verifyChain(again)).toMatchObject({ ok: true, count: 1200 });
      expect(await statements(again)).toEqual(Array.from({ length: 1200 }, (_, i) => `SELECT ${i} /* c */`));
    });

    it('defers a lone query event to share a commit, but never past an awaited event or close()', async () => {
      const store = await t.open();
      await store.appendAudit(configLoaded(0)); // a commit just started: a query now waits for the interval
      const q1 = store.appendAudit(query('d', 1));
      const c1 = store.appendAudit(configLoaded(1)); // someone waits for this one: it commits q1 with it
      const [a, b] = await Promise.all([q1, c1]);
      expect(b.seq).toBe(a.seq + 1);
      const q2 = store.appendAudit(query('d', 2));
      await store.close();
      await expect(q2).resolves.toMatchObject({ type: 'query', seq: b.seq + 1 });
      const again = await t.open();
      expect(await statements(again)).toEqual(['SELECT 1 /* d */', 'SELECT 2 /* d */']);
      expect(await verifyChain(again)).toMatchObject({ ok: true, count: 4 });
    });

    it('lets the backlog bound what waits while the store is stalled, and loses nothing', async () => {
      const store = await t.open();
      await store.appendAudit(configLoaded(0));
      const backlog = new AuditBacklog(100);
      // Another client holds the write lock (SQLite) / locks the table (PostgreSQL).
      if (h.engine === 'sqlite') {
        await t.raw.exec('begin immediate');
      } else {
        await t.raw.exec('begin');
        await t.raw.exec('lock table audit_events in exclusive mode');
      }
      let produced = 0;
      const writes: Array<Promise<unknown>> = [];
      const producer = (async () => {
        for (let i = 0; i < 1000; i++) {
          const wait = backlog.room();
          if (wait) await wait;
          writes.push(backlog.track(store.appendAudit(query('p', i))));
          produced++;
        }
      })();
      await waitFor(() => backlog.stalls > 0, 10_000);
      // The producer stopped at the bound, and the event loop is free: reads still answer.
      expect(produced).toBe(100);
      expect(backlog.pending).toBe(100);
      expect((await store.auditHead())?.seq).toBe(1);
      await t.raw.exec('commit');
      await producer;
      await Promise.all(writes);
      expect(backlog.peak).toBeLessThanOrEqual(100);
      expect(backlog.pending).toBe(0);
      expect(await verifyChain(store)).toMatchObject({ ok: true, count: 1001 });
      expect(await statements(store)).toEqual(Array.from({ length: 1000 }, (_, i) => `SELECT ${i} /* p */`));
    });

    it('fails a batch with the driver error, writes nothing of it, and keeps working', async () => {
      const store = await t.open();
      await store.appendAudit(configLoaded(0));
      await t.raw.failAuditInserts();
      const results = await Promise.allSettled([
        store.appendAudit(query('f', 1)),
        store.appendAudit(query('f', 2)),
        store.createSession(record(newSession()), opened),
      ]);
      for (const r of results) {
        expect(r.status).toBe('rejected');
        expect(String((r as PromiseRejectedResult).reason?.message)).toMatch(/injected failure/);
      }
      if (h.engine === 'sqlite') {
        expect((results[0] as PromiseRejectedResult).reason).toMatchObject({
          code: 'SQLITE_CONSTRAINT_TRIGGER',
        });
      }
      expect(await count()).toBe(1);
      expect(await store.listSessions()).toEqual([]);
      await t.raw.exec(
        h.engine === 'sqlite'
          ? 'drop trigger test_fail_audit'
          : 'drop trigger test_fail_audit on audit_events',
      );
      await store.appendAudit(query('f', 3));
      expect(await verifyChain(store)).toMatchObject({ ok: true, count: 2 });
    });

    if (h.engine === 'sqlite') {
      it('the writer thread also starts in a process run as `node --expose-gc --input-type=module -e`', async () => {
        const dir = mkdtempSync(join(tmpdir(), 'ciport-writer-'));
        try {
          const entry = pathToFileURL(join(process.cwd(), 'dist/src/store/index.js')).href;
          const script = `
            const { openStore } = await import(${JSON.stringify(entry)});
            const store = await openStore({ sqlite: { path: ${JSON.stringify(join(dir, 'c.db'))} } }, { dataDir: ${JSON.stringify(dir)} });
            const e = await store.appendAudit({ type: 'config.loaded', data: { source: 'x', config_hash: 'h', issuers: [], targets: [], rules: [] } });
            await store.close();
            process.stdout.write(String(e.seq));`;
          await ensureBuilt();
          const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
            encoding: 'utf8',
          });
          expect(out).toBe('1');
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });

      it('a writer thread that dies is replaced on the next write; nothing handed over is lost', async () => {
        const store = await t.open();
        await store.appendAudit(configLoaded(0));
        await crashWriterThreadForTests();
        // The next write starts a new thread and reopens the store's connection there.
        expect(await store.appendAudit(configLoaded(1))).toMatchObject({ seq: 2 });
        expect((await store.auditHead())?.seq).toBe(2);
        await expect(store.checkWritable?.()).resolves.toBeUndefined();
        const fresh = await t.open();
        await fresh.appendAudit(configLoaded(2));
        expect(await verifyChain(fresh)).toMatchObject({ ok: true, count: 3 });
      });
    }
  });
}

describe('audit writer [sqlite in memory]', () => {
  it('an in-memory store dies with its writer thread: writes and checkWritable fail with CIPORT_E_STORE_UNAVAILABLE', async () => {
    const store = await openStore({ sqlite: { path: ':memory:' } } as never, { dataDir: tmpdir() });
    try {
      await store.appendAudit(configLoaded(0));
      await expect(store.checkWritable?.()).resolves.toBeUndefined();
      await crashWriterThreadForTests();
      await expect(store.appendAudit(configLoaded(1))).rejects.toMatchObject({
        code: 'CIPORT_E_STORE_UNAVAILABLE',
      });
      await expect(store.checkWritable?.()).rejects.toMatchObject({ code: 'CIPORT_E_STORE_UNAVAILABLE' });
    } finally {
      await store.close().catch(() => {});
    }
  });
});
