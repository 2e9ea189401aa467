// The store contract: the same suite against SQLite and PostgreSQL.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditEvent } from '../../src/audit/index.js';
import { expiryReason, openStore, requireSession } from '../../src/store/index.js';
import { MIGRATION_TABLE, migrationNames } from '../../src/store/migrations.js';
import {
  configLoaded,
  ended,
  HOUR,
  MINUTE,
  newSession,
  opened,
  principal,
  record,
  T0,
  testClock,
} from './fixtures.js';
import { engines, type TestDb } from './harness.js';

for (const h of engines()) {
  describe(`store contract [${h.engine}]`, () => {
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

    describe('migrations', () => {
      it('migrate a fresh database and are idempotent on reopen', async () => {
        const first = await t.open();
        expect(first.engine).toBe(h.engine);
        const s = newSession();
        await first.createSession(record(s), opened);
        await first.close();

        const second = await t.open();
        const third = await t.open(); // while the second is open
        expect((await second.getSession(s.id))?.secretHash).toBe(s.secretHash);
        expect(await third.auditEvents()).toHaveLength(1);
        const names = await t.raw.query<{ name: string }>(
          `select name from ${MIGRATION_TABLE} order by name`,
        );
        expect(names.map((r) => r.name)).toEqual(migrationNames(h.engine));
      });

      it('two stores opening the same fresh database at once migrate it once', async () => {
        const [a, b] = await Promise.all([t.open(), t.open()]);
        await a.appendAudit(configLoaded(1));
        await b.appendAudit(configLoaded(2));
        expect((await a.auditEvents()).map((e) => e.seq)).toEqual([1, 2]);
        expect(await count(MIGRATION_TABLE)).toBe(migrationNames(h.engine).length);
      });

      it('refuse a schema written by a newer version', async () => {
        await (await t.open()).close();
        await t.raw.exec(`insert into ${MIGRATION_TABLE} (name, timestamp) values (?, ?)`, [
          '9999_from_the_future',
          new Date().toISOString(),
        ]);
        await expect(t.open()).rejects.toMatchObject({ code: 'CIPORT_E_STORE_SCHEMA' });
      });
    });

    describe('sessions', () => {
      it('create stores the record and its session.opened event', async () => {
        const store = await t.open();
        const s = newSession({ targets: ['staging-db', 'cache'] });
        const { session, event } = await store.createSession(record(s), opened);
        expect(session).toMatchObject({ id: s.id, state: 'active', endReason: null, endedAt: null });

        const got = await store.getSession(s.id);
        expect(got).toEqual(session);
        expect(got?.createdAt).toBeTypeOf('number'); // bigint columns come back as numbers
        expect(got?.principal).toEqual(s.principal);
        expect(got?.targets).toEqual(['staging-db', 'cache']);
        expect(await store.findBySecretHash(s.secretHash)).toEqual(session);
        expect(await store.findBySecretHash('0'.repeat(64))).toBeUndefined();
        expect(await store.getSession('nope')).toBeUndefined();
        await expect(requireSession(store, 'nope')).rejects.toMatchObject({
          code: 'CIPORT_E_SESSION_NOT_FOUND',
        });

        expect(event).toMatchObject({ seq: 1, type: 'session.opened', time: s.createdAt });
        expect(event.data).toMatchObject({ session: s.id, rule: 'ledger-main-to-staging', principal });
        expect(await store.auditEvents()).toEqual([event]);
      });

      it('never store a session secret: only a hex SHA-256 is accepted', async () => {
        const store = await t.open();
        const s = newSession();
        await expect(store.createSession({ ...record(s), secretHash: s.secret }, opened)).rejects.toThrow(
          /secretHash/,
        );
        expect(await count('sessions')).toBe(0);
        expect(await count('audit_events')).toBe(0);
      });

      it('heartbeat extends the lease of a live session only', async () => {
        const clock = testClock();
        const store = await t.open({ clock: clock.now });
        const s = newSession();
        await store.createSession(record(s), opened);

        clock.advance(10_000);
        expect(await store.heartbeat(s.id, clock.now() + 30_000)).toBe(true);
        expect((await store.getSession(s.id))?.leaseExpiresAt).toBe(T0 + 40_000);

        // The lease lapsed before the heartbeat arrived: too late, the session is not revived.
        clock.set(T0 + 41_000);
        expect(await store.heartbeat(s.id, clock.now() + 30_000)).toBe(false);
        expect((await store.getSession(s.id))?.leaseExpiresAt).toBe(T0 + 40_000);

        // Past its TTL, even with a lease still running.
        const long = newSession({ leaseExpiresAt: T0 + HOUR, expiresAt: T0 + 20_000 });
        await store.createSession(record(long), opened);
        expect(await store.heartbeat(long.id, T0 + 2 * HOUR, T0 + 20_000)).toBe(false);

        const gone = newSession();
        await store.createSession(record(gone), opened);
        await store.endSession(gone.id, 'client_end', ended, { at: T0 + 1000 });
        expect(await store.heartbeat(gone.id, T0 + 60_000, T0 + 2000)).toBe(false);
        expect(await store.heartbeat('unknown', T0 + 60_000, T0 + 2000)).toBe(false);
      });

      it('end a session exactly once, with one session.ended event', async () => {
        const store = await t.open();
        const s = newSession();
        await store.createSession(record(s), opened);

        const change = await store.endSession(s.id, 'revoked', (rec) => ended(rec, 'revoked'), {
          at: T0 + 5000,
        });
        expect(change?.session).toMatchObject({
          state: 'ended',
          endReason: 'revoked',
          endedAt: T0 + 5000,
        });
        expect(change?.event).toMatchObject({ seq: 2, type: 'session.ended', time: T0 + 5000 });
        expect(change?.event.data).toMatchObject({ reason: 'revoked', duration_ms: 5000 });

        expect(await store.endSession(s.id, 'client_end', ended, { at: T0 + 6000 })).toBeUndefined();
        expect(await store.endSession('unknown', 'client_end', ended)).toBeUndefined();
        expect((await store.getSession(s.id))?.endReason).toBe('revoked');
        expect((await store.auditEvents()).map((e) => e.type)).toEqual(['session.opened', 'session.ended']);
      });

      it('keep who ended a session and why (by, note), on the fast path and the generic one', async () => {
        const store = await t.open();
        const plain = newSession();
        const hinted = newSession();
        const quiet = newSession();
        await store.createSession(record(plain), opened);
        const created = (await store.createSession(record(hinted), opened)).session;
        await store.createSession(record(quiet), opened);
        const who = { by: 'token:ci-bot', note: 'INC-1: \\x1b escaped' };
        const a = await store.endSession(plain.id, 'revoked', ended, { at: T0 + 1000, ...who });
        const b = await store.endSession(hinted.id, 'revoked', ended, {
          at: T0 + 1000,
          current: created,
          ...who,
        });
        await store.endSession(quiet.id, 'client_end', ended, { at: T0 + 1000 });
        for (const change of [a, b])
          expect(change?.session).toMatchObject({ endedBy: 'token:ci-bot', endNote: who.note });
        const reopened = await t.open();
        expect(await reopened.getSession(plain.id)).toMatchObject({
          endedBy: 'token:ci-bot',
          endNote: who.note,
        });
        const listed = new Map((await reopened.listSessions()).map((x) => [x.id, x]));
        expect(listed.get(hinted.id)).toMatchObject({ endedBy: 'token:ci-bot', endNote: who.note });
        expect(listed.get(quiet.id)).toMatchObject({ endedBy: null, endNote: null });
      });

      it("the caller's copy of the record is only a hint: a stale copy ends the session as it is stored", async () => {
        const store = await t.open();
        const other = await t.open();
        const s = newSession();
        const created = (await store.createSession(record(s), opened)).session;
        // Another gateway extends the lease after our copy was taken.
        expect(await other.heartbeat(s.id, created.leaseExpiresAt + 60_000, T0 + 1000)).toBe(true);
        const change = await store.endSession(s.id, 'client_end', (rec) => ended(rec, 'client_end'), {
          at: T0 + 2000,
          current: created,
        });
        expect(change?.session).toMatchObject({
          state: 'ended',
          endReason: 'client_end',
          endedAt: T0 + 2000,
          leaseExpiresAt: created.leaseExpiresAt + 60_000,
        });
        expect(change?.event).toMatchObject({ seq: 2, type: 'session.ended', time: T0 + 2000 });
        // A copy that still says active, of a session ended meanwhile: nothing is written.
        expect(
          await other.endSession(s.id, 'revoked', ended, { at: T0 + 3000, current: created }),
        ).toBeUndefined();
        // A copy of another session is ignored.
        const s2 = newSession();
        await store.createSession(record(s2), opened);
        const change2 = await store.endSession(s2.id, 'revoked', ended, { at: T0 + 4000, current: created });
        expect(change2?.session.id).toBe(s2.id);
        const events = await store.auditEvents();
        expect(events.map((e) => [e.type, e.data.session])).toEqual([
          ['session.opened', s.id],
          ['session.ended', s.id],
          ['session.opened', s2.id],
          ['session.ended', s2.id],
        ]);
        expect((await store.getSession(s.id))?.endReason).toBe('client_end');
      });

      it('creates, ends and heartbeats issued together all commit, each change with its event', async () => {
        const store = await t.open();
        const first = Array.from({ length: 10 }, () => newSession());
        for (const s of first) await store.createSession(record(s), opened);
        const second = Array.from({ length: 10 }, () => newSession());
        const results = await Promise.all([
          ...first.map((s, i) =>
            i % 2
              ? store.endSession(s.id, 'client_end', ended, { at: T0 + 1000 })
              : store.heartbeat(s.id, s.leaseExpiresAt + 1000, T0 + 1000),
          ),
          ...second.map((s) => store.createSession(record(s), opened)),
        ]);
        expect(results.slice(0, 10).every(Boolean)).toBe(true);
        const events = await store.auditEvents();
        expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1));
        expect(events.filter((e) => e.type === 'session.ended')).toHaveLength(5);
        expect(await count('sessions')).toBe(20);
        for (const [i, s] of first.entries()) {
          expect((await store.getSession(s.id))?.state).toBe(i % 2 ? 'ended' : 'active');
        }
      });

      it('of concurrent enders on two store instances exactly one wins', async () => {
        const a = await t.open();
        const b = await t.open();
        const sessions = Array.from({ length: 5 }, () => newSession());
        for (const s of sessions) await a.createSession(record(s), opened);
        const results = await Promise.all(
          sessions.flatMap((s) => [
            a.endSession(s.id, 'client_end', ended),
            b.endSession(s.id, 'lease_expired', ended),
            b.endSession(s.id, 'revoked', ended),
          ]),
        );
        expect(results.filter(Boolean)).toHaveLength(sessions.length);
        const events = await a.auditEvents();
        expect(events.filter((e) => e.type === 'session.ended')).toHaveLength(sessions.length);
      });

      it('list the last 24 hours, ended ones included, or only the active ones', async () => {
        const clock = testClock(T0 + 30 * HOUR);
        const store = await t.open({ clock: clock.now });
        const at = (h: number) => T0 + h * HOUR; // "now" is at(30)
        const make = async (name: string, created: number, endedAt?: number) => {
          const s = newSession({ id: name, createdAt: created, expiresAt: created + 48 * HOUR });
          await store.createSession(record(s), opened);
          if (endedAt !== undefined) await store.endSession(name, 'client_end', ended, { at: endedAt });
        };
        await make('a-old-ended', at(0), at(1)); // ended 29 h ago: out of the window
        await make('b-old-active', at(0.5)); // created 29.5 h ago, still active: listed
        await make('c-ended-recently', at(5), at(29)); // created 25 h ago, ended 1 h ago: listed
        await make('d-recent-ended', at(28), at(28.5));
        await make('e-recent-active', at(29));

        const day = await store.listSessions({ since: clock.now() - 24 * HOUR });
        expect(day.map((s) => s.id)).toEqual([
          'e-recent-active',
          'd-recent-ended',
          'c-ended-recently',
          'b-old-active',
        ]);
        const active = await store.listSessions({ since: clock.now() - 24 * HOUR, activeOnly: true });
        expect(active.map((s) => s.id)).toEqual(['e-recent-active', 'b-old-active']);
        expect(await store.listSessions()).toHaveLength(5);
        expect(await store.listSessions({ limit: 2 })).toHaveLength(2);
        expect(day.find((s) => s.id === 'd-recent-ended')).toMatchObject({
          state: 'ended',
          endReason: 'client_end',
        });
      });

      it('find active sessions past their TTL or lease', async () => {
        const store = await t.open();
        const now = T0 + 10 * MINUTE;
        const live = newSession({ createdAt: T0, expiresAt: now + MINUTE, leaseExpiresAt: now + 30_000 });
        const ttl = newSession({ createdAt: T0 + 1, expiresAt: now, leaseExpiresAt: now + 30_000 });
        const lease = newSession({ createdAt: T0 + 2, expiresAt: now + MINUTE, leaseExpiresAt: now - 1 });
        const done = newSession({ createdAt: T0 + 3, expiresAt: now - MINUTE, leaseExpiresAt: now - MINUTE });
        for (const s of [live, ttl, lease, done]) await store.createSession(record(s), opened);
        await store.endSession(done.id, 'client_end', ended, { at: T0 + 5 });

        const expired = await store.expiredSessions(now);
        expect(expired.map((s) => s.id)).toEqual([ttl.id, lease.id]);
        expect(expired.map((s) => expiryReason(s, now))).toEqual(['expired', 'lease_expired']);
        expect(await store.expiredSessions(T0)).toEqual([]);
      });

      it('two store instances create sessions concurrently on one database', async () => {
        const a = await t.open();
        const b = await t.open();
        const sessions = Array.from({ length: 30 }, () => newSession());
        await Promise.all(sessions.map((s, i) => (i % 2 ? a : b).createSession(record(s), opened)));
        expect(await count('sessions')).toBe(30);
        const seqs = (await b.auditEvents()).map((e) => e.seq);
        expect(seqs).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
      });
    });

    describe('atomicity: an audit event commits with its state change or not at all', () => {
      it('a failing audit insert rolls the new session back', async () => {
        const store = await t.open();
        await t.raw.failAuditInserts();
        const s = newSession();
        await expect(store.createSession(record(s), opened)).rejects.toThrow(/injected failure/);
        expect(await store.getSession(s.id)).toBeUndefined();
        expect(await count('sessions')).toBe(0);
        expect(await count('audit_events')).toBe(0);
      });

      it('a failing audit insert leaves the session active', async () => {
        const store = await t.open();
        const s = newSession();
        await store.createSession(record(s), opened);
        await t.raw.failAuditInserts();
        await expect(store.endSession(s.id, 'revoked', ended)).rejects.toThrow(/injected failure/);
        expect((await store.getSession(s.id))?.state).toBe('active');
        expect(await count('audit_events')).toBe(1);
      });

      it('an event builder that throws inside the transaction rolls back too', async () => {
        const store = await t.open();
        const s = newSession();
        const boom = () => {
          throw new Error('builder failed');
        };
        await expect(store.createSession(record(s), boom)).rejects.toThrow('builder failed');
        expect(await count('sessions')).toBe(0);

        await store.createSession(record(s), opened);
        await expect(store.endSession(s.id, 'revoked', boom)).rejects.toThrow('builder failed');
        expect((await store.getSession(s.id))?.state).toBe('active');
        expect(await count('audit_events')).toBe(1);
        // …and the store is still usable afterwards.
        expect(await store.endSession(s.id, 'revoked', ended)).toBeDefined();
      });

      it('an event that is not representable fails before anything is written', async () => {
        const store = await t.open();
        const s = newSession();
        const bad = auditEvent('config.loaded', { ...configLoaded(1).data, generation: Number.NaN } as never);
        await expect(store.createSession(record(s), bad)).rejects.toMatchObject({
          code: 'CIPORT_E_INTERNAL',
        });
        await expect(store.appendAudit(bad)).rejects.toThrow(/not representable/);
        expect(await count('sessions')).toBe(0);
        expect(await count('audit_events')).toBe(0);
      });
    });

    describe('audit_events and meta', () => {
      it('audit_events is append-only inside the database too', async () => {
        const store = await t.open();
        await store.appendAudit(configLoaded(1));
        await expect(t.raw.exec(`update audit_events set type = 'query'`)).rejects.toThrow(/append-only/);
        await expect(t.raw.exec('delete from audit_events')).rejects.toThrow(/append-only/);
        expect(await count('audit_events')).toBe(1);
      });

      it('concurrent appends from one store are chained in call order (group commit)', async () => {
        const store = await t.open();
        const events = await Promise.all(
          Array.from({ length: 200 }, (_, i) => store.appendAudit(configLoaded(i))),
        );
        expect(events.map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
        expect(events.map((e) => (e.data as { source: string }).source)).toEqual(
          Array.from({ length: 200 }, (_, i) => `/etc/ciport/gateway-${i}.yaml`),
        );
        for (let i = 1; i < events.length; i++) expect(events[i]?.prevHash).toBe(events[i - 1]?.hash);
        expect(await count('audit_events')).toBe(200);
      });

      it('time never runs backwards along the chain', async () => {
        const clock = testClock();
        const store = await t.open({ clock: clock.now });
        const first = await store.appendAudit(configLoaded(1));
        clock.advance(-5000); // the wall clock stepped back
        const second = await store.appendAudit(configLoaded(2));
        expect(second.time).toBe(first.time);
        expect(await store.auditHead()).toEqual({ seq: 2, hash: second.hash, time: first.time });
      });

      it('query audit events by time window and seq', async () => {
        const clock = testClock();
        const store = await t.open({ clock: clock.now });
        for (let i = 1; i <= 6; i++) {
          await store.appendAudit(configLoaded(i));
          clock.advance(HOUR);
        }
        const seqs = async (q: Parameters<typeof store.auditEvents>[0]) =>
          (await store.auditEvents(q)).map((e) => e.seq);
        expect(await seqs({ since: T0 + HOUR, until: T0 + 4 * HOUR })).toEqual([2, 3, 4]);
        expect(await seqs({ afterSeq: 4 })).toEqual([5, 6]);
        expect(await seqs({ afterSeq: 1, limit: 2 })).toEqual([2, 3]);
      });

      it('meta is a small key/value map', async () => {
        const store = await t.open();
        expect(await store.getMeta('gateway_id')).toBeUndefined();
        await store.setMeta('gateway_id', 'gw-1');
        await store.setMeta('gateway_id', 'gw-2');
        expect(await store.getMeta('gateway_id')).toBe('gw-2');
      });

      it('initMeta keeps the first value written, also when two handles race', async () => {
        const [a, b] = await Promise.all([t.open(), t.open()]);
        const got = await Promise.all([
          a.initMeta('deployment_id', 'from-a'),
          b.initMeta('deployment_id', 'from-b'),
          a.initMeta('deployment_id', 'from-a2'),
        ]);
        expect(new Set(got).size).toBe(1);
        expect(['from-a', 'from-b', 'from-a2']).toContain(got[0]);
        expect(await b.initMeta('deployment_id', 'later')).toBe(got[0]);
        expect(await a.getMeta('deployment_id')).toBe(got[0]);
      });
    });

    describe('failures', () => {
      it('an unreachable store fails with CIPORT_E_STORE_UNAVAILABLE and no secret in the message', async () => {
        const { config, secret } = h.unreachable();
        const err = await openStore(config, { dataDir: '/nonexistent' }).then(
          () => expect.unreachable('openStore succeeded'),
          (e: unknown) => e as Error & { code: string; exitCode: number },
        );
        expect(err.code).toBe('CIPORT_E_STORE_UNAVAILABLE');
        expect(err.exitCode).toBe(5);
        expect(err.message).toMatch(h.engine === 'postgres' ? /127\.0\.0\.1:1\/ciport/ : /not-a-dir/);
        if (secret) expect(`${err.message} ${JSON.stringify(err)}`).not.toContain(secret);
      });

      it('a closed store refuses further work', async () => {
        const store = await t.open();
        await store.close();
        await store.close(); // idempotent
        await expect(store.getSession('x')).rejects.toMatchObject({ code: 'CIPORT_E_STORE_UNAVAILABLE' });
      });
    });
  });
}
