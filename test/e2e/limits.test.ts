// End to end, issue 10 items 4 and 12, with real `ciport exec` processes and psql against the
// machine's PostgreSQL (a `tcp` target) through the real gateway:
// - 20 parallel jobs of one project on `main` (distinct job ids, one GitLab `sub`) all get their
//   ports; one job hammering is limited, and its client waits out Retry-After and gets through;
// - a session under `limits.bytes` is cut where the budget ends: a big result is reset, the next
//   connection refused, the job told why in one line, and `session.limit_exceeded` written.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { baseEnv, ensureBuilt, runCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { api, connectClient } from '../gateway/helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-limits-'));
const BYTES = 200_000;
let gateway: RunningGateway;
let issuer: FixtureIssuer;

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  const cfg = gatewayConfig({
    listen: `127.0.0.1:${await freePort()}`,
    data_dir: join(dir, 'gw'),
    store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
    // One session per job every 15 s, one at a time (slow enough that a loaded machine cannot refill
    // the bucket between two commands); the issuer's ceiling stays at its default.
    sessions: { default_ttl: '15m', lease_timeout: '30s', rate_limit: { per_minute: 4, burst: 1 } },
    issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
    targets: [
      { name: 'pg', protocol: 'tcp', address: '127.0.0.1:5432' },
      // The gateway speaks PostgreSQL here (one-time password on the local hop; trust upstream).
      {
        name: 'pgx',
        protocol: 'postgres',
        address: '127.0.0.1:5432',
        database: 'test',
        credentials: { user: 'postgres' },
      },
    ],
    rules: [
      { name: 'main', issuer: 'gitlab', when: { project_id: '61577203', ref: 'main' }, allow: ['pg'] },
      {
        name: 'budget',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref: 'budget' },
        allow: ['pg', 'pgx'],
        limits: { bytes: BYTES },
      },
    ],
  });
  gateway = await startTestGateway(cfg, { sweepIntervalMs: 250 });
  await built;
}, 300_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  rmSync(dir, { recursive: true, force: true });
});

const PSQL = 'psql -h "$CIPORT_PG_HOST" -p "$CIPORT_PG_PORT" -U postgres -d test -X -At';

function exec(token: string, script: string, env: Record<string, string> = {}, target = 'pg') {
  return runCli(['exec', '--gateway', gateway.url, target, '--', 'sh', '-c', script], {
    env: baseEnv({ CIPORT_ID_TOKEN: token, CIPORT_CA_FILE: gateway.caFile as string, ...env }),
    timeoutMs: 240_000,
  });
}

const job = (id: number, claims: Record<string, unknown> = {}) =>
  issuer.mint({ job_id: String(id), ...claims }, { preset: 'gitlab-main', audience: 'ciport' });

describe('parallel jobs and the rate limit', () => {
  it('20 parallel jobs of one project on main all get their ports', async () => {
    const tokens = await Promise.all(Array.from({ length: 20 }, (_, i) => job(7_000_000 + i)));
    const results = await Promise.all(tokens.map((t) => exec(t, `${PSQL} -c 'select 1'`)));
    for (const r of results) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe('1');
    }
  }, 300_000);

  it('one job hammering is limited; its client waits out Retry-After and gets through', async () => {
    const token = await job(7_100_000);
    const hammer = await Promise.all(
      [1, 2, 3, 4].map(() => exec(token, `${PSQL} -c 'select 1'`, { CIPORT_RATE_LIMIT_WAIT: '0' })),
    );
    expect(hammer.map((r) => r.code).sort()).toEqual([0, 5, 5, 5]);
    for (const r of hammer.filter((r) => r.code === 5)) expect(r.stderr).toContain('CIPORT_E_RATE_LIMITED');

    // Take the job's token right before (as another command of the job would), so that the
    // next exec meets a 429 whatever time the processes above took.
    const c = await connectClient(gateway.url, gateway.caPem);
    const taken = await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} });
    c.destroy();
    expect([201, 429]).toContain(taken.status);
    const started = Date.now();
    const patient = await exec(token, `${PSQL} -c 'select 2'`);
    expect(patient.code).toBe(0);
    expect(patient.stdout.trim()).toBe('2');
    expect(patient.stderr).toMatch(/^ciport: gateway rate limit, retrying in ([1-9]|1[0-6])s$/m);
    expect(Date.now() - started).toBeLessThan(45_000);
  }, 300_000);
});

describe('limits.bytes through ciport exec', () => {
  it('cuts psql near the limit, refuses the next connection and tells the job why', async () => {
    const token = await job(7_200_000, {
      ref: 'budget',
      sub: 'project_path:acme/ledger:ref_type:branch:ref:budget',
    });
    const script = [
      `${PSQL} -c 'select 1'; echo "small=$?"`,
      `${PSQL} -c "select repeat('x', 5000000)" > /dev/null; echo "big=$?"`,
      `${PSQL} -c 'select 3'; echo "after=$?"`,
    ].join('; ');
    const r = await exec(token, script);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('1\nsmall=0');
    expect(r.stdout).toMatch(/big=[1-9]/);
    expect(r.stdout).toMatch(/after=[1-9]/);
    expect(r.stdout).not.toContain('\n3\n');
    expect(r.stderr).toMatch(/byte limit \(CIPORT_E_BYTE_LIMIT\)/);

    const events = await gateway.store.auditEvents({ limit: 10_000 });
    const exceeded = events.filter((e) => e.type === 'session.limit_exceeded');
    expect(exceeded).toHaveLength(1);
    expect(exceeded[0]?.data).toMatchObject({ limit: 'bytes', max: BYTES, rule: 'budget', target: 'pg' });
    expect(exceeded[0]?.data.bytes as number).toBeLessThanOrEqual(BYTES);
    // Near the limit, not megabytes later: every connection of the session together.
    const session = exceeded[0]?.data.session;
    const carried = events
      .filter((e) => e.type === 'connection.closed' && e.data.session === session)
      .reduce((n, e) => n + (e.data.bytes_to_target as number) + (e.data.bytes_from_target as number), 0);
    expect(carried).toBeLessThanOrEqual(BYTES);
  }, 300_000);

  it('cuts a postgres-protocol target the same way (the gateway is the PostgreSQL exit)', async () => {
    const token = await job(7_300_000, {
      ref: 'budget',
      sub: 'project_path:acme/ledger:ref_type:branch:ref:budget',
    });
    const psql = 'psql "$DATABASE_URL" -X -At';
    const script = [
      `${psql} -c 'select 1'; echo "small=$?"`,
      `${psql} -c "select repeat('x', 5000000)" > /dev/null; echo "big=$?"`,
      `${psql} -c 'select 3'; echo "after=$?"`,
    ].join('; ');
    const r = await exec(token, script, {}, 'pgx');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('1\nsmall=0');
    expect(r.stdout).toMatch(/big=[1-9]/);
    expect(r.stdout).toMatch(/after=[1-9]/);
    expect(r.stderr).toMatch(/byte limit \(CIPORT_E_BYTE_LIMIT\)/);
    const events = await gateway.store.auditEvents({ limit: 10_000 });
    const exceeded = events.filter((e) => e.type === 'session.limit_exceeded' && e.data.target === 'pgx');
    expect(exceeded).toHaveLength(1);
    expect(exceeded[0]?.data.bytes as number).toBeLessThanOrEqual(BYTES);
  }, 300_000);
});
