// Store contract for the console's audit search (migration 0011, src/store/audit-search.ts), on
// both engines: every combination of filters returns exactly what a plain scan of the log would,
// newest first, and walking the pages either way (keyset on seq) visits each match once; the
// indexed expressions are the ones the queries use (checked in the engines' query plans); the
// traffic per session is the sum of its `connection.closed` events.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/audit/canonical.js';
import {
  type AuditEvent,
  type AuditEventInput,
  type AuditEventType,
  auditEvent,
} from '../../src/audit/events.js';
import {
  type AuditSearch,
  auditFieldSql,
  auditSearchIndexes,
  CLOSED_INDEX,
  TARGET_LIST_TYPES,
} from '../../src/store/audit-search.js';
import type { Store } from '../../src/store/index.js';
import { T0 } from './fixtures.js';
import { engines, type TestDb } from './harness.js';

const PROJECTS = ['acme/ledger', 'acme/web', 'evil/<script>'];
const TARGETS = ['db', 'cache', 'api_x'];

function principal(project: string) {
  return {
    issuer: 'gitlab',
    subject: `project_path:${project}`,
    project,
    ref: 'main',
    pipeline: '1',
    job: '2',
    job_url: null,
  };
}

/** A varied log: sessions opening, connecting, querying and ending, denials, agents, a summary. */
function scriptedEvents(): AuditEventInput[] {
  const out: AuditEventInput[] = [];
  let t = T0;
  for (let i = 0; i < 24; i++) {
    const project = PROJECTS[i % 3] as string;
    const target = TARGETS[i % 3] as string;
    const other = TARGETS[(i + 1) % 3] as string;
    const session = `ses_${i}`;
    const p = principal(project);
    t += 1000;
    out.push(
      auditEvent(
        'session.opened',
        { session, principal: p, targets: [target, other], rule: 'r', expires_at: 'x', ttl_ms: 1 },
        t,
      ),
    );
    for (let c = 0; c < 2; c++) {
      const base = { session, connection: `con_${i}_${c}`, principal: p, target, rule: 'r', exit: 'gateway' };
      out.push(auditEvent('connection.opened', base, t + 1));
      out.push(auditEvent('query', { ...base, statements: [] }, t + 2));
      out.push(
        auditEvent(
          'connection.closed',
          { ...base, bytes_to_target: 10 * (i + 1), bytes_from_target: 100, duration_ms: 1 },
          t + 3,
        ),
      );
    }
    if (i % 4 === 0) {
      out.push(
        auditEvent(
          'session.denied',
          { principal: p, targets: [other], rule: null, reason: 'no', error_code: 'CIPORT_E_POLICY_DENIED' },
          t + 4,
        ),
      );
    }
    out.push(
      auditEvent(
        'session.ended',
        { session, principal: p, targets: [target, other], rule: 'r', reason: 'client_end', duration_ms: 5 },
        t + 5,
      ),
    );
  }
  out.push(
    auditEvent(
      'session.denied_summary',
      {
        issuer: 'gitlab',
        project: 'acme/web',
        project_id: '7',
        rule: null,
        error_code: 'CIPORT_E_POLICY_DENIED',
        count: 3,
        first_at: 'a',
        last_at: 'b',
        window_ms: 1,
        refs: [],
        distinct_refs: 0,
        subjects: [],
        distinct_subjects: 0,
      },
      t + 10,
    ),
  );
  out.push(auditEvent('agent.connected', { agent: 'dc1', targets: ['db'] }, t + 11));
  return out;
}

/** What a plain scan of the log finds for `q` (the reference the store must agree with). */
function matches(e: AuditEvent, q: AuditSearch): boolean {
  const d = e.data as JsonObject & { principal?: { project?: string }; targets?: string[] };
  if (q.types && !q.types.includes(e.type)) return false;
  if (q.session !== undefined && d.session !== q.session) return false;
  if (q.project !== undefined && (d.principal?.project ?? d.project) !== q.project) return false;
  if (q.target !== undefined) {
    const listed =
      TARGET_LIST_TYPES.includes(e.type) && Array.isArray(d.targets) && d.targets.includes(q.target);
    if (d.target !== q.target && !listed) return false;
  }
  if (q.since !== undefined && e.time < q.since) return false;
  if (q.until !== undefined && e.time >= q.until) return false;
  return true;
}

/** Walk every page older-wards, then back newer-wards from the oldest; both see every match once. */
async function walk(store: Store, q: Omit<AuditSearch, 'limit'>, limit: number) {
  const older: number[] = [];
  let before: number | undefined;
  for (let i = 0; i < 1000; i++) {
    const page = await store.searchAudit({
      ...q,
      limit,
      ...(before !== undefined ? { beforeSeq: before } : {}),
    });
    const seqs = page.events.map((e) => e.seq);
    expect(seqs).toEqual([...seqs].sort((a, b) => b - a));
    older.push(...seqs);
    if (!page.more) break;
    before = seqs.at(-1);
  }
  const newer: number[] = [];
  let after = older.length > 0 ? (older.at(-1) as number) - 1 : undefined;
  for (let i = 0; after !== undefined && i < 1000; i++) {
    const page = await store.searchAudit({ ...q, limit, afterSeq: after });
    const seqs = page.events.map((e) => e.seq);
    newer.unshift(...seqs);
    if (!page.more) break;
    after = seqs[0];
  }
  return { older, newer };
}

for (const h of engines()) {
  describe(`store contract: audit search [${h.engine}]`, () => {
    let t: TestDb;
    let store: Store;
    let all: AuditEvent[];
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
      store = await t.open();
      for (const e of scriptedEvents()) await store.appendAudit(e);
      all = await store.auditEvents({ limit: 10_000 });
    });
    afterEach(() => t.dispose());

    it('every filter combination finds what a scan of the log finds, page by page both ways', async () => {
      const types: Array<AuditEventType[] | undefined> = [
        undefined,
        ['query'],
        ['session.opened'],
        ['session.denied', 'session.denied_summary'],
        ['connection.closed', 'session.ended'],
      ];
      const mid = all[Math.floor(all.length / 2)]?.time as number;
      let checked = 0;
      for (const type of types)
        for (const target of [undefined, 'db', 'cache'])
          for (const project of [undefined, 'acme/web', 'evil/<script>'])
            for (const session of [undefined, 'ses_4'])
              for (const [since, until] of [
                [undefined, undefined],
                [mid, undefined],
                [undefined, mid],
                [T0 + 3000, mid + 2000],
              ]) {
                const q = {
                  ...(type ? { types: type } : {}),
                  ...(target ? { target } : {}),
                  ...(project ? { project } : {}),
                  ...(session ? { session } : {}),
                  ...(since !== undefined ? { since } : {}),
                  ...(until !== undefined ? { until } : {}),
                };
                const want = all
                  .filter((e) => matches(e, { ...q, limit: 1 }))
                  .map((e) => e.seq)
                  .reverse();
                const { older, newer } = await walk(store, q, 7);
                expect(older, JSON.stringify(q)).toEqual(want);
                expect(newer, JSON.stringify(q)).toEqual(want);
                checked += want.length;
              }
      expect(checked).toBeGreaterThan(1000);
    }, 240_000);

    it('a target filter finds sessions that list it and connections to it; a project one finds summaries', async () => {
      const page = await store.searchAudit({ target: 'api_x', types: ['session.opened'], limit: 500 });
      // api_x is the first target of every third session and the second of the session before it
      expect(page.events.map((e) => (e.data as { session: string }).session)).toHaveLength(16);
      const web = await store.searchAudit({
        project: 'acme/web',
        types: ['session.denied_summary'],
        limit: 5,
      });
      expect(web.events.map((e) => e.type)).toEqual(['session.denied_summary']);
      // `_` is no wildcard: api_x matches no "apiXx"-like value
      expect((await store.searchAudit({ target: 'api%', limit: 5 })).events).toEqual([]);
    });

    it('an empty log, a time range holding no event and a range past the end find nothing', async () => {
      const last = all.at(-1) as AuditEvent;
      expect(await store.searchAudit({ since: last.time + 1, limit: 10 })).toEqual({
        events: [],
        more: false,
      });
      expect(await store.searchAudit({ until: T0, limit: 10 })).toEqual({ events: [], more: false });
      expect(await store.searchAudit({ since: T0 + 1500, until: T0 + 1600, limit: 10 })).toEqual({
        events: [],
        more: false,
      });
      const fresh = await (await h.fresh()).open();
      expect(await fresh.searchAudit({ types: ['query'], limit: 10 })).toEqual({ events: [], more: false });
    });

    it('refuses a search outside its bounds (the console validates first)', async () => {
      await expect(store.searchAudit({ limit: 501 })).rejects.toMatchObject({ code: 'CIPORT_E_INTERNAL' });
      await expect(store.searchAudit({ limit: 0 })).rejects.toMatchObject({ code: 'CIPORT_E_INTERNAL' });
      await expect(store.searchAudit({ limit: 5, types: [] })).rejects.toMatchObject({
        code: 'CIPORT_E_INTERNAL',
      });
      await expect(store.searchAudit({ limit: 5, project: 'x'.repeat(513) })).rejects.toMatchObject({
        code: 'CIPORT_E_INTERNAL',
      });
    });

    it('sessionTraffic sums connection.closed per session', async () => {
      const traffic = await store.sessionTraffic(['ses_0', 'ses_5', 'ses_none']);
      expect(traffic.get('ses_0')).toEqual({ connections: 2, bytesToTarget: 20, bytesFromTarget: 200 });
      expect(traffic.get('ses_5')).toEqual({ connections: 2, bytesToTarget: 120, bytesFromTarget: 200 });
      expect(traffic.has('ses_none')).toBe(false);
      expect((await store.sessionTraffic([])).size).toBe(0);
    });

    it('the queries use the indexes of migration 0011 (same expressions in both)', async () => {
      const names = auditSearchIndexes(h.engine).map((i) => i.name);
      const plan = async (where: string, from = 'audit_events'): Promise<string> => {
        const text = `select seq from ${from} where ${where} order by seq desc limit 51`;
        if (h.engine === 'sqlite') {
          const rows = await t.raw.query<{ detail: string }>(`explain query plan ${text}`, ['x']);
          return rows.map((r) => r.detail).join('\n');
        }
        // A tiny table is cheaper to scan: make the planner show whether it can use the index.
        await t.raw.exec('set enable_seqscan = off');
        await t.raw.exec('set enable_bitmapscan = off');
        const rows = await t.raw.query<{ 'QUERY PLAN': string }>(`explain ${text}`, ['x']);
        return rows.map((r) => r['QUERY PLAN']).join('\n');
      };
      for (const field of ['session', 'target', 'project'] as const) {
        expect(await plan(`${auditFieldSql(h.engine, field)} = ?`)).toContain(`audit_events_${field}_idx`);
      }
      expect(await plan('type = ?')).toContain('audit_events_type_seq_idx');
      const traffic = `${auditFieldSql(h.engine, 'session')} in (?) and type = 'connection.closed'`;
      // SQLite: `indexed by` (what sessionTraffic says) fails outright unless the index fits.
      const from = h.engine === 'sqlite' ? `audit_events indexed by ${CLOSED_INDEX}` : 'audit_events';
      expect(await plan(traffic, from)).toContain(CLOSED_INDEX);
      expect(names).toHaveLength(5);
    });
  });
}
