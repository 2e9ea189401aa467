// Hostile review (issue 11): two processes (two gateways) write one SQLite file at once — each
// with its own writer thread, batches of query events, and session opens/ends (one writer
// message per group). The chain must not fork, and nothing acknowledged may be missing.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/index.js';
import { openStore } from '../../src/store/open.js';
import { ensureBuilt } from '../fixtures/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-2proc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const WORKER = (who: string) => `
const { openStore } = await import(${JSON.stringify(join(process.cwd(), 'dist/src/store/open.js'))});
const { auditEvent } = await import(${JSON.stringify(join(process.cwd(), 'dist/src/audit/index.js'))});
const { randomUUID } = await import('node:crypto');
const store = await openStore(undefined, { dataDir: ${JSON.stringify(dir)} });
const principal = { issuer: 'gl', subject: 's', project: 'p', ref: 'main', pipeline: '1', job: '2', job_url: null };
const writes = [];
for (let i = 0; i < 600; i++) {
  writes.push(store.appendAudit(auditEvent('query', { session: 'ses_${who}', connection: 'con_${who}', principal, target: 'db', rule: 'r', exit: 'gateway', statement: 'SELECT ' + i + ' /* ${who} */' })));
  if (i % 20 === 0) {
    const now = Date.now();
    const id = randomUUID();
    writes.push(store.createSession({ id, secretHash: randomUUID().replace(/-/g, '').repeat(2), issuer: 'gl', subject: 's', principal, targets: ['db'], rule: 'r', createdAt: now, expiresAt: now + 60000, leaseExpiresAt: now + 30000, gatewayId: '${who}' },
      (s) => auditEvent('session.opened', { session: s.id, principal, targets: s.targets, rule: 'r', expires_at: new Date(s.expiresAt).toISOString(), ttl_ms: 60000 }),
      { jti: { issuer: 'gl', jti: 'shared-' + i, expiresAt: now + 3600000 } })
      .then((c) => store.endSession(c.session.id, 'client_end', (s) => auditEvent('session.ended', { session: s.id, principal, targets: s.targets, rule: 'r', reason: 'client_end', duration_ms: 0 }), { current: c.session }))
      .catch((e) => { if (e.code !== 'CIPORT_E_TOKEN_REPLAYED') throw e; return 'replayed'; }));
  }
}
const r = await Promise.allSettled(writes);
const bad = r.filter((x) => x.status === 'rejected').map((x) => String(x.reason && x.reason.message));
const replayed = r.filter((x) => x.value === 'replayed').length;
await store.close();
process.stdout.write(JSON.stringify({ bad, replayed }));
`;

describe('two processes on one SQLite file (hostile review)', () => {
  it('keeps one chain with every acknowledged event, and each shared jti opens one session', async () => {
    await ensureBuilt();
    // create the schema once
    (await openStore(undefined, { dataDir: dir })).close();
    const run = (who: string) =>
      new Promise<{ bad: string[]; replayed: number }>((resolve, reject) => {
        const p = spawn(process.execPath, ['--input-type=module', '-e', WORKER(who)], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        p.stdout.on('data', (c: Buffer) => (out += c.toString()));
        p.on('exit', (code) =>
          code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker ${who} exit ${code}: ${out}`)),
        );
      });
    const [a, b] = await Promise.all([run('a'), run('b')]);
    expect(a.bad).toEqual([]);
    expect(b.bad).toEqual([]);
    // 30 jtis shared by both processes: each opened exactly one session.
    expect(a.replayed + b.replayed).toBe(30);
    const store = await openStore(undefined, { dataDir: dir });
    try {
      expect(await verifyChain(store)).toMatchObject({ ok: true, count: 1200 + 30 * 2 });
    } finally {
      await store.close();
    }
  }, 120_000);
});
