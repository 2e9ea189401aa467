// Hostile review (issue 11): docs/audit.md "Order. One chain: seq follows the order of the
// appendAudit calls of a store". Query events now wait in the audit batcher (group-commit delay
// up to 5 ms under load, a separate queue), while a state change (endSession) goes through the
// state-change queue. A statement the session ran BEFORE it was ended must not be chained
// after its `session.ended`.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditEvent, verifyChain } from '../../src/audit/index.js';
import { ended, newSession, opened, record } from '../store/fixtures.js';
import { engines, type TestDb } from '../store/harness.js';

for (const h of engines()) {
  describe(`audit order, query events vs state changes [${h.engine}] (hostile review)`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    it('chains a query appended before endSession before the session.ended event', async () => {
      const store = await t.open();
      const { session } = await store.createSession(record(newSession()), opened);
      const query = (i: number) =>
        auditEvent('query', {
          session: session.id,
          connection: 'con_1',
          principal: session.principal,
          target: 'staging-db',
          rule: session.rule,
          exit: 'gateway',
          statement: `SELECT ${i}`,
        } as never);
      // Load: the batcher is busy committing, so the next query waits for the group delay.
      const first = store.appendAudit(query(0));
      const before = store.appendAudit(query(1)); // the job's last statement
      const end = store.endSession(session.id, 'client_end', ended); // then the job ends
      await Promise.all([first, before, end]);
      const events = await store.auditEvents({ limit: 100 });
      const seqOf = (pred: (e: (typeof events)[number]) => boolean) => events.find(pred)?.seq ?? -1;
      const q1 = seqOf(
        (e) => e.type === 'query' && (e.data as { statement: string }).statement === 'SELECT 1',
      );
      const endSeq = seqOf((e) => e.type === 'session.ended');
      expect(await verifyChain(store)).toMatchObject({ ok: true });
      expect(
        q1,
        `order: ${events.map((e) => `${e.seq}:${e.type}${e.type === 'query' ? `(${(e.data as { statement: string }).statement})` : ''}`).join(' ')}`,
      ).toBeLessThan(endSeq);
    });
  });
}
