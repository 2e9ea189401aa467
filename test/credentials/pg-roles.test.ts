// Per-session roles against a throwaway PostgreSQL with least-privilege admins (CREATEROLE, not
// superuser): ownership tags per deployment (two deployments on one cluster), and a drop that
// fails (an admin without the owner's privileges) is logged as an error, audited, counted and
// retried with backoff, then succeeds once the grant is fixed.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { dynamicRoleName } from '../../src/credentials/account-names.js';
import { DynamicCredentials, type DynamicSpec, type RoleEvent } from '../../src/credentials/dynamic.js';
import { parseRoleComment, roleComment } from '../../src/credentials/pg-roles.js';
import { type PgServer, startPgServer } from '../fixtures/pg-server.js';

let server: PgServer;
let version: number;

beforeAll(async () => {
  server = await startPgServer({
    roles: [
      { name: 'app', password: 'app-pw' },
      { name: 'adm_ok', password: 'adm-ok-pw', attributes: 'CREATEROLE' },
      { name: 'adm_noowner', password: 'adm-noowner-pw', attributes: 'CREATEROLE' },
    ],
    databases: { app: 'app' },
  });
  version = Number(await server.sql('SHOW server_version_num'));
  await server.sql(
    `CREATE ROLE readonly NOLOGIN; GRANT pg_read_all_data TO readonly; GRANT app TO adm_ok;` +
      (version >= 160000 ? ' GRANT readonly TO adm_ok, adm_noowner WITH ADMIN OPTION;' : ''),
  );
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

function spec(admin: string, password: string): DynamicSpec {
  return {
    protocol: 'postgres',
    target: 'db',
    host: server.host,
    port: server.port,
    tls: undefined,
    database: 'app',
    adminUser: admin,
    adminPassword: new Secret({ env: 'UNUSED' }, password),
    grant: ['readonly'],
    owner: 'app',
    create: 'first_connection',
  };
}

function roles(admin: string, password: string, deploymentId: string, extra: { retryBaseMs?: number } = {}) {
  const events: RoleEvent[] = [];
  const errors: object[] = [];
  const warnings: object[] = [];
  let failures = 0;
  const r = new DynamicCredentials([spec(admin, password)], {
    log: {
      info: () => {},
      warn: (o) => warnings.push(o),
      error: (o) => errors.push(o),
    },
    audit: async (e) => {
      events.push(e);
    },
    deploymentId,
    onRevokeFailed: () => {
      failures++;
    },
    ...extra,
  });
  return { r, events, errors, warnings, failures: () => failures };
}

async function asRole(user: string, password: string, sql: string): Promise<void> {
  const c = new pg.Client({ host: server.host, port: server.port, user, password, database: 'app' });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

const roleState = async (role: string) =>
  (await server.sql(`select rolcanlogin from pg_roles where rolname = '${role}'`)).trim();

describe('role tags', () => {
  it('name the deployment and the session; legacy tags have no deployment', () => {
    expect(parseRoleComment(roleComment('0a1b2c3d4e', 'ses_x', 'db'))).toEqual({
      deployment: '0a1b2c3d4e',
      session: 'ses_x',
      target: 'db',
    });
    // Tags written before roles were per target name no target.
    expect(parseRoleComment('ciport deployment 0a1b2c3d4e session ses_x')).toEqual({
      deployment: '0a1b2c3d4e',
      session: 'ses_x',
    });
    expect(parseRoleComment('ciport session ses_old')).toEqual({ deployment: undefined, session: 'ses_old' });
    expect(parseRoleComment('something else')).toBeUndefined();
    expect(parseRoleComment('ciport deployment NOTHEX session s')).toBeUndefined();
    expect(parseRoleComment(null)).toBeUndefined();
  });
});

describe('two deployments on one cluster', () => {
  it("neither reaps nor revokes the other's live role", async () => {
    const a = roles('adm_ok', 'adm-ok-pw', 'aaaaaaaaaa');
    const b = roles('adm_ok', 'adm-ok-pw', 'bbbbbbbbbb');
    const session = { id: `ses_a_${Date.now()}`, expiresAt: Date.now() + 600_000 };
    const cred = await a.r.ensure(session, 'db');
    await asRole(cred.user, cred.password, 'select 1');
    expect(await b.r.reap(new Set())).toBe(0);
    // Same session id through B (cannot happen with random ids, but must be harmless).
    await b.r.revokeSession(session.id, ['db'], 'test');
    expect(b.warnings).toHaveLength(1);
    expect(b.events).toEqual([]);
    expect(await roleState(cred.user)).toBe('t');
    await asRole(cred.user, cred.password, 'select 1'); // still logs in
    // A reaps its own.
    expect(await a.r.reap(new Set())).toBe(1);
    expect(await roleState(cred.user)).toBe('');
    expect(a.events.map((e) => e.type)).toEqual(['credential.created', 'credential.revoked']);
  });
});

describe('least-privilege admin', () => {
  it('creates, drops (objects reassigned) and reaps with CREATEROLE and the documented grants only', async () => {
    const { r, events, errors } = roles('adm_ok', 'adm-ok-pw', 'cccccccccc');
    expect(await r.checkAdmin('db')).toEqual([]);
    const session = { id: `ses_ok_${Date.now()}`, expiresAt: Date.now() + 600_000 };
    const cred = await r.ensure(session, 'db');
    // In database app, whose owner owns schema public (PostgreSQL 15+).
    await asRole('app', 'app-pw', 'GRANT CREATE ON SCHEMA public TO readonly');
    await asRole(cred.user, cred.password, 'create table lp_owned (x int)');
    // A held connection: the drop must terminate it.
    const held = new pg.Client({
      host: server.host,
      port: server.port,
      user: cred.user,
      password: cred.password,
      database: 'app',
    });
    held.on('error', () => {});
    await held.connect();
    await r.revokeSession(session.id, ['db'], 'session_ended:client_end');
    expect(errors).toEqual([]);
    expect(events.map((e) => e.type)).toEqual(['credential.created', 'credential.revoked']);
    expect(events[1]?.terminated).toBe(1);
    expect(await roleState(cred.user)).toBe('');
    const owner = new pg.Client({
      host: server.host,
      port: server.port,
      user: 'app',
      password: 'app-pw',
      database: 'app',
    });
    await owner.connect();
    const t = await owner.query(`select tableowner from pg_tables where tablename = 'lp_owned'`);
    expect(t.rows).toEqual([{ tableowner: 'app' }]);
    await owner.query('DROP TABLE lp_owned; REVOKE CREATE ON SCHEMA public FROM readonly');
    await owner.end();
    await held.end().catch(() => {});
  });

  it('a drop the admin may not do is an error, an audit event and a metric, retried with backoff', async () => {
    const { r, events, errors, failures } = roles('adm_noowner', 'adm-noowner-pw', 'dddddddddd', {
      retryBaseMs: 1_500,
    });
    // The start-up check names the missing grant.
    expect(await r.checkAdmin('db')).toEqual([
      'the admin "adm_noowner" does not have the privileges of the owner (REASSIGN OWNED needs them): GRANT "app" TO "adm_noowner"',
    ]);
    const session = { id: `ses_fail_${Date.now()}`, expiresAt: Date.now() + 600_000 };
    const cred = await r.ensure(session, 'db');
    expect(cred.user).toBe(dynamicRoleName(session.id, 'db'));
    await r.revokeSession(session.id, ['db'], 'session_ended:revoked');
    const failed = events.filter((e) => e.type === 'credential.revoke_failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({
      role: cred.user,
      code: 'CIPORT_E_PG_ROLE_REVOKE_FAILED',
      attempt: 1,
      reason: 'session_ended:revoked',
    });
    expect(failed[0]?.error).toMatch(/^42501: permission denied to reassign objects/);
    expect(failed[0]?.error).not.toContain(cred.password);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'CIPORT_E_PG_ROLE_REVOKE_FAILED', hint: expect.any(String) });
    expect(failures()).toBe(1);
    expect(await roleState(cred.user)).toBe('f'); // NOLOGIN, still there

    // Within the backoff the reaper does not hammer it.
    expect(await r.reap(new Set())).toBe(0);
    expect(failures()).toBe(1);
    expect(r.failing).toBe(1);

    // Fixed by the operator; after the backoff the reaper drops it.
    await server.sql('GRANT app TO adm_noowner');
    await sleep(1_600);
    expect(await r.reap(new Set())).toBe(1);
    expect(await roleState(cred.user)).toBe('');
    expect(r.failing).toBe(0);
    expect(events.at(-1)).toMatchObject({ type: 'credential.revoked', role: cred.user, reason: 'reaper' });
    await server.sql('REVOKE app FROM adm_noowner');
  });
});

describe('the admin password from a provider (docs/secrets.md)', () => {
  it('a refused admin login re-reads the secret and logs in once more with a changed value', async () => {
    // As the providers leave it: the old value in use, the provider already holding the new one.
    const { r } = roles('adm_ok', 'adm-old-pw', '0a1b2c3d4e');
    const password = r.spec('db')?.adminPassword as Secret;
    let provider = 'adm-ok-pw';
    let reads = 0;
    password.onRefused(async () => {
      reads++;
      return password.update(provider);
    });
    const made = await r.ensure({ id: 'ses_admrot', expiresAt: Date.now() + 60_000 }, 'db');
    expect(made.user).toMatch(/^ciport_/);
    expect(reads).toBe(1);
    await r.revokeSession('ses_admrot', ['db'], 'test');

    // Nothing newer in the provider: the refusal stands, without the password in it.
    provider = 'adm-wrong-pw';
    password.update(provider);
    const err = await r.ensure({ id: 'ses_admrot2', expiresAt: Date.now() + 60_000 }, 'db').catch((e) => e);
    expect(String(err.message)).toContain('cannot connect as the dynamic-credentials admin');
    expect(String(err.message)).not.toContain('adm-wrong-pw');
    expect(reads).toBe(2);
  });
});
