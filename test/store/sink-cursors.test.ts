// Store contract for the audit sinks' cursors and leases (migration 0008), on both engines: one
// owner at a time, a lapsed lease passes on, the cursor only moves forward from where its owner
// last saw it, and a released lease is free at once.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Store } from '../../src/store/index.js';
import { T0 } from './fixtures.js';
import { engines, type TestDb } from './harness.js';

for (const h of engines()) {
  describe(`store contract: audit sink cursors [${h.engine}]`, () => {
    let t: TestDb;
    let store: Store;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
      store = await t.open();
    });
    afterEach(() => t.dispose());

    it('a new sink starts at cursor 0 held by its first claimant; another gateway stands by', async () => {
      expect(await store.claimAuditSink('siem', 'gw_a', T0, T0 + 30_000)).toBe(0);
      expect(await store.claimAuditSink('siem', 'gw_b', T0 + 1, T0 + 30_001)).toBeUndefined();
      // The owner renews; a different sink is independent.
      expect(await store.claimAuditSink('siem', 'gw_a', T0 + 2, T0 + 30_002)).toBe(0);
      expect(await store.claimAuditSink('file', 'gw_b', T0 + 2, T0 + 30_002)).toBe(0);
      expect(await store.auditSinkCursors()).toEqual([
        { sink: 'file', seq: 0, owner: 'gw_b', leaseUntil: T0 + 30_002, updatedAt: T0 + 2 },
        { sink: 'siem', seq: 0, owner: 'gw_a', leaseUntil: T0 + 30_002, updatedAt: T0 },
      ]);
    });

    it('only the owner advances, only from the cursor it holds, only forward', async () => {
      await store.claimAuditSink('siem', 'gw_a', T0, T0 + 30_000);
      expect(await store.advanceAuditSink('siem', 'gw_a', 0, 5, T0 + 1)).toBe(true);
      expect(await store.advanceAuditSink('siem', 'gw_b', 5, 9, T0 + 2)).toBe(false);
      expect(await store.advanceAuditSink('siem', 'gw_a', 0, 9, T0 + 2)).toBe(false); // stale from
      await expect(store.advanceAuditSink('siem', 'gw_a', 5, 5, T0 + 2)).rejects.toMatchObject({
        code: 'CIPORT_E_INTERNAL',
      });
      expect((await store.auditSinkCursors())[0]).toMatchObject({ seq: 5, updatedAt: T0 + 1 });
    });

    it('a lapsed lease passes to the next claimant with the cursor; the old owner can no longer advance', async () => {
      await store.claimAuditSink('siem', 'gw_a', T0, T0 + 30_000);
      await store.advanceAuditSink('siem', 'gw_a', 0, 7, T0 + 1);
      expect(await store.claimAuditSink('siem', 'gw_b', T0 + 30_000, T0 + 60_000)).toBe(7);
      expect(await store.advanceAuditSink('siem', 'gw_a', 7, 9, T0 + 30_001)).toBe(false);
      expect(await store.claimAuditSink('siem', 'gw_a', T0 + 30_002, T0 + 60_002)).toBeUndefined();
    });

    it('a released lease is free at once; the cursor survives a reopen of the store', async () => {
      await store.claimAuditSink('siem', 'gw_a', T0, T0 + 30_000);
      await store.advanceAuditSink('siem', 'gw_a', 0, 3, T0 + 1);
      await store.releaseAuditSink('siem', 'gw_b'); // not the owner: no effect
      expect(await store.claimAuditSink('siem', 'gw_b', T0 + 2, T0 + 30_002)).toBeUndefined();
      await store.releaseAuditSink('siem', 'gw_a');
      await store.close();
      store = await t.open();
      expect(await store.claimAuditSink('siem', 'gw_b', T0 + 3, T0 + 30_003)).toBe(3);
    });

    it('concurrent claims of one free sink: exactly one gateway gets it', async () => {
      const owners = Array.from({ length: 8 }, (_, i) => `gw_${i}`);
      const results = await Promise.all(owners.map((o) => store.claimAuditSink('siem', o, T0, T0 + 30_000)));
      expect(results.filter((r) => r === 0)).toHaveLength(1);
      expect(results.filter((r) => r === undefined)).toHaveLength(7);
    });
  });
}
