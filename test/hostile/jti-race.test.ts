// Hostile review (issue 11): a single-use token (jti) raced through the SQLite group commit —
// many concurrent createSession calls with the same jti land in one writer-thread message (a
// savepoint each) and across two stores on one file. Exactly one may succeed.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/index.js';
import { newSession, opened, record } from '../store/fixtures.js';
import { engines, type TestDb } from '../store/harness.js';

for (const h of engines()) {
  describe(`single-use jti raced through the group commit [${h.engine}] (hostile review)`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    it('lets exactly one of 40 concurrent opens with the same jti through (two stores, one database)', async () => {
      const a = await t.open();
      const b = await t.open();
      const jti = { issuer: 'gl', jti: 'same-token', expiresAt: Date.now() + 3_600_000 };
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) =>
          (i % 2 ? a : b).createSession(record(newSession()), opened, { jti }),
        ),
      );
      const ok = results.filter((r) => r.status === 'fulfilled');
      const codes = new Set(
        results
          .filter((r): r is PromiseRejectedResult => r.status === 'rejected')
          .map((r) => (r.reason as { code?: string }).code),
      );
      expect(ok.length).toBe(1);
      expect([...codes]).toEqual(['CIPORT_E_TOKEN_REPLAYED']);
      expect((await a.listSessions()).length).toBe(1);
      expect(await verifyChain(a)).toMatchObject({ ok: true, count: 1 });
    });
  });
}
