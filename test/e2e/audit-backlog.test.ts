// Query audit under pressure: pgbench in pipeline mode sends statements faster than the store
// commits one `query` event each, and the store stalls outright for a while (another session
// holds a lock on the audit table of the gateway's PostgreSQL store). The relays must pause
// reading from the app instead of queueing events without limit, and every event must land.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QUERY_BATCH_MAX_STATEMENTS } from '../../src/audit/query-batch.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { baseEnv, ensureBuilt, runCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { auditedStatements } from '../fixtures/queries.js';
import { waitFor } from '../fixtures/wait-for.js';
import { PG_ADMIN_URL } from '../store/harness.js';

const MAX = 8;
const CLIENTS = 2;
const PIPELINES = 2;
const PER_PIPELINE = 1000;
/** Statements one 16 KiB HTTP/2 DATA frame can carry (Parse+Bind+Describe+Execute ≈ 56 B each). */
const PER_CHUNK = 300;
const dir = mkdtempSync(join(tmpdir(), 'ciport-backlog-'));
let gateway: RunningGateway;
let issuer: FixtureIssuer;
let pgServer: PgServer;
let admin: pg.Client;
const dbName = `ciport_backlog_${randomBytes(6).toString('hex')}`;
const storeUrl = (() => {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${dbName}`;
  return u.toString();
})();

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  pgServer = await startPgServer({
    roles: [{ name: 'app', password: 'app-Secret-pw' }],
    databases: { app: 'app' },
  });
  const cfg = gatewayConfig(
    {
      listen: `127.0.0.1:${await freePort()}`,
      data_dir: join(dir, 'gw'),
      store: { postgres: { url: storeUrl } },
      sessions: { rate_limit: { per_minute: 10000, burst: 1000 } },
      issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
      targets: [
        {
          name: 'db',
          protocol: 'postgres',
          address: `127.0.0.1:${pgServer.port}`,
          database: 'app',
          credentials: { user: 'app', password: { env: 'APP_PW' } },
        },
      ],
      rules: [{ name: 'main', issuer: 'gitlab', when: { ref_protected: true }, allow: ['db'] }],
    },
    { APP_PW: 'app-Secret-pw' },
  );
  gateway = await startTestGateway(cfg, { auditBacklogMax: MAX });
  await built;
}, 120_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  await pgServer?.stop();
  await admin?.query(`drop database if exists ${dbName} with (force)`);
  await admin?.end();
  rmSync(dir, { recursive: true, force: true });
});

describe('query audit backpressure', () => {
  it('pauses the app instead of queueing events without bound, and loses none', async () => {
    const script = join(dir, 'pipeline.sql');
    writeFileSync(
      script,
      [
        '\\startpipeline',
        ...Array.from({ length: PER_PIPELINE }, (_, i) => `select ${i} as n;`),
        '\\endpipeline',
        '',
      ].join('\n'),
    );
    const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
    const run = runCli(
      [
        'exec',
        'db',
        '--',
        'pgbench',
        '-n',
        '-M',
        'extended',
        '-c',
        String(CLIENTS),
        '-j',
        '2',
        '-t',
        String(PIPELINES),
        '-f',
        script,
      ],
      {
        env: baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, CIPORT_ID_TOKEN: token }),
        timeoutMs: 120_000,
      },
    );
    // Once statements flow, stall the store: a lock on the audit table for two seconds.
    await waitFor(() => gateway.auditBacklog.peak > 0, 30_000, 'the first query events');
    const locker = new pg.Client({ connectionString: storeUrl });
    await locker.connect();
    await locker.query('begin');
    await locker.query('lock table audit_events in exclusive mode');
    await new Promise((r) => setTimeout(r, 2_000));
    const whileStalled = gateway.auditBacklog.pending;
    await locker.query('commit');
    await locker.end();
    const r = await run;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`number of transactions actually processed: ${CLIENTS * PIPELINES}`);

    const backlog = gateway.auditBacklog;
    expect(backlog.stalls).toBeGreaterThan(0);
    // While the store stood still, the relays held the app back: at most one read chunk's
    // statements per connection beyond the bound (without the pause: all of them).
    expect(whileStalled).toBeGreaterThanOrEqual(MAX);
    // The backlog counts statements; a connection also holds up to one batch not handed over yet.
    expect(backlog.peak).toBeLessThanOrEqual(MAX + CLIENTS * (PER_CHUNK + QUERY_BATCH_MAX_STATEMENTS));
    await new Promise<void>((resolve) => {
      const check = () => (backlog.pending === 0 ? resolve() : setTimeout(check, 20));
      check();
    });
    const [session] = await gateway.manager.list();
    const queries = (await gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'query' && (e.data as { session?: string }).session === session?.id,
    );
    const selects = auditedStatements(queries).filter((s) => /^select \d+ as n;$/.test(s.statement));
    expect(selects).toHaveLength(CLIENTS * PIPELINES * PER_PIPELINE);
    // Statements are gathered per connection: far fewer events than statements.
    expect(queries.length).toBeLessThan(selects.length / 4);
  });
});
