// Store contract for issue 6, on both engines: the job reference persisted with a session,
// single-use jtis claimed atomically with session creation, and session-end notifications.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { waitFor } from '../fixtures/wait-for.js';
import { ended, MINUTE, newSession, opened, record, T0 } from './fixtures.js';
import { engines, type TestDb } from './harness.js';

const jobRef = { platform: 'gitlab', issuer: 'gitlab', project: '61577203', job: '5678' };

for (const h of engines()) {
  describe(`store contract: job liveness [${h.engine}]`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    const count = async (table: string) => {
      const [row] = await t.raw.query<{ n: number | string }>(`select count(*) as n from ${table}`);
      return Number(row?.n);
    };

    it('persists which rule granted each target (null when absent)', async () => {
      const store = await t.open();
      const targetRules = { 'staging-db': 'ledger-main', 'test-db': 'any-branch' };
      const a = newSession({ targetRules });
      const b = newSession();
      await store.createSession(record(a), opened);
      await store.createSession(record(b), opened);
      const reopened = await t.open();
      expect((await reopened.getSession(a.id))?.targetRules).toEqual(targetRules);
      expect((await reopened.getSession(b.id))?.targetRules).toBeNull();
    });

    it('persists the job reference with the session (null when absent)', async () => {
      const store = await t.open();
      const a = newSession({ jobRef });
      const b = newSession();
      const { session } = await store.createSession(record(a), opened);
      await store.createSession(record(b), opened);
      expect(session.jobRef).toEqual(jobRef);
      const reopened = await t.open();
      expect((await reopened.getSession(a.id))?.jobRef).toEqual(jobRef);
      expect((await reopened.getSession(b.id))?.jobRef).toBeNull();
      expect((await reopened.listSessions({ activeOnly: true })).find((s) => s.id === a.id)?.jobRef).toEqual(
        jobRef,
      );
      const change = await reopened.endSession(a.id, 'job_finished', (s) => ended(s, 'job_finished'));
      expect(change?.session).toMatchObject({ endReason: 'job_finished', jobRef });
    });

    it('a single-use jti opens one session; a replay writes nothing and is CIPORT_E_TOKEN_REPLAYED', async () => {
      const store = await t.open();
      const jti = { issuer: 'gitlab', jti: 'tok-1', expiresAt: T0 + 10 * MINUTE };
      await store.createSession(record(newSession()), opened, { jti });
      const replay = newSession();
      await expect(store.createSession(record(replay), opened, { jti })).rejects.toMatchObject({
        code: 'CIPORT_E_TOKEN_REPLAYED',
      });
      expect(await store.getSession(replay.id)).toBeUndefined();
      expect(await count('sessions')).toBe(1);
      expect(await count('audit_events')).toBe(1);
      // Another store (gateway) on the same database sees the claim too.
      const other = await t.open();
      await expect(other.createSession(record(newSession()), opened, { jti })).rejects.toMatchObject({
        code: 'CIPORT_E_TOKEN_REPLAYED',
      });
      // The same jti from another issuer is another token.
      await other.createSession(record(newSession()), opened, { jti: { ...jti, issuer: 'github' } });
      expect(await count('used_jtis')).toBe(2);
    });

    it('concurrent uses of one jti: exactly one session is created', async () => {
      const [a, b] = await Promise.all([t.open(), t.open()]);
      const jti = { issuer: 'gitlab', jti: 'race', expiresAt: T0 + MINUTE };
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) =>
          (i % 2 ? a : b).createSession(record(newSession()), opened, { jti }),
        ),
      );
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results) {
        if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'CIPORT_E_TOKEN_REPLAYED' });
      }
      expect(await count('sessions')).toBe(1);
    });

    it('used jtis are pruned after their expiry', async () => {
      const store = await t.open();
      const jti = { issuer: 'gitlab', jti: 'old', expiresAt: T0 + MINUTE };
      await store.createSession(record(newSession()), opened, { jti });
      await store.createSession(record(newSession()), opened, {
        jti: { issuer: 'gitlab', jti: 'live', expiresAt: T0 + 60 * MINUTE },
      });
      // A later creation prunes entries past their expiry (a token past exp cannot verify anyway).
      await store.createSession(record(newSession({ createdAt: T0 + 2 * MINUTE })), opened, {
        jti: { issuer: 'gitlab', jti: 'other', expiresAt: T0 + 3 * MINUTE },
      });
      const rows = await t.raw.query<{ jti: string }>('select jti from used_jtis order by jti');
      expect(rows.map((r) => r.jti)).toEqual(['live', 'other']);
    });

    it('subscribe: session ends committed through another store are announced', async () => {
      const a = await t.open();
      const b = await t.open();
      const heard: string[] = [];
      const unsubscribe = await a.subscribe((id) => heard.push(id));
      const s = newSession();
      await b.createSession(record(s), opened);
      const started = Date.now();
      await b.endSession(s.id, 'revoked', (x) => ended(x, 'revoked'));
      if (h.engine === 'postgres') {
        await waitFor(() => heard.includes(s.id), 2_000, 'the end notification');
        expect(heard).toEqual([s.id]);
        expect(Date.now() - started).toBeLessThan(1000);
        // A losing end (already ended) notifies nothing; after unsubscribe nothing arrives.
        await b.endSession(s.id, 'revoked', (x) => ended(x, 'revoked'));
        await unsubscribe();
        const s2 = newSession();
        await b.createSession(record(s2), opened);
        await b.endSession(s2.id, 'revoked', (x) => ended(x, 'revoked'));
        await new Promise((r) => setTimeout(r, 200));
        expect(heard).toEqual([s.id]);
      } else {
        // SQLite: one process per file; the session sweep is the mechanism.
        await new Promise((r) => setTimeout(r, 50));
        expect(heard).toEqual([]);
        await unsubscribe();
      }
    });
  });
}
