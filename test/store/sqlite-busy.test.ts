// SQLite's write lock held by another process longer than busy_timeout (docs/audit.md "The
// writer", Failures): audit batches are retried until the lock is released (nothing relayed is
// dropped), while a state change someone awaits fails with CIPORT_E_STORE_UNAVAILABLE after
// its wait and writes nothing. The other process is a `sqlite3` shell holding BEGIN IMMEDIATE.
import { spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { auditEvent, verifyChain } from '../../src/audit/index.js';
import { ended, newSession, opened, record } from './fixtures.js';
import { sqliteHarness, type TestDb } from './harness.js';

describe('sqlite store, write lock held elsewhere beyond busy_timeout', () => {
  const h = sqliteHarness();
  let t: TestDb;
  beforeAll(() => h.setup());
  afterAll(() => h.teardown());
  beforeEach(async () => {
    t = await h.fresh();
  });
  afterEach(() => t.dispose());

  it('retries the audit batch, fails the awaited state change cleanly, keeps the chain', async () => {
    const store = await t.open();
    const { session } = await store.createSession(record(newSession()), opened);
    const file = (t.config as { sqlite: { path: string } }).sqlite.path;
    const holder = spawn('sqlite3', [file], { stdio: ['pipe', 'pipe', 'inherit'] });
    holder.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n");
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    // Held past two busy_timeout waits (5 s each): the end's group fails on its second attempt.
    const released = new Promise<void>((resolve) => {
      setTimeout(() => {
        holder.stdin.end('COMMIT;\n');
        holder.once('exit', () => resolve());
      }, 11_000);
    });
    const query = auditEvent('query', {
      session: session.id,
      connection: 'con_1',
      principal: session.principal,
      target: 'staging-db',
      rule: session.rule,
      exit: 'gateway',
      statement: 'SELECT 1',
    } as never);
    const q = store.appendAudit(query);
    const end = store.endSession(session.id, 'client_end', ended);
    const endResult = await end.then(
      () => 'ended',
      (err: { code?: string }) => err.code,
    );
    await released;
    expect(endResult).toBe('CIPORT_E_STORE_UNAVAILABLE');
    expect(await q).toMatchObject({ seq: 2, type: 'query' });
    expect((await store.getSession(session.id))?.state).toBe('active');
    expect(await verifyChain(store)).toMatchObject({ ok: true, count: 2 });
  }, 30_000);
});

describe('sqlite store closing while the write lock is held elsewhere', () => {
  const h = sqliteHarness();
  let t: TestDb;
  beforeAll(() => h.setup());
  afterAll(() => h.teardown());
  beforeEach(async () => {
    t = await h.fresh();
  });
  afterEach(() => t.dispose());

  it('does not hang: queued audit events are abandoned after the close timeout, and it says so', async () => {
    const store = await t.open();
    const { session } = await store.createSession(record(newSession()), opened);
    const file = (t.config as { sqlite: { path: string } }).sqlite.path;
    const holder = spawn('sqlite3', [file], { stdio: ['pipe', 'pipe', 'inherit'] });
    holder.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n");
    await new Promise<void>((resolve) => holder.stdout.once('data', () => resolve()));
    try {
      const q = store.appendAudit(
        auditEvent('query', {
          session: session.id,
          connection: 'con_1',
          principal: session.principal,
          target: 'staging-db',
          rule: session.rule,
          exit: 'gateway',
          statement: 'SELECT 1',
        } as never),
      );
      q.catch(() => {});
      // The lock is never released while close runs: without the bound, close would wait forever.
      const closing = await store.close({ timeoutMs: 1_000 }).then(
        () => 'closed',
        (err: { code?: string; message?: string }) => `${err.code}: ${err.message}`,
      );
      expect(closing).toMatch(/^CIPORT_E_STORE_UNAVAILABLE: .*abandoned/);
      await expect(q).rejects.toMatchObject({ code: 'CIPORT_E_STORE_UNAVAILABLE' });
    } finally {
      holder.stdin.end('COMMIT;\n');
      await new Promise<void>((resolve) => holder.once('exit', () => resolve()));
    }
  }, 30_000);
});
