// Store contract for the audit sinks' cursors and leases (migration 0008), on both engines: one
// owner at a time, a lapsed lease passes on, the cursor only moves forward from where its owner
// last saw it, a released lease is free at once, and a halted sink is nobody's until resumed.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditEvent } from '../../src/audit/index.js';
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
        { sink: 'file', seq: 0, owner: 'gw_b', leaseUntil: T0 + 30_002, updatedAt: T0 + 2, halted: false },
        { sink: 'siem', seq: 0, owner: 'gw_a', leaseUntil: T0 + 30_002, updatedAt: T0, halted: false },
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

    const halted = (cursor: number, head: number) =>
      auditEvent('audit.sink_halted', {
        sink: 'siem',
        cursor,
        head,
        reason: 'test',
        resume_after: head,
        gateway: 'gw_a',
      });

    it('only the lease holder halts, at the cursor it holds, with its audit event in the same write', async () => {
      await store.claimAuditSink('siem', 'gw_a', T0, T0 + 30_000);
      await store.advanceAuditSink('siem', 'gw_a', 0, 9, T0 + 1);
      expect(await store.haltAuditSink('siem', 'gw_b', 9, T0 + 2, halted(9, 5))).toBeUndefined();
      expect(await store.haltAuditSink('siem', 'gw_a', 8, T0 + 2, halted(8, 5))).toBeUndefined();
      expect(await store.auditEvents()).toEqual([]);
      const event = await store.haltAuditSink('siem', 'gw_a', 9, T0 + 3, halted(9, 5));
      expect(event).toMatchObject({ type: 'audit.sink_halted', data: { sink: 'siem', cursor: 9, head: 5 } });
      expect(await store.auditEvents()).toEqual([event]);
      expect(await store.auditSinkCursors()).toEqual([
        { sink: 'siem', seq: 9, owner: null, leaseUntil: 0, updatedAt: T0 + 3, halted: true },
      ]);
    });

    it('a halted sink is claimed by no gateway, after any time, until resumed at the seq given', async () => {
      await store.claimAuditSink('siem', 'gw_a', T0, T0 + 30_000);
      await store.advanceAuditSink('siem', 'gw_a', 0, 9, T0 + 1);
      await store.haltAuditSink('siem', 'gw_a', 9, T0 + 2, halted(9, 5));
      const years = T0 + 100 * 365 * 86_400_000;
      for (const gw of ['gw_a', 'gw_b'])
        expect(await store.claimAuditSink('siem', gw, years, years + 1)).toBeUndefined();
      // A gateway cannot pose as the halt, nor advance or release it.
      await expect(store.claimAuditSink('siem', 'halted', T0 + 3, T0 + 4)).rejects.toMatchObject({
        code: 'CIPORT_E_INTERNAL',
      });
      expect(await store.advanceAuditSink('siem', 'gw_a', 9, 10, T0 + 3)).toBe(false);
      await store.releaseAuditSink('siem', 'gw_a');
      expect((await store.auditSinkCursors())[0]?.halted).toBe(true);
      // Resuming a sink that is not halted (or unknown) writes nothing.
      const resumed = (haltedAt: number) =>
        auditEvent('audit.sink_resumed', { sink: 'siem', cursor: haltedAt, after: 5, by: 'local:alice' });
      expect(await store.resumeAuditSink('file', 5, T0 + 4, resumed)).toBeUndefined();
      const event = await store.resumeAuditSink('siem', 5, T0 + 5, resumed);
      expect(event).toMatchObject({
        type: 'audit.sink_resumed',
        data: { cursor: 9, after: 5, by: 'local:alice' },
      });
      expect(await store.resumeAuditSink('siem', 5, T0 + 6, resumed)).toBeUndefined();
      expect(await store.claimAuditSink('siem', 'gw_b', T0 + 7, T0 + 30_007)).toBe(5);
      expect((await store.auditEvents()).map((e) => e.type)).toEqual([
        'audit.sink_halted',
        'audit.sink_resumed',
      ]);
    });
  });
}
