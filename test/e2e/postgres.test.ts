// End to end, issue 5: a real gateway (in process, SQLite store) exiting to a throwaway SCRAM
// PostgreSQL (test/fixtures/pg-server.ts) and to a local HTTPS API, reached through the real
// client (`ciport exec` as a separate process) by psql, pgbench, node-postgres, node-pg-migrate,
// curl and fetch. Per-session roles, query audit, and the secrets sweep.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { makePki, startUpstream, type Upstream } from '../exits/http/helpers.js';
import { baseEnv, ensureBuilt, ROOT, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { createDynamicAdmin } from '../fixtures/pg-dynamic-admin.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { auditedStatements } from '../fixtures/queries.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-pg-'));
const APP_PASSWORD = `upstream-Secret-${Math.random().toString(36).slice(2)}-pw`;
const API_TOKEN = `api-token-${Math.random().toString(36).slice(2)}-xyz`;
const ADMIN_PASSWORD = `dyn-admin-${Math.random().toString(36).slice(2)}-pw`;
const logLines: string[] = [];

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let pg: PgServer;
let api: Upstream;
let token: string;

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({
    ssl: true,
    roles: [{ name: 'app', password: APP_PASSWORD }],
    databases: { app: 'app' },
  });
  await pg.sql(
    'CREATE ROLE readonly NOLOGIN; CREATE ROLE migrator NOLOGIN; GRANT pg_read_all_data TO readonly; GRANT CREATE ON SCHEMA public TO migrator;',
  );
  await pg.sql(`ALTER DATABASE app OWNER TO app`);
  await createDynamicAdmin(pg, { password: ADMIN_PASSWORD, owner: 'app', grant: ['readonly', 'migrator'] });
  writeFileSync(join(dir, 'pg-ca.pem'), pg.caPem as string);
  const pki = makePki();
  writeFileSync(join(dir, 'api-ca.pem'), pki.caPem);
  api = await startUpstream(pki, { name: 'authorization', value: `Bearer ${API_TOKEN}` });

  const port = await freePort();
  const address = `127.0.0.1:${pg.port}`;
  const config = {
    listen: `127.0.0.1:${port}`,
    ...e2eGatewayDoc(join(dir, 'data'), issuer.url),
    targets: [
      {
        name: 'db',
        protocol: 'postgres',
        address,
        database: 'app',
        query_max_length: 64,
        credentials: { user: 'app', password: { env: 'APP_PW' } },
      },
      {
        name: 'db-tls',
        protocol: 'postgres',
        address,
        database: 'app',
        sslmode: 'verify-full',
        tls: { ca: { file: join(dir, 'pg-ca.pem') }, servername: 'localhost' },
        credentials: { user: 'app', password: { env: 'APP_PW' } },
      },
      {
        name: 'db-badpw',
        protocol: 'postgres',
        address,
        database: 'app',
        credentials: { user: 'app', password: { env: 'WRONG_PW' } },
      },
      {
        name: 'db-dyn',
        protocol: 'postgres',
        address,
        database: 'app',
        query_audit: false,
        credentials: {
          dynamic: {
            admin: { user: 'dyn_admin', password: { env: 'ADMIN_PW' } },
            grant: ['readonly'],
            owner: 'app',
          },
        },
      },
      {
        name: 'db-eager',
        protocol: 'postgres',
        address,
        database: 'app',
        credentials: {
          dynamic: {
            admin: { user: 'dyn_admin', password: { env: 'ADMIN_PW' } },
            grant: ['readonly'],
            owner: 'app',
            create: 'session_start',
          },
        },
      },
      {
        name: 'api',
        protocol: 'http',
        address: `127.0.0.1:${api.port}`,
        tls: { ca: { file: join(dir, 'api-ca.pem') }, servername: 'localhost' },
        credentials: { token: { env: 'API_TOKEN' } },
      },
    ],
    rules: [
      {
        name: 'ledger-main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['db', 'db-tls', 'db-badpw', 'db-dyn', 'db-eager', 'api'],
        grants: { 'db-dyn': ['migrator'] },
        max_ttl: '30m',
      },
    ],
  };
  const cfg = gatewayConfig(config, {
    APP_PW: APP_PASSWORD,
    WRONG_PW: 'not-the-password',
    ADMIN_PW: ADMIN_PASSWORD,
    API_TOKEN,
  });
  gateway = await startTestGateway(cfg, { logLines, sweepIntervalMs: 250 });
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 180_000);

afterAll(async () => {
  const t0 = Date.now();
  await gateway?.close();
  const t1 = Date.now();
  await issuer?.close();
  await api?.close();
  const t2 = Date.now();
  await pg?.stop();
  console.log('teardown', t1 - t0, t2 - t1, Date.now() - t2);
  rmSync(dir, { recursive: true, force: true });
});

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({
    CIPORT_GATEWAY: gateway.url,
    CIPORT_CA_FILE: gateway.caFile,
    CIPORT_ID_TOKEN: token,
    PSQLRC: '/dev/null',
    PGPASSFILE: '/dev/null',
    PGCONNECT_TIMEOUT: '10',
    ...extra,
  });

const exec = (targets: string[], script: string, timeoutMs = 30_000, extra: NodeJS.ProcessEnv = {}) =>
  runCli(['exec', ...targets, '--', 'sh', '-c', script], { env: env(extra), timeoutMs });

async function latestSession() {
  const [s] = await gateway.manager.list();
  return s;
}

describe('postgres through the port (static credentials)', () => {
  it('psql connects with the one-time password only; the injected user is used upstream', async () => {
    const r = await exec(
      ['db'],
      `psql "$DATABASE_URL" -tAc 'select current_user'; env | grep -E '^(PG|DATABASE_URL|CIPORT_DB_URL)' | sort`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('app');
    const vars = Object.fromEntries(
      lines.slice(1).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    expect(vars.PGUSER).toBe('app');
    expect(vars.PGDATABASE).toBe('app');
    expect(vars.PGHOST).toBe('127.0.0.1');
    expect(vars.PGPASSWORD).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(vars.DATABASE_URL).toBe(`postgres://app:${vars.PGPASSWORD}@127.0.0.1:${vars.PGPORT}/app`);
    expect(vars.CIPORT_DB_URL).toBe(vars.DATABASE_URL);
    expect(r.stdout).not.toContain(APP_PASSWORD);
  });

  it('\\copy in and out, and query events tied to session and connection (truncated)', async () => {
    const script = [
      `psql -v ON_ERROR_STOP=1 -q -c 'create table if not exists copied (id int, name text)' -c 'truncate copied'`,
      `printf '1\\tone\\n2\\ttwo\\n3\\tthree\\n' | psql -v ON_ERROR_STOP=1 -c '\\copy copied from stdin'`,
      `psql -v ON_ERROR_STOP=1 -c '\\copy (select * from copied order by id) to stdout'`,
      `psql -tAc "select '${'x'.repeat(100)}' as long_statement"`,
    ].join(' && ');
    const r = await exec(['db'], script);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('COPY 3');
    expect(r.stdout).toContain('1\tone\n2\ttwo\n3\tthree\n');
    const session = await latestSession();
    const events = await gateway.store.auditEvents({ limit: 10000 });
    const mine = events.filter((e) => e.data.session === session?.id);
    const queries = auditedStatements(mine);
    expect(queries.some((q) => q.statement.startsWith('create table if not exists copied'))).toBe(true);
    const long = queries.find((q) => q.statement.startsWith("select 'xxx"));
    expect(long?.truncated).toBe(true);
    expect(String(long?.statement).length).toBeLessThanOrEqual(64);
    for (const q of queries) {
      expect(q.event.data.connection).toMatch(/^con_/);
      expect(q.event.data.target).toBe('db');
      expect(Date.parse(q.at)).toBeLessThanOrEqual(q.event.time);
    }
    // Each query event precedes its connection's end in the chain.
    for (const q of queries) {
      const end = mine.find(
        (e) => e.type === 'connection.closed' && e.data.connection === q.event.data.connection,
      );
      expect(end?.seq).toBeGreaterThan(q.event.seq);
    }
    const closed = mine.filter((e) => e.type === 'connection.closed');
    expect(closed.length).toBe(4);
    expect(
      closed.some((c) => Number(c.data.bytes_to_target) > 20 && Number(c.data.bytes_from_target) > 20),
    ).toBe(true);
  });

  it('psql SIGINT cancels a running pg_sleep through the port', async () => {
    const script = `psql -c 'select pg_sleep(30)' & p=$!; sleep 1.5; kill -INT $p; wait $p; echo "rc=$?"`;
    const started = Date.now();
    const r = await exec(['db'], script);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.stdout + r.stderr).toContain('canceling statement due to user request');
    expect(r.code).toBe(0);
  });

  const cancelLines = () => logLines.filter((l) => l.includes('statement in progress cancelled upstream'));
  for (const [i, target] of ['db', 'db-tls'].entries()) {
    it(`a revoke during pg_sleep stops the statement upstream within 2 s (${target})`, async () => {
      // Every connection so far (psql, \copy, a psql SIGINT) closed cleanly: no cancel was sent
      // for any of them, only for the previous revoke test.
      expect(cancelLines()).toHaveLength(i);
      // A marker in the statement text finds exactly this backend in pg_stat_activity.
      const marker = `revoke_${target.replace('-', '_')}_${Math.random().toString(36).slice(2, 10)}`;
      const job = spawnCli(['exec', target, '--', 'psql', '-c', `select pg_sleep(60) as ${marker}`], {
        env: env(),
        timeoutMs: 90_000,
      });
      const backend = async () =>
        (
          await pg.sql(
            `select pid || ':' || state from pg_stat_activity where query like '%as ${marker}' and pid <> pg_backend_pid()`,
          )
        ).trim();
      await waitFor(async () => (await backend()).endsWith(':active'), 20_000, 'pg_sleep to run');
      const session = (await gateway.manager.list({ activeOnly: true })).find(
        (s) => s.targets.includes(target) && s.targets.length === 1,
      );
      expect(session).toBeDefined();
      const revokedAt = Date.now();
      await gateway.manager.revoke(session?.id as string, 'test');
      await waitFor(async () => !(await backend()).endsWith(':active'), 2_000, 'the backend to stop');
      expect(Date.now() - revokedAt).toBeLessThan(2_000);
      // Still nothing active a moment later (not a transient state).
      await new Promise((r) => setTimeout(r, 300));
      expect(await backend()).not.toMatch(/:active$/);
      await job.result;
      await waitFor(() => cancelLines().length === i + 1, 5_000, 'the cancel log line');
      expect(JSON.parse(cancelLines()[i] as string)).toMatchObject({ target, sent: true });
    }, 60_000);
  }

  it('pgbench -i and a short run', async () => {
    const r = await exec(['db'], 'pgbench -i -q -s 1 && pgbench -n -c 4 -j 2 -t 50 -M prepared', 90_000);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/number of transactions actually processed: 200\/200/);
  }, 120_000);

  it('connections that said goodbye leave no time-wait rows on the local hop (the peer check reads that table)', async () => {
    // psql sends Terminate and closes first; the port answers with a reset instead of a FIN, so
    // the application's socket does not linger in TIME_WAIT. node-postgres half-closes after
    // Terminate and must still see a clean end() (it ignores a reset while ending, as with
    // servers). A connection cut without Terminate (psql killed) keeps the FIN path.
    const js = `
      const pg = require('pg');
      (async () => {
        for (let i = 0; i < 10; i++) {
          const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
          await c.connect();
          await c.query('select 1');
          await c.end();
        }
        console.log('pg ok');
      })().catch((e) => { console.error(e.message); process.exit(1); });`;
    writeFileSync(join(dir, 'goodbye.cjs'), js);
    // TIME_WAIT rows towards the local hop's port, as "local remote" pairs. Only the rows this
    // job adds count: a row left by an earlier test whose port had the same number (ports are
    // reused within TIME_WAIT's minute on a busy CI machine) is not this port's.
    const rows = `awk -v p=":$(printf '%04X' "$PGPORT")" '$3 ~ (p "$") && $4 == "06" {print $2, $3}' /proc/net/tcp | sort`;
    const r = await exec(
      ['db'],
      [
        `${rows} > ${join(dir, 'tw-before')}`,
        `for i in $(seq 30); do psql -tAc 'select 1' >/dev/null || exit 1; done`,
        `NODE_PATH=${ROOT}node_modules node ${join(dir, 'goodbye.cjs')} || exit 1`,
        `${rows} > ${join(dir, 'tw-after')}`,
        `echo "time_wait=$(comm -13 ${join(dir, 'tw-before')} ${join(dir, 'tw-after')} | wc -l)"`,
      ].join('\n'),
      60_000,
    );
    expect(r.stderr).not.toMatch(/ECONNRESET|reset by peer/i);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('pg ok');
    expect(r.stdout).toMatch(/time_wait=0\b/);
  }, 90_000);

  it('node-postgres with named prepared statements', async () => {
    const js = `
      const pg = require('pg');
      (async () => {
        const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
        await c.connect();
        const out = [];
        for (const v of [1, 2, 3]) {
          const r = await c.query({ name: 'plus-one', text: 'select $1::int + 1 as x', values: [v] });
          out.push(r.rows[0].x);
        }
        console.log(out.join(','));
        await c.end();
      })().catch((e) => { console.error(e.message); process.exit(1); });`;
    writeFileSync(join(dir, 'prep.cjs'), js);
    const r = await exec(['db'], `NODE_PATH=${ROOT}node_modules node ${join(dir, 'prep.cjs')}`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('2,3,4');
  });

  it('a migration with node-pg-migrate', async () => {
    const migrations = join(dir, 'migrations');
    rmSync(migrations, { recursive: true, force: true });
    mkdirSync(migrations, { recursive: true });
    writeFileSync(
      join(migrations, '1700000000000_create-widgets.cjs'),
      `exports.up = (pgm) => { pgm.createTable('widgets', { id: 'id', name: { type: 'text', notNull: true } }); };
       exports.down = (pgm) => { pgm.dropTable('widgets'); };`,
    );
    const bin = join(ROOT, 'node_modules/.bin/node-pg-migrate');
    const r = await exec(
      ['db'],
      `${bin} up -m ${migrations} --migrations-table pgmigrations && psql -tAc "select count(*) from pgmigrations" && psql -tAc "select to_regclass('public.widgets') is not null"`,
      60_000,
    );
    expect(r.stdout).toContain('MIGRATION 1700000000000_create-widgets (UP)');
    expect(r.stdout.trim().split('\n').slice(-2)).toEqual(['1', 't']);
    expect(r.code).toBe(0);
  }, 90_000);

  it('a wrong one-time password is refused locally with CIPORT_E_PG_AUTH', async () => {
    const r = await exec(['db'], `PGPASSWORD=wrong-otp psql -tAc 'select 1'; echo "rc=$?"`);
    expect(r.stderr).toMatch(/CIPORT_E_PG_AUTH: password authentication failed/);
    expect(r.stdout).toContain('rc=2');
  });

  it('a wrong upstream password gives CIPORT_E_PG_UPSTREAM_AUTH, not a hang', async () => {
    const started = Date.now();
    const r = await exec(['db-badpw'], `psql -tAc 'select 1'; echo "rc=$?"`);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.stderr).toContain('CIPORT_E_PG_UPSTREAM_AUTH');
    expect(r.stdout).toContain('rc=2');
    expect(r.stderr).not.toContain('not-the-password');
  });

  it('TLS to the upstream with verify-full', async () => {
    const r = await exec(['db-tls'], `psql -tAc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()'`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('t');
  });
});

describe('per-session roles', () => {
  const roleQuery = `select u.rolname || ':' || coalesce(string_agg(b.rolname, ',' order by b.rolname), '')
      from pg_roles u left join pg_auth_members m on m.member = u.oid left join pg_roles b on b.oid = m.roleid
     where u.rolname = current_user group by u.rolname`;

  it('exists during the session with exactly the granted roles, owns nothing after it, and is dropped', async () => {
    // public is owned by the database owner (app) since PostgreSQL 15.
    expect((await exec(['db'], `psql -qc 'GRANT CREATE ON SCHEMA public TO migrator'`)).code).toBe(0);
    const r = await exec(
      ['db-dyn'],
      `psql -v ON_ERROR_STOP=1 -tAc "${roleQuery}" && psql -v ON_ERROR_STOP=1 -qc 'create table dyn_owned (x int)'`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const [role, granted] = r.stdout.trim().split(':');
    expect(role).toMatch(/^ciport_[0-9a-f]{16}$/);
    expect(granted).toBe('migrator'); // the rule's grants, not the target's default (readonly)
    const session = await latestSession();
    // Gone after the session, its table reassigned to the owner.
    expect((await pg.sql(`select count(*) from pg_roles where rolname = '${role}'`)).trim()).toBe('0');
    const owner = await exec(
      ['db'],
      `psql -tAc "select tableowner from pg_tables where tablename = 'dyn_owned'" -c 'drop table dyn_owned'`,
    );
    expect(owner.stdout.trim().split('\n')[0]).toBe('app');
    const events = await gateway.store.auditEvents({ limit: 10000 });
    const mine = events.filter((e) => e.data.session === session?.id);
    expect(mine.filter((e) => e.type === 'credential.created').map((e) => e.data.role)).toEqual([role]);
    expect(mine.filter((e) => e.type === 'credential.revoked').map((e) => e.data.role)).toEqual([role]);
    expect(mine.filter((e) => e.type === 'credential.revoke_failed')).toEqual([]);
    // The least-privilege admin has what the docs list: the start-up check found nothing.
    expect(logLines.filter((l) => l.includes('dynamic-credentials admin'))).toEqual([]);
    // query_audit: false on this target
    expect(mine.filter((e) => e.type === 'query')).toEqual([]);
  });

  it('create: session_start makes the role before any connection', async () => {
    const r = await exec(['db-eager'], `psql -h /nonexistent -tAc 'select 1' >/dev/null 2>&1; true`);
    expect(r.code).toBe(0);
    const session = await latestSession();
    const events = (await gateway.store.auditEvents({ limit: 10000 })).filter(
      (e) => e.data.session === session?.id,
    );
    const created = events.filter((e) => e.type === 'credential.created');
    expect(created.map((e) => e.data.granted)).toEqual([['readonly']]);
    expect(events.filter((e) => e.type === 'connection.opened')).toEqual([]);
    expect(events.filter((e) => e.type === 'credential.revoked').map((e) => e.data.role)).toEqual([
      created[0]?.data.role,
    ]);
  });

  it("the reaper drops only its own deployment's roles whose session is not active", async () => {
    const deployment = (await gateway.store.getMeta('deployment_id')) as string;
    expect(deployment).toMatch(/^[0-9a-f]{10}$/);
    // Made by the admin, as the exit would (PostgreSQL 16+: the admin can only drop its own).
    await pg.sql(
      `SET ROLE dyn_admin; CREATE ROLE ciport_00000000deadbeef LOGIN VALID UNTIL 'infinity';
       COMMENT ON ROLE ciport_00000000deadbeef IS 'ciport deployment ${deployment} session ses_gone';
       CREATE ROLE ciport_00000000feedface LOGIN VALID UNTIL 'infinity';
       COMMENT ON ROLE ciport_00000000feedface IS 'ciport deployment 0123456789 session ses_gone';
       CREATE ROLE ciport_00000000cafebabe LOGIN VALID UNTIL 'infinity';
       COMMENT ON ROLE ciport_00000000cafebabe IS 'ciport session ses_unknown_here';
       CREATE ROLE ciport_not_ours LOGIN`,
    );
    const dropped = await reapNow(deployment);
    expect(dropped).toBe(1);
    // Another deployment's role, a legacy role of a session this store does not know, and a
    // role without a ciport tag: untouched (still LOGIN).
    expect(
      (
        await pg.sql(
          `select rolname || ':' || rolcanlogin from pg_roles where rolname like 'ciport%' order by 1`,
        )
      )
        .trim()
        .split('\n'),
    ).toEqual(['ciport_00000000cafebabe:true', 'ciport_00000000feedface:true', 'ciport_not_ours:true']);
    await pg.sql(
      'DROP ROLE ciport_not_ours; DROP ROLE ciport_00000000cafebabe; DROP ROLE ciport_00000000feedface',
    );
  });
});

async function reapNow(deployment: string): Promise<number> {
  const { DynamicCredentials, dynamicSpecFromTarget } = await import('../../src/credentials/dynamic.js');
  const cfg = parseGatewayConfig(
    JSON.stringify({
      issuers: [],
      targets: [
        {
          name: 'db-dyn',
          protocol: 'postgres',
          address: `127.0.0.1:${pg.port}`,
          database: 'app',
          credentials: {
            dynamic: { admin: { user: 'dyn_admin', password: { env: 'ADMIN_PW' } }, owner: 'app' },
          },
        },
      ],
    }),
    'reaper.json',
    { resolveSecrets: true, env: { ADMIN_PW: ADMIN_PASSWORD } },
  );
  const spec = dynamicSpecFromTarget(cfg.targets[0] as never);
  const roles = new DynamicCredentials(spec ? [spec] : [], {
    log: { info: () => {}, warn: () => {} },
    audit: async () => {},
    deploymentId: deployment,
  });
  const active = new Set((await gateway.manager.list({ activeOnly: true })).map((s) => s.id));
  const known = async (ids: string[]) => {
    const found = await Promise.all(ids.map((id) => gateway.store.getSession(id)));
    return new Set(found.filter((s) => s !== undefined).map((s) => s.id));
  };
  return roles.reap(active, { known });
}

describe('http through the port', () => {
  it('curl and fetch reach the HTTPS API with the injected token; a client Authorization never arrives', async () => {
    const before = api.seen.length;
    const js = `fetch(process.env.CIPORT_API_URL + '/hello', { headers: { authorization: 'Bearer client-sent' } })
      .then(async (r) => console.log('fetch', r.status, (await r.text()).length > 0))
      .catch((e) => { console.error(e.message); process.exit(1); });`;
    writeFileSync(join(dir, 'fetch.mjs'), js);
    const r = await exec(
      ['api'],
      `curl -sS -o /dev/null -w 'curl %{http_code}\\n' -H 'Authorization: Basic Y2xpZW50OnNlbnQ=' "$CIPORT_API_URL/hello" && node ${join(dir, 'fetch.mjs')}`,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^CIPORT|curl 200\nfetch 200 true\n$/);
    const seen = api.seen.slice(before);
    expect(seen.length).toBe(2);
    for (const req of seen) {
      const auth = req.rawHeaders.filter(
        (_, i) => i % 2 === 0 && req.rawHeaders[i]?.toLowerCase() === 'authorization',
      );
      expect(auth.length).toBe(1);
      const values = req.rawHeaders.filter(
        (_, i) => i % 2 === 1 && req.rawHeaders[i - 1]?.toLowerCase() === 'authorization',
      );
      expect(values).toEqual([`Bearer ${API_TOKEN}`]);
    }
    const session = await latestSession();
    const events = (await gateway.store.auditEvents({ limit: 10000 })).filter(
      (e) => e.type === 'http.request' && e.data.session === session?.id,
    );
    expect(events.map((e) => [e.data.method, e.data.path, e.data.status])).toEqual([
      ['GET', '/hello', 200],
      ['GET', '/hello', 200],
    ]);
    expect((events[0]?.data.principal as { project?: string })?.project).toBeTruthy();
  });
});

describe('secrets', () => {
  it('the upstream password appears in no log line, audit event, API response, argv or job environment', async () => {
    const cmdlines: string[] = [];
    const scan = () => {
      for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
        try {
          cmdlines.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
        } catch {
          // gone
        }
      }
    };
    const child = spawn(
      process.execPath,
      ['--', join(ROOT, 'bin/ciport.js'), 'open', 'db', 'db-dyn', 'api', '--json'],
      { env: env(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    await waitFor(() => out.trim().endsWith('}'), 15_000);
    const opened = JSON.parse(out);
    const url = opened.env.CIPORT_DB_URL as string;
    // A whole session's worth of traffic, while sampling every process's argv.
    const jobEnv = await exec(
      ['db', 'db-dyn', 'api'],
      `env; psql "$CIPORT_DB_URL" -tAc 'select 1'; PGHOST=$CIPORT_DB_DYN_HOST PGPORT=$CIPORT_DB_DYN_PORT psql "$CIPORT_DB_DYN_URL" -tAc 'select 2'; curl -s "$CIPORT_API_URL/hello" >/dev/null`,
      30_000,
    );
    scan();
    expect(jobEnv.code).toBe(0);
    const psql = spawn('psql', [url, '-tAc', 'select pg_sleep(1)'], { env: env(), stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    scan();
    await new Promise((r) => psql.on('close', r));
    child.kill('SIGINT');
    await new Promise((r) => child.on('close', r));
    const sessions = await gateway.manager.list();
    const audit = JSON.stringify(await gateway.store.auditEvents({ limit: 10000 }));
    const haystacks = {
      logs: logLines.join('\n'),
      audit,
      api: out + err,
      sessions: JSON.stringify(sessions),
      argv: cmdlines.join('\n'),
      jobEnv: jobEnv.stdout + jobEnv.stderr,
    };
    for (const [where, text] of Object.entries(haystacks)) {
      expect(text.includes(APP_PASSWORD), `upstream password in ${where}`).toBe(false);
      expect(text.includes(pg.superPassword), `superuser password in ${where}`).toBe(false);
      expect(text.includes(ADMIN_PASSWORD), `admin password in ${where}`).toBe(false);
      expect(text.includes(API_TOKEN), `API token in ${where}`).toBe(false);
    }
    // The checks can fail: the password is where it should be (the gateway's config), and the
    // job did see its one-time password.
    expect(logLines.length).toBeGreaterThan(10);
    expect(jobEnv.stdout).toMatch(/^CIPORT_DB_URL=postgres:\/\/app:[A-Za-z0-9_-]{43}@/m);
    expect(jobEnv.stdout).toMatch(/^1\n2\n$/m);
  }, 60_000);
});
