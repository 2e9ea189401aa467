// The audit chain on a real store, both engines: appends, concurrency, tamper detection, secrets.

import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type AuditEvent, auditEvent, eventHash, GENESIS_HASH, verifyChain } from '../../src/audit/index.js';
import type { Store } from '../../src/store/index.js';
import { configLoaded, newSession, opened, principal, record } from '../store/fixtures.js';
import { engines, type TestDb } from '../store/harness.js';

for (const h of engines()) {
  describe(`audit chain [${h.engine}]`, () => {
    let t: TestDb;
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
    });
    afterEach(() => t.dispose());

    async function fill(store: Store, n: number): Promise<AuditEvent[]> {
      const events: AuditEvent[] = [];
      for (let i = 1; i <= n; i++) events.push(await store.appendAudit(configLoaded(i)));
      return events;
    }

    it('verifies an empty log and a long one, across page boundaries', async () => {
      const store = await t.open();
      expect(await verifyChain(store)).toEqual({ ok: true, count: 0, head: null });
      const s = newSession();
      await store.createSession(record(s), opened);
      const events = await fill(store, 120);
      const last = events.at(-1)!;
      expect(last.seq).toBe(121);
      const expected = { ok: true, count: 121, head: { seq: 121, hash: last.hash } };
      expect(await verifyChain(store)).toEqual(expected);
      expect(await verifyChain(store, { pageSize: 7 })).toEqual(expected);
      expect(await store.auditHead()).toMatchObject({ seq: 121, hash: last.hash });
      // The chain links as documented.
      const [first, second] = await store.auditEvents({ limit: 2 });
      expect(first?.prevHash).toBe(GENESIS_HASH);
      expect(second?.prevHash).toBe(first?.hash);
      expect(second?.hash).toBe(eventHash(first!.hash, second!));
    });

    it('concurrent appends from two store instances form one chain', async () => {
      const a = await t.open();
      const b = await t.open();
      const writes = Array.from({ length: 80 }, (_, i) =>
        (i % 2 ? a : b).appendAudit(
          auditEvent('agent.connected', {
            agent: `agent-${i % 2 ? 'a' : 'b'}-${i}`,
            targets: ['staging-db'],
          }),
        ),
      );
      const sessions = Array.from({ length: 10 }, () => newSession());
      const written = await Promise.all([
        ...writes,
        ...sessions.map(async (s, i) => (await (i % 2 ? b : a).createSession(record(s), opened)).event),
      ]);
      expect(new Set(written.map((e) => e.seq)).size).toBe(90);
      expect(await verifyChain(a)).toMatchObject({ ok: true, count: 90 });
      const all = await b.auditEvents();
      expect(all.map((e) => e.seq)).toEqual(Array.from({ length: 90 }, (_, i) => i + 1));
      const agents = all.filter((e) => e.type === 'agent.connected').map((e) => String(e.data.agent));
      expect(agents.some((n) => n.startsWith('agent-a'))).toBe(true);
      expect(agents.some((n) => n.startsWith('agent-b'))).toBe(true);
    });

    describe('tamper detection reports the first bad event', () => {
      let store: Store;
      let events: AuditEvent[];
      beforeEach(async () => {
        store = await t.open();
        events = await fill(store, 10);
        expect(await verifyChain(store)).toMatchObject({ ok: true, count: 10 });
        await t.raw.allowTampering();
      });
      const hashOf = (seq: number) => events[seq - 1]!.hash;
      const row = async (seq: number) =>
        (
          await t.raw.query<{ time: number | string; data: string }>(
            'select "time", data from audit_events where seq = ?',
            [seq],
          )
        )[0]!;

      it('an edited data field', async () => {
        const { data } = await row(4);
        await t.raw.exec('update audit_events set data = ? where seq = ?', [
          data.replace('gateway-4.yaml', 'gateway-X.yaml'),
          4,
        ]);
        expect(await verifyChain(store)).toMatchObject({
          ok: false,
          seq: 4,
          count: 3,
          reason: /hash mismatch/,
        });
      });

      it('an edited time or type', async () => {
        await t.raw.exec('update audit_events set "time" = "time" + 1 where seq = 7');
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 7, reason: /hash mismatch/ });
        await t.raw.exec(`update audit_events set type = 'query' where seq = 2`);
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 2 });
      });

      it('an edit whose hash was recomputed breaks the next link', async () => {
        const { data, time } = await row(5);
        const forged = JSON.parse(data.replace('gateway-5.yaml', 'evil.yaml'));
        const hash = eventHash(hashOf(4), {
          seq: 5,
          time: Number(time),
          type: 'config.loaded',
          data: forged,
        });
        await t.raw.exec('update audit_events set data = ?, hash = ? where seq = 5', [
          JSON.stringify(forged),
          hash,
        ]);
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 6, reason: /prev_hash/ });
      });

      it('a deleted event', async () => {
        await t.raw.exec('delete from audit_events where seq = 4');
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 4, reason: /missing/ });
      });

      it('a deleted first event', async () => {
        await t.raw.exec('delete from audit_events where seq = 1');
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 1, count: 0 });
      });

      it('a deleted event with the later ones renumbered', async () => {
        await t.raw.exec('delete from audit_events where seq = 4');
        await t.raw.exec('update audit_events set seq = seq + 1000 where seq > 4');
        await t.raw.exec('update audit_events set seq = seq - 1001 where seq > 1000');
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 4 });
      });

      it('a forged event appended with a made-up hash', async () => {
        await t.raw.exec(
          'insert into audit_events (seq, "time", type, data, hash, prev_hash) values (?, ?, ?, ?, ?, ?)',
          [11, Date.now(), 'review.attested', '{"comment":"all fine"}', 'f'.repeat(64), hashOf(10)],
        );
        expect(await verifyChain(store)).toMatchObject({
          ok: false,
          seq: 11,
          count: 10,
          reason: /hash mismatch/,
        });
      });

      it('a forged event inserted in the middle with a valid hash of its own', async () => {
        await t.raw.exec('update audit_events set seq = seq + 1000 where seq >= 5');
        await t.raw.exec('update audit_events set seq = seq - 999 where seq > 1000');
        const forged = {
          seq: 5,
          time: Number((await row(4)).time),
          type: 'config.loaded',
          data: { source: 'forged' },
        };
        await t.raw.exec(
          'insert into audit_events (seq, "time", type, data, hash, prev_hash) values (?, ?, ?, ?, ?, ?)',
          [5, forged.time, forged.type, JSON.stringify(forged.data), eventHash(hashOf(4), forged), hashOf(4)],
        );
        // Event 5 itself links perfectly; the old event 5, now at 6, no longer does.
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 6, count: 5 });
      });

      it('two events swapped', async () => {
        await t.raw.exec('update audit_events set seq = -1 where seq = 3');
        await t.raw.exec('update audit_events set seq = 3 where seq = 4');
        await t.raw.exec('update audit_events set seq = 4 where seq = -1');
        expect(await verifyChain(store)).toMatchObject({ ok: false, seq: 3, count: 2 });
      });

      it('events removed from the end: only an anchor reveals it', async () => {
        const anchor = { seq: 10, hash: hashOf(10) };
        await t.raw.exec('delete from audit_events where seq > 8');
        expect(await verifyChain(store)).toMatchObject({ ok: true, count: 8 });
        expect(await verifyChain(store, { anchor })).toMatchObject({ ok: false, seq: 9, reason: /anchored/ });
      });
    });

    it('secret-named fields and token-shaped values never reach the database', async () => {
      const store = await t.open();
      const jwt = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqb2IifQ.c2lnbmF0dXJl';
      const event = await store.appendAudit({
        type: 'connection.closed',
        data: {
          session: 's-1',
          connection: 'c-1',
          principal,
          target: 'staging-db',
          rule: 'ledger-main-to-staging',
          exit: 'gateway',
          bytes_to_target: 10,
          bytes_from_target: 20,
          duration_ms: 5,
          error: `upstream said: bad token ${jwt}`,
          ...({
            password: 'pw-SECRET-1',
            upstream: { token: 'tk-SECRET-2', secret_key: 'SECRET-3' },
          } as object),
        },
      });
      const [stored] = await t.raw.query<{ data: string }>('select data from audit_events where seq = ?', [
        event.seq,
      ]);
      expect(stored?.data).toBeDefined();
      expect(stored?.data).not.toMatch(/SECRET|eyJ/);
      expect(JSON.parse(stored!.data).redacted).toEqual([
        'password',
        'upstream.token',
        'upstream.secret_key',
      ]);
      expect(event.data).toEqual(JSON.parse(stored!.data));
      expect(await verifyChain(store)).toMatchObject({ ok: true, count: 1 });
    });
  });
}
