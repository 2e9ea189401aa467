// Hostile review (issue 11), audit writer backpressure: docs/audit.md says "A stalled store (a
// lock held by another client, a slow disk) therefore slows the applications down; it neither
// grows the gateway's memory nor drops events". With SQLite the writer thread waits at most
// busy_timeout (5 s) for BEGIN IMMEDIATE; another process that holds the write lock longer than
// that makes the whole batch fail with SQLITE_BUSY, and the gateway's #auditQuery only logs
// "audit query failed": the statements were relayed, their `query` events are gone for good.
// Here the other client is a `sqlite3` process holding BEGIN IMMEDIATE for 7 s.
import { spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AuditBacklog } from '../../src/audit/backlog.js';
import { auditEvent, verifyChain } from '../../src/audit/index.js';
import { configLoaded } from '../store/fixtures.js';
import { sqliteHarness, type TestDb } from '../store/harness.js';

const query = (i: number) =>
  auditEvent('query', {
    session: 'ses_s',
    connection: 'con_s',
    principal: {
      issuer: 'gl',
      subject: 's',
      project: 'p',
      ref: 'main',
      pipeline: '1',
      job: '2',
      job_url: null,
    },
    target: 'db',
    rule: 'r',
    exit: 'gateway',
    statement: `SELECT ${i}`,
  } as never);

describe('audit writer, SQLite locked by another process beyond busy_timeout (hostile review)', () => {
  const h = sqliteHarness();
  let t: TestDb;
  beforeAll(() => h.setup());
  afterAll(() => h.teardown());
  beforeEach(async () => {
    t = await h.fresh();
  });
  afterEach(() => t.dispose());

  it('loses no query event while another process holds the write lock for 7 s', async () => {
    const store = await t.open();
    await store.appendAudit(configLoaded(0));
    const file = (t.config as { sqlite: { path: string } }).sqlite.path;
    // Another local process (a backup job, an admin's sqlite3 shell) holds the write lock.
    const holder = spawn('sqlite3', [file], { stdio: ['pipe', 'pipe', 'inherit'] });
    holder.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n");
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    const released = new Promise<void>((resolve) => {
      setTimeout(() => {
        holder.stdin.end('COMMIT;\n');
        holder.once('exit', () => resolve());
      }, 7_000);
    });

    const backlog = new AuditBacklog(100);
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 50; i++) writes.push(backlog.track(store.appendAudit(query(i))));
    const settled = Promise.allSettled(writes);
    await released;
    const results = await settled;
    const lost = results.filter((r) => r.status === 'rejected') as PromiseRejectedResult[];
    expect(
      lost.length,
      `events dropped: ${lost.length}, first error: ${lost[0] ? (lost[0].reason as Error).message : ''}`,
    ).toBe(0);
    expect(await verifyChain(store)).toMatchObject({ ok: true, count: 51 });
  }, 30_000);
});
