// docs/deploy.md's PostgreSQL store: deploy/postgres/ciport-store.sql creates a role with no
// privilege beyond owning its database, and a gateway process on that role migrates its schema
// and answers the probes the deployments use: /healthz and /readyz over HTTP/1.1 (what kubelet
// speaks), and deploy/healthcheck.mjs (the image's HEALTHCHECK).
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, ensureBuilt, ROOT } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { PG_ADMIN_URL } from '../store/harness.js';
import { httpsGet, startGatewayProcess } from './recipes.js';

const run = promisify(execFile);
const SQL = join(ROOT, 'deploy/postgres/ciport-store.sql');
const HEALTHCHECK = join(ROOT, 'deploy/healthcheck.mjs');
const name = `ciport_deploy_${randomBytes(4).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'ciport-store-role-'));
const passwordFile = join(dir, 'ciport-db-password');

async function admin<T extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return (await client.query<T>(text, params)).rows;
  } finally {
    await client.end();
  }
}

function psqlStoreSql(role: string, db: string, pwFile: string) {
  return spawnSync(
    'psql',
    ['-X', '-v', 'ON_ERROR_STOP=1', '-v', `role=${role}`, '-v', `db=${db}`, '-f', SQL, PG_ADMIN_URL],
    { encoding: 'utf8', env: { ...baseEnv(), CIPORT_DB_PASSWORD_FILE: pwFile } },
  );
}

beforeAll(async () => {
  await ensureBuilt();
  writeFileSync(passwordFile, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
}, 180_000);

afterAll(async () => {
  await admin(`drop database if exists "${name}" with (force)`);
  await admin(`drop role if exists "${name}"`);
  rmSync(dir, { recursive: true, force: true });
});

describe('PostgreSQL store role (deploy/postgres/ciport-store.sql)', () => {
  it('refuses to create the role without a password file', () => {
    const r = psqlStoreSql(`${name}_x`, `${name}_x`, join(dir, 'missing'));
    expect(r.status).not.toBe(0);
    expect(r.stdout).toContain('CIPORT_DB_PASSWORD_FILE must name a file');
  });

  it('creates a least-privilege owner; a gateway on it migrates, serves the probes and passes the health check', async () => {
    const created = psqlStoreSql(name, name, passwordFile);
    expect(created.status, created.stderr).toBe(0);
    const [role] = await admin<Record<string, unknown>>(
      'select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin from pg_roles where rolname = $1',
      [name],
    );
    expect(role).toEqual({
      rolsuper: false,
      rolcreatedb: false,
      rolcreaterole: false,
      rolreplication: false,
      rolbypassrls: false,
      rolcanlogin: true,
    });
    const memberships = await admin(
      'select 1 from pg_auth_members m join pg_roles r on r.oid = m.member where r.rolname = $1',
      [name],
    );
    expect(memberships).toEqual([]);

    const password = readFileSync(passwordFile, 'utf8').trim();
    const port = await freePort();
    const dataDir = join(dir, 'data');
    const config = join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      [
        `listen: 127.0.0.1:${port}`,
        `data_dir: ${JSON.stringify(dataDir)}`,
        'store:',
        '  postgres: {url: {env: CIPORT_PG_URL}}',
        'admin_tokens: [{env: CIPORT_ADMIN_TOKEN}]',
        '',
      ].join('\n'),
    );
    const gateway = await startGatewayProcess(
      config,
      baseEnv({
        CIPORT_PG_URL: `postgres://${name}:${password}@127.0.0.1:5432/${name}`,
        CIPORT_ADMIN_TOKEN: randomBytes(16).toString('hex'),
      }),
    );
    try {
      const ca = readFileSync(join(dataDir, 'ca.crt'), 'utf8');
      for (const path of ['/healthz', '/readyz']) {
        const r = await httpsGet(`https://127.0.0.1:${port}${path}`, { ca });
        expect([path, r.status, JSON.parse(r.body)]).toEqual([path, 200, { ok: true }]);
      }
      // the schema belongs to the store's role: it migrated it itself
      const client = new pg.Client({ connectionString: PG_ADMIN_URL.replace(/\/[^/]*$/, `/${name}`) });
      await client.connect();
      try {
        const owned = await client.query<{ tablename: string; tableowner: string }>(
          `select tablename, tableowner from pg_tables where schemaname = 'public' order by tablename`,
        );
        expect(owned.rows.map((r) => r.tablename)).toEqual(
          expect.arrayContaining(['audit_events', 'sessions']),
        );
        expect(new Set(owned.rows.map((r) => r.tableowner))).toEqual(new Set([name]));
      } finally {
        await client.end();
      }

      const health = (url: string) =>
        run(process.execPath, [HEALTHCHECK], { env: { ...baseEnv(), CIPORT_HEALTHCHECK_URL: url } }).then(
          (r) => ({ code: 0, out: r.stdout }),
          (e: { code: number; stdout: string; stderr: string }) => ({
            code: e.code,
            out: e.stdout + e.stderr,
          }),
        );
      expect(await health(`https://127.0.0.1:${port}/readyz`)).toEqual({
        code: 0,
        out: 'healthcheck: /readyz 200 {"ok":true}\n',
      });
      // it never probes without verification beyond loopback
      expect((await health(`https://10.0.0.1:${port}/readyz`)).code).toBe(2);

      gateway.child.kill('SIGTERM');
      const end = await gateway.result;
      expect(end.code, end.stderr).toBe(0);
      expect(end.stderr).toContain('gateway stopped');
      const down = await health(`https://127.0.0.1:${port}/readyz`);
      expect(down.code).toBe(1);
    } finally {
      gateway.child.kill('SIGKILL');
    }
  }, 90_000);
});
