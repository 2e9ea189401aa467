// End to end, issue 15 (docs/secrets.md): a real gateway (in process) whose target credentials
// come from AWS Secrets Manager and Vault (loopback fixtures shaped like the real APIs), reached
// by psql, redis-cli and mariadb through `ciport exec`. A rotated secret (password changed on the
// server, then in the provider) is picked up by the next connection without a restart; a
// provider that goes down leaves the last good value in use (metric, one warn line); a start with
// the provider down fails naming the config path; Vault-minted per-session accounts work
// upstream and are gone after the session, or after a restart when the process that held them
// died (the lease file). No secret value in any log line or audit event.

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { VaultClient } from '../../src/credentials/vault-client.js';
import { VaultDatabaseCredentials } from '../../src/credentials/vault-database.js';
import type { RunningGateway } from '../../src/gateway/server.js';
import { makePki, startUpstream, type Upstream } from '../exits/http/helpers.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { baseEnv, ensureBuilt, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { e2eGatewayDoc } from '../fixtures/gateway-doc.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';
import { type RedisServer, startRedis } from '../fixtures/redis-server.js';
import { VaultFixture } from '../fixtures/vault.js';
import { waitFor } from '../fixtures/wait-for.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-secrets-'));
const rnd = () => Math.random().toString(36).slice(2);
const PG_PW_1 = `pg-one-${rnd()}-pw`;
const PG_PW_2 = `pg-two-${rnd()}-pw`;
const REDIS_PW_1 = `redis-one-${rnd()}-pw`;
const REDIS_PW_2 = `redis-two-${rnd()}-pw`;
const VAULT_ADMIN_PW = `vault-admin-${rnd()}-pw`;
const APPROLE_SECRET = `approle-${rnd()}-secret`;
const MDB_VAULT_ADMIN = `ciport_vault_${rnd().slice(0, 6)}`;
const MDB_VAULT_ADMIN_PW = `mdb-admin-${rnd()}-pw`;
const SECRET_ID = 'ci/app-db';
const ADMIN = `admin-${rnd()}-token`;
const API_TOKEN_1 = `api-one-${rnd()}-token`;
const API_TOKEN_2 = `api-two-${rnd()}-token`;
/** What the API upstream accepts (startUpstream reads it per request): rotated by a test. */
const apiAuth = { name: 'authorization', value: `Bearer ${API_TOKEN_1}` };
const logLines: string[] = [];

let gateway: RunningGateway;
let issuer: FixtureIssuer;
let pg: PgServer;
let redis: RedisServer;
let api: Upstream;
let aws: AwsFixture;
let vault: VaultFixture;
let token: string;
let doc: ReturnType<typeof gatewayDoc>;
let agent: ReturnType<typeof spawnCli> | undefined;

function gatewayDoc(port: number, stateDir: string) {
  const address = `127.0.0.1:${pg.port}`;
  return {
    listen: `127.0.0.1:${port}`,
    ...e2eGatewayDoc(stateDir, issuer.url, { adminEnv: 'ADMIN' }),
    vault: {
      address: vault.url,
      auth: { approle: { role_id: 'ciport-gateway', secret_id: { env: 'VAULT_SECRET_ID' } } },
    },
    targets: [
      {
        name: 'db-sm',
        protocol: 'postgres',
        address,
        database: 'app',
        credentials: {
          user: 'app',
          password: { aws_secretsmanager: { secret_id: SECRET_ID, key: 'password' } },
        },
      },
      {
        // The same secret read every second: its reads show the provider's state quickly.
        name: 'db-sm-fast',
        protocol: 'postgres',
        address,
        database: 'app',
        credentials: {
          user: 'app',
          password: { aws_secretsmanager: { secret_id: SECRET_ID, key: 'password', refresh: '1s' } },
        },
      },
      {
        name: 'cache',
        protocol: 'redis',
        address: `127.0.0.1:${redis.port}`,
        credentials: { password: { vault: { path: 'secret/ci/redis', key: 'password' } } },
      },
      {
        name: 'api',
        protocol: 'http',
        address: `127.0.0.1:${api.port}`,
        tls: { ca: { file: join(dir, 'api-ca.pem') }, servername: 'localhost' },
        credentials: { token: { vault: { path: 'secret/ci/api', key: 'token' } } },
      },
      {
        name: 'db-vault',
        protocol: 'postgres',
        address,
        database: 'app',
        credentials: { vault_database: { role: 'readonly' } },
      },
      {
        name: 'mdb-vault',
        protocol: 'mysql',
        address: '127.0.0.1:3306',
        credentials: { vault_database: { role: 'mdb', mount: 'mariadb' } },
      },
    ],
    rules: [
      {
        name: 'ci',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['db-sm', 'db-sm-fast', 'cache', 'api', 'db-vault', 'mdb-vault', 'agent-sm', 'agent-vault'],
        max_ttl: '30m',
      },
    ],
  };
}

async function mariadbRoot<T>(fn: (c: mysql.Connection) => Promise<T>): Promise<T> {
  const c = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  const built = ensureBuilt();
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  pg = await startPgServer({ roles: [{ name: 'app', password: PG_PW_1 }], databases: { app: 'app' } });
  const version = Number(await pg.sql('SHOW server_version_num'));
  // Vault's connection: LOGIN CREATEROLE, never a superuser (PostgreSQL 16+: ADMIN on what it grants).
  await pg.sql(
    `CREATE ROLE readonly NOLOGIN; GRANT pg_read_all_data TO readonly;
     CREATE ROLE vault_admin LOGIN CREATEROLE PASSWORD '${VAULT_ADMIN_PW}';` +
      (version >= 160000 ? ' GRANT readonly TO vault_admin WITH ADMIN OPTION;' : ''),
  );
  redis = await startRedis(['--requirepass', REDIS_PW_1]);
  const pki = makePki();
  writeFileSync(join(dir, 'api-ca.pem'), pki.caPem);
  api = await startUpstream(pki, apiAuth);
  await mariadbRoot(async (c) => {
    await c.query(`CREATE USER '${MDB_VAULT_ADMIN}'@'%' IDENTIFIED BY '${MDB_VAULT_ADMIN_PW}'`);
    await c.query(`GRANT CREATE USER, SELECT ON *.* TO '${MDB_VAULT_ADMIN}'@'%' WITH GRANT OPTION`);
  });

  aws = await startAwsFixture();
  aws.putSecret(SECRET_ID, { username: 'app', password: PG_PW_1 });
  // The gateway runs in this process: the SDK reads its credentials and endpoint from here.
  Object.assign(process.env, aws.env());
  vault = await new VaultFixture().start();
  vault.approle('ciport-gateway', APPROLE_SECRET);
  vault.putKv('secret/ci/redis', { password: REDIS_PW_1 });
  vault.putKv('secret/ci/api', { token: API_TOKEN_1 });
  vault.databaseRole('readonly', {
    protocol: 'postgres',
    host: '127.0.0.1',
    port: pg.port,
    user: 'vault_admin',
    password: VAULT_ADMIN_PW,
    grant: ['readonly'],
  });
  vault.databaseRole(
    'mdb',
    { protocol: 'mysql', host: '127.0.0.1', port: 3306, user: MDB_VAULT_ADMIN, password: MDB_VAULT_ADMIN_PW },
    'mariadb',
  );

  doc = gatewayDoc(await freePort(), join(dir, 'data'));
  gateway = await startTestGateway(gatewayConfig(doc, { VAULT_SECRET_ID: APPROLE_SECRET, ADMIN }), {
    logLines,
    sweepIntervalMs: 250,
  });
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 180_000);

afterAll(async () => {
  agent?.child.kill('SIGTERM');
  await agent?.result;
  await gateway?.close();
  await issuer?.close();
  await aws?.stop().catch(() => {});
  await vault?.stop().catch(() => {});
  await redis?.stop();
  await api?.close();
  await pg?.stop();
  await mariadbRoot((c) => c.query(`DROP USER IF EXISTS '${MDB_VAULT_ADMIN}'@'%'`)).catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

const exec = (targets: string[], script: string, timeoutMs = 30_000) =>
  runCli(['exec', ...targets, '--', 'sh', '-c', script], {
    env: baseEnv({
      CIPORT_GATEWAY: gateway.url,
      CIPORT_CA_FILE: gateway.caFile,
      CIPORT_ID_TOKEN: token,
      PSQLRC: '/dev/null',
      PGPASSFILE: '/dev/null',
      // Generous: twenty jobs at once on a loaded 2-core CI machine.
      PGCONNECT_TIMEOUT: '60',
    }),
    timeoutMs,
  });

const metric = async (name: string, source: string) => {
  const text = await gateway.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{source="${source}"}`));
  return line ? Number(line.split(' ').at(-1)) : undefined;
};

describe('rotation', () => {
  it('postgres, password from Secrets Manager: rotated on the server and in the provider, the next psql works', async () => {
    const before = await exec(['db-sm'], `psql -v ON_ERROR_STOP=1 -tAc 'select current_user'`);
    expect(before.stderr).toBe('');
    expect(before.stdout.trim()).toBe('app');

    await pg.sql(`ALTER ROLE app PASSWORD '${PG_PW_2}'`);
    aws.putSecret(SECRET_ID, { username: 'app', password: PG_PW_2 });
    const reads = aws.verified('secretsmanager').length;
    const after = await exec(['db-sm'], `psql -v ON_ERROR_STOP=1 -tAc 'select current_user'`);
    expect(after.stderr).toBe('');
    expect(after.code).toBe(0);
    expect(after.stdout.trim()).toBe('app');
    // The refusal (28P01) made the exit read the secret again at once.
    expect(aws.verified('secretsmanager').length).toBeGreaterThan(reads);
    expect(logLines.some((l) => l.includes('secret refused upstream'))).toBe(true);
  });

  it('redis, password from Vault KV v2: rotated on the server and in Vault, the next redis-cli works', async () => {
    const ping = `redis-cli --no-auth-warning -u "$REDIS_URL" ping`;
    expect((await exec(['cache'], ping)).stdout.trim()).toBe('PONG');
    await run('redis-cli', [
      '-p',
      String(redis.port),
      '--no-auth-warning',
      '-a',
      REDIS_PW_1,
      'CONFIG',
      'SET',
      'requirepass',
      REDIS_PW_2,
    ]);
    const version = vault.putKv('secret/ci/redis', { password: REDIS_PW_2 });
    expect(version).toBe(2);
    const after = await exec(['cache'], ping);
    expect(after.stdout.trim()).toBe('PONG');
    // The refused AUTH (WRONGPASS) made the exit read version 2 from Vault.
    expect(vault.requests.filter((r) => r.path === 'secret/data/ci/redis').length).toBeGreaterThanOrEqual(2);
  });

  it('http, bearer token from Vault KV v2: a 401 makes the exit read it again, the next request carries the new one', async () => {
    const curl = `curl -s -o /dev/null -w '%{http_code}' "$CIPORT_API_URL/hello"`;
    expect((await exec(['api'], curl)).stdout).toBe('200');
    apiAuth.value = `Bearer ${API_TOKEN_2}`;
    vault.putKv('secret/ci/api', { token: API_TOKEN_2 });
    const reads = vault.requests.filter((r) => r.path === 'secret/data/ci/api').length;
    // The request that meets the rotation gets the upstream's 401; the refusal triggers a read.
    expect((await exec(['api'], curl)).stdout).toBe('401');
    await waitFor(
      () => logLines.some((l) => l.includes('secret rotated') && l.includes('vault:secret/ci/api#token')),
      10_000,
      'the token read again',
    );
    expect(vault.requests.filter((q) => q.path === 'secret/data/ci/api').length).toBeGreaterThan(reads);
    expect((await exec(['api'], curl)).stdout).toBe('200');
  });
});

describe('Vault database secrets engine', () => {
  it('20 parallel sessions each get their own Vault-minted role, usable with psql, revoked after the session', async () => {
    const runs = await Promise.all(
      Array.from({ length: 20 }, () =>
        exec(
          ['db-vault'],
          `psql -v ON_ERROR_STOP=1 -tAc "select current_user || ' ' || pg_has_role(current_user, 'readonly', 'member')"`,
          90_000,
        ),
      ),
    );
    for (const r of runs) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
    const users = runs.map((r) => r.stdout.trim().split(' '));
    for (const [user, member] of users) {
      expect(user).toMatch(/^v-approle-readonly-[A-Za-z0-9]{20}-\d+$/);
      expect(member).toBe('true');
    }
    expect(new Set(users.map(([u]) => u)).size).toBe(20);
    const leases = [...vault.leases.values()].filter((l) => l.role === 'readonly');
    expect(leases.map((l) => l.username).sort()).toEqual(users.map(([u]) => u).sort());
    // Each lease revoked at its session's end, and Vault dropped the role.
    await waitFor(() => leases.every((l) => l.revoked), 20_000, 'every lease revoked');
    const left = await pg.sql(`select count(*) from pg_roles where rolname like 'v-approle-%'`);
    expect(left.trim()).toBe('0');
    const events = await gateway.store.auditEvents({ limit: 10000 });
    const created = events.filter((e) => e.type === 'credential.created' && e.data.target === 'db-vault');
    const revoked = events.filter((e) => e.type === 'credential.revoked' && e.data.target === 'db-vault');
    expect(created.map((e) => e.data.role).sort()).toEqual(users.map(([u]) => u).sort());
    expect(revoked.map((e) => e.data.lease_id).sort()).toEqual(leases.map((l) => l.id).sort());
    expect(new Set(created.map((e) => e.data.session)).size).toBe(20);
  }, 180_000);

  it('mysql: a Vault-minted MariaDB user logs in upstream and is dropped after the session', async () => {
    const r = await exec(
      ['mdb-vault'],
      `mariadb -h "$MYSQL_HOST" -P "$MYSQL_TCP_PORT" -u "$MYSQL_USER" -N -e 'select current_user()'`,
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lease = [...vault.leases.values()].find((l) => l.role === 'mdb');
    expect(r.stdout.trim()).toBe(`${lease?.username}@%`);
    await waitFor(() => lease?.revoked, 20_000, 'lease revoked');
    const [rows] = await mariadbRoot((c) =>
      c.query('SELECT user FROM mysql.user WHERE user = ?', [lease?.username]),
    );
    expect(rows).toEqual([]);
  });

  it('a revoke Vault refuses is logged, audited as credential.revoke_failed, with its retry scheduled', async () => {
    vault.failRevokes = 1;
    const r = await exec(['db-vault'], `psql -v ON_ERROR_STOP=1 -tAc 'select 1'`);
    expect(r.code).toBe(0);
    const session = (await gateway.manager.list())[0];
    const failed = await waitFor(async () =>
      (await gateway.store.auditEvents({ limit: 10000 })).find(
        (e) => e.type === 'credential.revoke_failed' && e.data.session === session?.id,
      ),
    );
    expect(failed.data).toMatchObject({
      code: 'CIPORT_E_VAULT_LEASE_REVOKE_FAILED',
      attempt: 1,
      target: 'db-vault',
    });
    expect(Date.parse(String(failed.data.next_attempt))).toBeGreaterThan(Date.now());
    expect(logLines.some((l) => l.includes('vault database lease not revoked'))).toBe(true);
  });

  it('a restarted gateway revokes the leases its crashed process held for sessions that ended meanwhile', async () => {
    // The crashed process's lease: minted for a session the store has as ended, kept in the
    // gateway's lease file, never revoked.
    expect((await exec(['db-sm'], 'true')).code).toBe(0);
    const over = (await gateway.manager.list()).find((s) => s.endedAt !== null);
    expect(over).toBeDefined();
    const client = new VaultClient(
      { address: vault.url, auth: { token: new Secret({ env: 'T' }, vault.rootToken) } },
      { info() {}, warn() {} },
    );
    const crashed = new VaultDatabaseCredentials(
      [{ target: 'db-vault', mount: 'database', role: 'readonly' }],
      {
        vault: client,
        log: { info() {}, warn() {} },
        audit: async () => {},
        leaseFile: join(dir, 'data', 'vault-leases.json'),
      },
    );
    const cred = await crashed.ensure(
      { id: over?.id as string, expiresAt: Date.now() + 3_600_000 },
      'db-vault',
    );
    crashed.close();
    client.close();
    const lease = [...vault.leases.values()].find((l) => l.username === cred.user);
    expect(lease?.revoked).toBe(false);
    expect(readFileSync(join(dir, 'data', 'vault-leases.json'), 'utf8')).not.toContain(cred.password);

    await gateway.close();
    gateway = await startTestGateway(gatewayConfig(doc, { VAULT_SECRET_ID: APPROLE_SECRET, ADMIN }), {
      logLines,
      sweepIntervalMs: 250,
    });
    expect(lease?.revoked).toBe(true);
    const left = await pg.sql(`select count(*) from pg_roles where rolname = '${cred.user}'`);
    expect(left.trim()).toBe('0');
    const events = await gateway.store.auditEvents({ limit: 10000 });
    expect(
      events.find((e) => e.type === 'credential.revoked' && e.data.lease_id === lease?.id)?.data,
    ).toMatchObject({ session: over?.id, reason: 'reaper', role: cred.user });
  });
});

describe('through an agent', () => {
  beforeAll(async () => {
    const adminEnv = baseEnv({
      CIPORT_GATEWAY: gateway.url,
      CIPORT_CA_FILE: gateway.caFile,
      CIPORT_ADMIN_TOKEN: ADMIN,
    });
    const enrolled = await runCli(
      ['agents', 'enroll', '--name', 'dcv', '--targets', 'agent-sm,agent-vault'],
      {
        env: adminEnv,
      },
    );
    expect(enrolled.code).toBe(0);
    const address = `127.0.0.1:${pg.port}`;
    writeFileSync(
      join(dir, 'agent.yaml'),
      [
        ...agentYamlHead(gateway, 'dcv', join(dir, 'agent')),
        `  - {name: agent-sm, protocol: postgres, address: "${address}", database: app,`,
        `     credentials: {user: app, password: {aws_secretsmanager: {secret_id: ${SECRET_ID}, key: password}}}}`,
        `  - {name: agent-vault, protocol: postgres, address: "${address}", database: app,`,
        '     credentials: {vault_database: {role: readonly}}}',
        'vault:',
        `  address: ${vault.url}`,
        '  auth: {approle: {role_id: ciport-gateway, secret_id: {env: VAULT_SECRET_ID}}}',
        '',
      ].join('\n'),
    );
    // The agent is its own process: the SDK finds the fixture through these, as it would AWS.
    agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml'), '--log-level', 'debug'], {
      env: baseEnv({
        CIPORT_ENROLLMENT_TOKEN: enrolled.stdout.trim(),
        VAULT_SECRET_ID: APPROLE_SECRET,
        ...aws.env(),
      }),
      timeoutMs: 600_000,
    });
    await waitFor(() => gateway.agents.hub.serves('agent-vault'), 30_000, 'the agent to connect');
  }, 60_000);

  it('the agent reads a Secrets Manager password and mints Vault database accounts, revoked at session end', async () => {
    const sm = await exec(['agent-sm'], `psql -v ON_ERROR_STOP=1 -tAc 'select current_user'`);
    expect(sm.stderr).toBe('');
    expect(sm.stdout.trim()).toBe('app');

    const r = await exec(['agent-vault'], `psql -v ON_ERROR_STOP=1 -tAc 'select current_user'`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const user = r.stdout.trim();
    const lease = [...vault.leases.values()].find((l) => l.username === user);
    expect(lease).toBeDefined();
    await waitFor(() => lease?.revoked, 20_000, 'the agent revoked the lease');
    expect((await pg.sql(`select count(*) from pg_roles where rolname = '${user}'`)).trim()).toBe('0');
    const events = await gateway.store.auditEvents({ limit: 10000 });
    const mine = events.filter(
      (e) => e.data.target === 'agent-vault' && String(e.type).startsWith('credential.'),
    );
    await waitFor(async () =>
      (await gateway.store.auditEvents({ limit: 10000 })).some(
        (e) => e.type === 'credential.revoked' && e.data.target === 'agent-vault',
      ),
    );
    expect(mine.find((e) => e.type === 'credential.created')?.data).toMatchObject({
      role: user,
      lease_id: lease?.id,
      agent: 'dcv',
    });
    const agentLog = agent?.stderr() ?? '';
    for (const v of [PG_PW_1, PG_PW_2, APPROLE_SECRET, lease?.password as string, ...vault.loginTokens]) {
      expect(agentLog.includes(v), 'a secret in the agent log').toBe(false);
    }
    expect(agentLog).toContain('vault database credential created');
  });
});

describe('provider down', () => {
  it('keeps the last good value: psql still works, ciport_secret_stale is 1, one warn line without the value', async () => {
    await aws.stop();
    const source = `aws_secretsmanager:${SECRET_ID}`;
    await waitFor(async () => (await metric('ciport_secret_stale', source)) === 1, 15_000, 'stale = 1');
    expect(await metric('ciport_secret_refresh_failures_total', source)).toBeGreaterThanOrEqual(1);
    const r = await exec(['db-sm'], `psql -v ON_ERROR_STOP=1 -tAc 'select current_user'`);
    expect(r.stdout.trim()).toBe('app');
    const warns = logLines.filter((l) => l.includes('keeping the last good value') && l.includes(SECRET_ID));
    expect(warns.length).toBeGreaterThanOrEqual(1);
    expect(warns.length).toBeLessThanOrEqual(2); // one per secret (db-sm and db-sm-fast read it)
    expect(JSON.parse(warns[0] as string).level).toBe(40);
  });

  it('a start with the provider down fails with CIPORT_E_SECRET_UNAVAILABLE naming the config path', async () => {
    const other = gatewayDoc(await freePort(), join(dir, 'data2'));
    const err = await startTestGateway(
      gatewayConfig(other, { VAULT_SECRET_ID: APPROLE_SECRET, ADMIN }),
    ).catch((e) => e);
    expect(err.code).toBe('CIPORT_E_SECRET_UNAVAILABLE');
    expect(err.message).toContain('targets[0].credentials.password');
    expect(err.message).toContain(`aws_secretsmanager:${SECRET_ID}#password`);
    expect(err.message).not.toContain(PG_PW_2);
  });
});

describe('secrets never leak', () => {
  it('no value in any log line or audit event', async () => {
    const audit = JSON.stringify(await gateway.store.auditEvents({ limit: 10000 }));
    const logs = logLines.join('\n');
    const values = [
      PG_PW_1,
      PG_PW_2,
      REDIS_PW_1,
      REDIS_PW_2,
      API_TOKEN_1,
      API_TOKEN_2,
      VAULT_ADMIN_PW,
      APPROLE_SECRET,
      MDB_VAULT_ADMIN_PW,
      ...vault.loginTokens,
      ...[...vault.leases.values()].map((l) => l.password),
    ];
    expect(values.length).toBeGreaterThan(25);
    for (const v of values) {
      expect(logs.includes(v), 'a secret in the logs').toBe(false);
      expect(audit.includes(v), 'a secret in the audit log').toBe(false);
    }
    // The check can fail: the names are there.
    expect(audit).toContain('v-approle-readonly-');
    expect(logs).toContain(SECRET_ID);
  });
});
