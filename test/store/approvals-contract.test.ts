// Store contract for approvals (migration 0010, docs/approvals.md) on both engines: a pending
// session's terms, the one decision transaction (count distinct approvers, one denial ends it,
// a repeated approval counts once, nothing after a decision or the deadline), the timeout end
// that an approval wins, and two stores (two gateways) deciding at once.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditEvent, verifyChain } from '../../src/audit/index.js';
import type { ApprovalVote } from '../../src/policy/approval.js';
import { auditSearchIndexes } from '../../src/store/audit-search.js';
import type {
  ApprovalEventsFor,
  NewSession,
  SessionApproval,
  SessionRecord,
  Store,
} from '../../src/store/index.js';
import { MIGRATION_TABLE, migrationNames } from '../../src/store/migrations.js';
import { ended, MINUTE, newSession, opened, principal, record, T0 } from './fixtures.js';
import { engines, type TestDb } from './harness.js';

const TTL = 30 * MINUTE;
const DEADLINE = T0 + 15 * MINUTE;

function terms(count = 1, groups = ['dba']): SessionApproval {
  return {
    state: 'pending',
    requirements: [{ rule: 'prod-db', groups, count }],
    deadline: DEADLINE,
    requestedAt: T0,
    ttlMs: TTL,
    requester: { login: 'alice', email: 'alice@example.com', id: '42', issuer: 'https://gitlab.example.com' },
    approvedAt: null,
  };
}

function pending(count = 1, overrides: Partial<NewSession> = {}) {
  return newSession({
    expiresAt: DEADLINE,
    leaseExpiresAt: DEADLINE,
    approval: terms(count),
    targets: ['prod-db'],
    rule: 'prod-db',
    ...overrides,
  });
}

const requested = (s: { id: string; targets: string[] }) =>
  auditEvent('approval.requested', {
    session: s.id,
    principal,
    targets: s.targets,
    rule: 'prod-db',
    requirements: [{ rule: 'prod-db', groups: ['dba'], count: 1 }],
    expires_at: new Date(DEADLINE).toISOString(),
    ttl_ms: TTL,
  });

const events: ApprovalEventsFor = {
  granted: (s, tally) =>
    auditEvent('approval.granted', {
      session: s.id,
      principal,
      targets: s.targets,
      rule: s.rule,
      groups: ['dba'],
      approvals: tally.approvers.length,
      met: tally.met,
      by: tally.approvers.at(-1) ?? '',
    }),
  opened: (s, tally) =>
    ({ ...opened(s), data: { ...opened(s).data, approved_by: tally.approvers } }) as never,
  denied: (s, tally) =>
    auditEvent('approval.denied', {
      session: s.id,
      principal,
      targets: s.targets,
      rule: s.rule,
      groups: ['dba'],
      approved_by: tally.approvers,
      by: s.endedBy ?? '',
    }),
  ended: (s) => ended(s, 'approval_denied'),
};

const vote = (
  by: string,
  at: number,
  decision: 'approve' | 'deny' = 'approve',
  note: string | null = null,
): ApprovalVote => ({
  by,
  decision,
  at,
  note,
  groups: ['dba'],
});

for (const h of engines()) {
  describe(`store contract: approvals [${h.engine}]`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    const types = async (store: Store) => (await store.auditEvents()).map((e) => e.type);

    it('keeps a pending session with its terms; lists it among the pending; others need none', async () => {
      const store = await t.open();
      const s = pending(2);
      const plain = newSession();
      const { session } = await store.createSession(record(s), requested);
      await store.createSession(record(plain), opened);
      expect(session.approval).toEqual(terms(2));
      expect(await store.getSession(s.id)).toEqual(session);
      expect((await store.getSession(plain.id))?.approval).toBeNull();
      expect((await store.listSessions({ pendingApproval: true })).map((r) => r.id)).toEqual([s.id]);
      expect(await store.findBySecretHash(s.secretHash)).toEqual(session);
      expect(await types(store)).toEqual(['approval.requested', 'session.opened']);
      // Only a pending session can be created with an approval.
      await expect(
        store.createSession(record(pending(1, { approval: { ...terms(), state: 'approved' } })), requested),
      ).rejects.toMatchObject({ code: 'CIPORT_E_INTERNAL' });
    });

    it('one approval of a count-1 session approves it: TTL from the approval, granted then opened', async () => {
      const store = await t.open();
      const s = pending(1);
      await store.createSession(record(s), requested);
      const at = T0 + 2 * MINUTE;
      const result = await store.decideApproval(s.id, vote('token:bob', at, 'approve', 'LGTM'), events);
      expect(result.outcome).toBe('approved');
      if (result.outcome !== 'approved') return;
      expect(result.session).toMatchObject({ state: 'active', expiresAt: at + TTL });
      expect(result.session.approval).toMatchObject({ state: 'approved', approvedAt: at });
      expect(result.events.map((e) => e.type)).toEqual(['approval.granted', 'session.opened']);
      expect(result.events[1]?.data).toMatchObject({ approved_by: ['token:bob'] });
      expect(await store.getSession(s.id)).toEqual(result.session);
      expect(await store.listSessions({ pendingApproval: true })).toEqual([]);
      expect((await store.approvalVotes([s.id])).get(s.id)).toEqual([
        vote('token:bob', at, 'approve', 'LGTM'),
      ]);
      // Decided: nobody decides again.
      const again = await store.decideApproval(s.id, vote('token:carol', at + 1), events);
      expect(again.outcome).toBe('refused');
      const late = await store.decideApproval(s.id, vote('token:carol', at + 1, 'deny'), events);
      expect(late.outcome).toBe('refused');
      expect((await store.getSession(s.id))?.state).toBe('active');
      expect(await verifyChain(store)).toMatchObject({ ok: true });
    });

    it('count 2 needs two distinct approvers; the same approver twice counts once', async () => {
      const store = await t.open();
      const s = pending(2);
      await store.createSession(record(s), requested);
      expect((await store.decideApproval(s.id, vote('token:bob', T0 + 1000), events)).outcome).toBe(
        'counted',
      );
      const twice = await store.decideApproval(s.id, vote('token:bob', T0 + 2000), events);
      expect(twice.outcome).toBe('repeated');
      if (twice.outcome === 'repeated') expect(twice.tally.approvers).toEqual(['token:bob']);
      expect((await store.getSession(s.id))?.approval?.state).toBe('pending');
      const done = await store.decideApproval(s.id, vote('token:carol', T0 + 3000), events);
      expect(done.outcome).toBe('approved');
      if (done.outcome === 'approved') expect(done.tally.approvers).toEqual(['token:bob', 'token:carol']);
      expect(await types(store)).toEqual([
        'approval.requested',
        'approval.granted',
        'approval.granted',
        'session.opened',
      ]);
    });

    it('an approver counts only for the requirements whose groups they are in', async () => {
      const store = await t.open();
      const s = pending(1, {
        approval: {
          ...terms(),
          requirements: [
            { rule: 'prod-db', groups: ['dba'], count: 1 },
            { rule: 'prod-api', groups: ['sre'], count: 1 },
          ],
        },
      });
      await store.createSession(record(s), requested);
      expect((await store.decideApproval(s.id, vote('token:bob', T0 + 1000), events)).outcome).toBe(
        'counted',
      );
      const sre = { ...vote('token:carol', T0 + 2000), groups: ['sre'] };
      expect((await store.decideApproval(s.id, sre, events)).outcome).toBe('approved');
    });

    it('one denial ends it (approval_denied, by, note), after approvals too; nothing decides after', async () => {
      const store = await t.open();
      const s = pending(2);
      await store.createSession(record(s), requested);
      await store.decideApproval(s.id, vote('token:bob', T0 + 1000), events);
      const denied = await store.decideApproval(
        s.id,
        vote('token:bob', T0 + 2000, 'deny', 'not during the freeze'),
        events,
      );
      expect(denied.outcome).toBe('denied');
      if (denied.outcome !== 'denied') return;
      expect(denied.session).toMatchObject({
        state: 'ended',
        endReason: 'approval_denied',
        endedAt: T0 + 2000,
        endedBy: 'token:bob',
        endNote: 'not during the freeze',
      });
      expect(denied.events.map((e) => e.type)).toEqual(['approval.denied', 'session.ended']);
      // The denial replaced bob's own approval.
      expect((await store.approvalVotes([s.id])).get(s.id)?.map((v) => [v.by, v.decision])).toEqual([
        ['token:bob', 'deny'],
      ]);
      const after = await store.decideApproval(s.id, vote('token:carol', T0 + 3000), events);
      expect(after.outcome).toBe('refused');
      if (after.outcome === 'refused') expect(after.session.endReason).toBe('approval_denied');
      expect(await store.listSessions({ pendingApproval: true })).toEqual([]);
      expect(await verifyChain(store)).toMatchObject({ ok: true });
    });

    it('refuses unknown sessions, sessions needing no approval, and decisions past the deadline or lease', async () => {
      const store = await t.open();
      expect(await store.decideApproval('ses_nope', vote('token:bob', T0), events)).toEqual({
        outcome: 'unknown',
      });
      const plain = newSession();
      await store.createSession(record(plain), opened);
      expect((await store.decideApproval(plain.id, vote('token:bob', T0), events)).outcome).toBe('refused');
      const s = pending(1, { leaseExpiresAt: T0 + MINUTE });
      await store.createSession(record(s), requested);
      expect((await store.decideApproval(s.id, vote('token:bob', T0 + MINUTE), events)).outcome).toBe(
        'refused',
      );
      const late = pending(1);
      await store.createSession(record(late), requested);
      expect((await store.decideApproval(late.id, vote('token:bob', DEADLINE), events)).outcome).toBe(
        'refused',
      );
      expect((await store.getSession(late.id))?.approval?.state).toBe('pending');
      expect(await types(store)).toEqual(['session.opened', 'approval.requested', 'approval.requested']);
      expect((await store.approvalVotes([s.id, late.id])).size).toBe(0);
    });

    it('approval_timeout ends a pending session past its deadline only, with both events; never an approved one', async () => {
      const store = await t.open();
      const timedOut = [
        (rec: SessionRecord) =>
          auditEvent('approval.timed_out', {
            session: rec.id,
            principal,
            targets: rec.targets,
            rule: rec.rule,
            requirements: [{ rule: 'prod-db', groups: ['dba'], count: 1 }],
            approved_by: [],
          }),
        (rec: SessionRecord) => ended(rec, 'approval_timeout'),
      ];
      const s = pending(1);
      await store.createSession(record(s), requested);
      // Before the deadline: not yet.
      expect(
        await store.endSession(s.id, 'approval_timeout', timedOut, { at: DEADLINE - 1 }),
      ).toBeUndefined();
      const change = await store.endSession(s.id, 'approval_timeout', timedOut, { at: DEADLINE });
      expect(change?.session).toMatchObject({ state: 'ended', endReason: 'approval_timeout' });
      expect(change?.event.type).toBe('session.ended');
      expect((await store.auditEvents()).map((e) => e.type).slice(-2)).toEqual([
        'approval.timed_out',
        'session.ended',
      ]);

      // Approved a moment before a (stale) timeout: the approval wins.
      const won = pending(1);
      await store.createSession(record(won), requested);
      const current = await store.getSession(won.id);
      await store.decideApproval(won.id, vote('token:bob', DEADLINE - 5), events);
      expect(
        await store.endSession(won.id, 'approval_timeout', timedOut, {
          at: DEADLINE,
          current: current as never,
        }),
      ).toBeUndefined();
      expect((await store.getSession(won.id))?.state).toBe('active');
      // And a denial is decideApproval's alone.
      await expect(
        store.endSession(won.id, 'approval_denied', ended, { at: DEADLINE }),
      ).rejects.toMatchObject({
        code: 'CIPORT_E_INTERNAL',
      });
      expect(await verifyChain(store)).toMatchObject({ ok: true });
    });

    it('an end built from a copy taken before the approval does not write the stale record', async () => {
      const store = await t.open();
      const s = pending(1);
      await store.createSession(record(s), requested);
      const stale = await store.getSession(s.id);
      await store.decideApproval(s.id, vote('token:bob', T0 + 1000), events);
      const change = await store.endSession(s.id, 'client_end', ended, {
        at: T0 + 2000,
        current: stale as never,
      });
      expect(change?.session).toMatchObject({ state: 'ended', expiresAt: T0 + 1000 + TTL });
      expect(change?.session.approval?.state).toBe('approved');
    });

    it('migration 0010: sessions stored before it need no approval', async () => {
      const first = await t.open();
      const s = newSession();
      await first.createSession(record(s), opened);
      await first.close();
      // 0010 and what came after it, rolled back as a store from before it would have it.
      await t.raw.exec(`delete from ${MIGRATION_TABLE} where name in (?, ?)`, [
        '0010_session_approvals',
        '0011_audit_search',
      ]);
      for (const index of auditSearchIndexes(h.engine)) await t.raw.exec(`drop index ${index.name}`);
      for (const column of ['approval', 'approval_state', 'approved_at'])
        await t.raw.exec(`alter table sessions drop column ${column}`);
      await t.raw.exec('drop table session_approvals');
      const store = await t.open();
      expect((await store.getSession(s.id))?.approval).toBeNull();
      expect(migrationNames(h.engine)).toContain('0010_session_approvals');
      const names = await t.raw.query<{ name: string }>(`select name from ${MIGRATION_TABLE} order by name`);
      expect(names.map((r) => r.name)).toEqual(migrationNames(h.engine));
    });

    it('two gateways deciding at once: exactly one outcome, no approval after a denial, none counted twice', async () => {
      const [a, b] = [await t.open(), await t.open()];
      for (let round = 0; round < 8; round++) {
        const s = pending(2);
        await a.createSession(record(s), requested);
        const at = T0 + 1000 + round;
        const results = await Promise.all([
          a.decideApproval(s.id, vote('token:bob', at), events),
          b.decideApproval(s.id, vote('token:bob', at), events),
          b.decideApproval(s.id, vote('token:carol', at), events),
          a.decideApproval(s.id, vote('token:dave', at), events),
          b.decideApproval(s.id, vote('token:erin', at, 'deny'), events),
        ]);
        const outcomes = results.map((r) => r.outcome);
        const final = await a.getSession(s.id);
        const mine = (await a.auditEvents({ limit: 10_000 })).filter((e) => e.data.session === s.id);
        const kinds = mine.map((e) => e.type);
        // Exactly one end state, and the log agrees with it.
        if (final?.state === 'ended') {
          expect(final.endReason).toBe('approval_denied');
          expect(outcomes.filter((o) => o === 'denied')).toHaveLength(1);
          expect(outcomes).not.toContain('approved');
          expect(kinds.at(-1)).toBe('session.ended');
          expect(kinds).not.toContain('session.opened');
        } else {
          expect(final?.approval?.state).toBe('approved');
          expect(outcomes.filter((o) => o === 'approved')).toHaveLength(1);
          expect(outcomes).not.toContain('denied');
          expect(kinds.at(-1)).toBe('session.opened');
          expect(kinds).not.toContain('approval.denied');
        }
        // Every counted approval has one event; bob counted at most once.
        const grants = mine.filter((e) => e.type === 'approval.granted');
        expect(grants.length).toBe(outcomes.filter((o) => o === 'counted' || o === 'approved').length);
        expect(new Set(grants.map((e) => e.data.approvals)).size).toBe(grants.length);
        const votes = (await a.approvalVotes([s.id])).get(s.id) ?? [];
        expect(votes.filter((v) => v.by === 'token:bob')).toHaveLength(
          votes.some((v) => v.by === 'token:bob') ? 1 : 0,
        );
      }
      expect(await verifyChain(a)).toMatchObject({ ok: true });
    });
  });
}
