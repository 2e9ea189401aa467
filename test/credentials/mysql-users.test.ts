// Per-session MySQL users against the MariaDB on this machine (127.0.0.1:3306), made by
// least-privilege admins (CREATE USER, CONNECTION ADMIN, SELECT (User, Host) ON mysql.user, the
// roles WITH ADMIN OPTION — what docs/mysql.md recommends, never root): the user logs in with the granted role
// active, its threads are killed and it is dropped when the session ends, two deployments on one
// server never touch each other's users, a restarted exit adopts a live session's user, and a
// drop the admin may not do is an error, an audit event and a metric, retried with backoff.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../src/agent/agent.js';
import { parseAgentConfig } from '../../src/agent/config.js';
import { mysqlUserName, mysqlUserPrefix } from '../../src/credentials/account-names.js';
import { DynamicCredentials, type DynamicSpec, type RoleEvent } from '../../src/credentials/dynamic.js';
import { nativePasswordHash } from '../../src/credentials/mysql-users.js';
import type { Logger } from '../../src/log/logger.js';
import { MARIADB_HOST, MARIADB_PORT, mariadbUsersSpec } from '../fixtures/mysql-dynamic.js';
import { waitFor } from '../fixtures/wait-for.js';

const HOST = MARIADB_HOST;
const PORT = MARIADB_PORT;
const tag = randomBytes(3).toString('hex');
const DB = `mu_${tag}`;
const ROLE_RO = `mu_ro_${tag}`;
const ROLE_RW = `mu_rw_${tag}`;
const ADMIN = `mu_adm_${tag}`;
const ADMIN_WEAK = `mu_weak_${tag}`;
const ADMIN_PW = 'adm-pw-1';

let root: mysql.Connection;

/**
 * The least-privilege admin exactly as docs/mysql.md ("Per-session users") tells an operator to
 * make it, for ADMIN and both roles: so the tests below check the documented grants.
 */
function adminSqlFromDocs(): string {
  const doc = readFileSync(join(import.meta.dirname, '../../docs/mysql.md'), 'utf8');
  const block = /\*\*The admin, least privilege\*\*[^`]*```sql\n([\s\S]*?)```/.exec(doc)?.[1];
  if (!block) throw new Error('docs/mysql.md has no admin SQL block');
  const sql = block
    .split('\n')
    .map((line) => line.replace(/\s*--.*$/, ''))
    .flatMap((line) =>
      line.includes('app_rw') ? [ROLE_RO, ROLE_RW].map((role) => line.replaceAll('app_rw', role)) : [line],
    )
    .join('\n')
    .replaceAll('ciport_admin', ADMIN)
    .replaceAll("'…'", `'${ADMIN_PW}'`);
  expect(sql).not.toMatch(/…|app_rw|ciport_admin/);
  return sql;
}

beforeAll(async () => {
  root = await mysql.createConnection({ host: HOST, port: PORT, user: 'root', multipleStatements: true });
  await root.query(
    `CREATE DATABASE ${DB}; CREATE TABLE ${DB}.t (id int);
     CREATE ROLE ${ROLE_RO}; GRANT SELECT ON ${DB}.* TO ${ROLE_RO};
     CREATE ROLE ${ROLE_RW}; GRANT SELECT, INSERT ON ${DB}.* TO ${ROLE_RW};
     ${adminSqlFromDocs()}
     CREATE USER ${ADMIN_WEAK}@'%' IDENTIFIED BY '${ADMIN_PW}';
     GRANT CREATE USER ON *.* TO ${ADMIN_WEAK}@'%';
     GRANT ${ROLE_RO} TO ${ADMIN_WEAK}@'%' WITH ADMIN OPTION;`,
  );
}, 60_000);

afterAll(async () => {
  if (!root) return;
  const [users] = await root.query(`SELECT User AS u FROM mysql.user WHERE User LIKE 'ciport\\_%'`);
  for (const { u } of users as { u: string }[]) {
    // Only what this file made: prefixes of the deployments below.
    if (DEPLOYMENTS.some((d) => ['mdb', 'mdb-ro'].some((t) => u.startsWith(mysqlUserPrefix(d, t)))))
      await root.query(`DROP USER '${u}'@'%'`);
  }
  await root.query(
    `DROP DATABASE IF EXISTS ${DB}; DROP ROLE IF EXISTS ${ROLE_RO}; DROP ROLE IF EXISTS ${ROLE_RW};
     DROP USER IF EXISTS ${ADMIN}@'%'; DROP USER IF EXISTS ${ADMIN_WEAK}@'%';`,
  );
  await root.end();
});

const DEPLOYMENTS = ['a1a1a1a1a1', 'b2b2b2b2b2', 'c3c3c3c3c3', 'd4d4d4d4d4', 'e5e5e5e5e5'];

function spec(admin: string, grant: string[]): DynamicSpec {
  return mariadbUsersSpec(admin, ADMIN_PW, grant);
}

function users(admin: string, deploymentId: string, grant: string[] = [ROLE_RW], retryBaseMs?: number) {
  const events: RoleEvent[] = [];
  const errors: Record<string, unknown>[] = [];
  const warnings: object[] = [];
  let failures = 0;
  const r = new DynamicCredentials([spec(admin, grant)], {
    log: { info: () => {}, warn: (o) => warnings.push(o), error: (o) => errors.push(o as never) },
    audit: async (e) => {
      events.push(e);
    },
    deploymentId,
    onRevokeFailed: () => {
      failures++;
    },
    ...(retryBaseMs ? { retryBaseMs } : {}),
  });
  return { r, events, errors, warnings, failures: () => failures };
}

const session = (name: string) => ({
  id: `ses_${name}_${randomBytes(4).toString('hex')}`,
  expiresAt: Date.now() + 600_000,
});

async function login(user: string, password: string) {
  const c = await mysql.createConnection({ host: HOST, port: PORT, user, password, database: DB });
  c.on('error', () => {});
  return c;
}

async function exists(user: string): Promise<boolean> {
  const [rows] = await root.query('SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?', [user, '%']);
  return (rows as unknown[]).length > 0;
}

describe('names and hashes', () => {
  it('is ciport_<deployment>_<target>_<session> in base 36, 32 characters, one per (session, target)', () => {
    const name = mysqlUserName('ses_x', 'a1a1a1a1a1', 'mdb');
    expect(name).toMatch(/^ciport_[0-9a-z]{6}_[0-9a-z]{5}_[0-9a-z]{12}$/);
    expect(name).toHaveLength(32);
    expect(name.startsWith(mysqlUserPrefix('a1a1a1a1a1', 'mdb'))).toBe(true);
    expect(mysqlUserName('ses_x', 'b2b2b2b2b2', 'mdb')).not.toBe(name);
    expect(mysqlUserName('ses_y', 'a1a1a1a1a1', 'mdb')).not.toBe(name);
    expect(mysqlUserName('ses_x', 'a1a1a1a1a1', 'mdb-ro')).not.toBe(name);
    // Many sessions: no two names alike.
    const many = new Set(
      Array.from({ length: 5000 }, (_, i) => mysqlUserName(`ses_${i}`, 'a1a1a1a1a1', 'mdb')),
    );
    expect(many.size).toBe(5000);
  });

  it("hashes like the server's PASSWORD() (mysql_native_password)", async () => {
    const [rows] = await root.query(`SELECT PASSWORD('p@ss''w"ord') AS h`);
    expect(nativePasswordHash(`p@ss'w"ord`)).toBe((rows as { h: string }[])[0]?.h);
  });
});

describe('least-privilege admin', () => {
  it('checks clean, creates a user with the role active, kills its threads and drops it', async () => {
    const { r, events, errors } = users(ADMIN, DEPLOYMENTS[0] as string);
    expect(await r.checkAdmin('mdb')).toEqual([]);
    const s = session('lp');
    const cred = await r.ensure(s, 'mdb');
    expect(cred.user).toBe(mysqlUserName(s.id, DEPLOYMENTS[0] as string, 'mdb'));
    const c = await login(cred.user, cred.password);
    const [[who]] = (await c.query('SELECT CURRENT_USER() AS u, CURRENT_ROLE() AS r')) as unknown as [
      { u: string; r: string }[],
    ];
    expect(who).toEqual({ u: `${cred.user}@%`, r: ROLE_RW });
    await c.query('INSERT INTO t VALUES (1)');
    // What the role does not grant, the user cannot do.
    await expect(c.query('DELETE FROM t')).rejects.toThrow(/DELETE command denied/);
    // A statement in progress when the session ends: the drop kills its connection.
    const running = c.query('SELECT SLEEP(30)').then(
      () => 'finished',
      (err: Error) => err.message,
    );
    await sleep(300);
    await r.revokeSession(s.id, ['mdb'], 'session_ended:client_end');
    expect(await running).not.toBe('finished');
    expect(errors).toEqual([]);
    expect(events.map((e) => e.type)).toEqual(['credential.created', 'credential.revoked']);
    expect(events[1]).toMatchObject({ session: s.id, role: cred.user, terminated: 1 });
    expect(await exists(cred.user)).toBe(false);
    await expect(login(cred.user, cred.password)).rejects.toThrow(/Access denied/);
    for (const e of events) expect(JSON.stringify(e)).not.toContain(cred.password);
  });

  it('a restarted exit adopts the live session: a new password, the old one refused', async () => {
    const first = users(ADMIN, DEPLOYMENTS[0] as string);
    const s = session('adopt');
    const old = await first.r.ensure(s, 'mdb');
    const restarted = users(ADMIN, DEPLOYMENTS[0] as string);
    const cred = await restarted.r.ensure(s, 'mdb');
    expect(cred.user).toBe(old.user);
    expect(cred.password).not.toBe(old.password);
    await expect(login(old.user, old.password)).rejects.toThrow(/Access denied/);
    const c = await login(cred.user, cred.password);
    await c.query('SELECT * FROM t');
    await c.end();
    await restarted.r.revokeSession(s.id, ['mdb'], 'test');
    expect(await exists(cred.user)).toBe(false);
  });

  it('twenty parallel sessions of one project get twenty users, all dropped', async () => {
    const { r, events } = users(ADMIN, DEPLOYMENTS[4] as string, [ROLE_RO]);
    const sessions = Array.from({ length: 20 }, (_, i) => session(`par${i}`));
    const creds = await Promise.all(sessions.map((s) => r.ensure(s, 'mdb')));
    expect(new Set(creds.map((c) => c.user)).size).toBe(20);
    await Promise.all(
      creds.map(async (cred) => {
        const c = await login(cred.user, cred.password);
        await c.query('SELECT count(*) FROM t');
        await c.end();
      }),
    );
    await Promise.all(sessions.map((s) => r.revokeSession(s.id, ['mdb'], 'session_ended:client_end')));
    for (const cred of creds) expect(await exists(cred.user)).toBe(false);
    expect(events.filter((e) => e.type === 'credential.revoked')).toHaveLength(20);
  });

  it('refuses two roles on MariaDB (one role per connection) and leaves no user behind', async () => {
    const { r } = users(ADMIN, DEPLOYMENTS[0] as string, [ROLE_RO, ROLE_RW]);
    expect(await r.checkAdmin('mdb')).toEqual([
      expect.stringMatching(/MariaDB activates one role per connection/),
    ]);
    const s = session('two');
    await expect(r.ensure(s, 'mdb')).rejects.toThrow(/grant one role that holds the others/);
    expect(await exists(mysqlUserName(s.id, DEPLOYMENTS[0] as string, 'mdb'))).toBe(false);
  });

  it('a role name is an identifier, never SQL: a hostile grant fails and leaves no user', async () => {
    const hostile = `${ROLE_RO}\`; DROP DATABASE ${DB}; -- '"`;
    const { r } = users(ADMIN, DEPLOYMENTS[0] as string, [hostile]);
    const s = session('inject');
    await expect(r.ensure(s, 'mdb')).rejects.toThrow();
    expect(await exists(mysqlUserName(s.id, DEPLOYMENTS[0] as string, 'mdb'))).toBe(false);
    const [dbs] = await root.query('SHOW DATABASES LIKE ?', [DB]);
    expect(dbs as unknown[]).toHaveLength(1);
  });
});

describe('two deployments on one server', () => {
  it("neither reaps nor revokes the other's live user", async () => {
    const a = users(ADMIN, DEPLOYMENTS[1] as string);
    const b = users(ADMIN, DEPLOYMENTS[2] as string);
    const s = session('two-dep');
    const cred = await a.r.ensure(s, 'mdb');
    expect(await b.r.reap(new Set())).toBe(0);
    // The same session id through B (cannot happen with random ids) names another user.
    await b.r.revokeSession(s.id, ['mdb'], 'test');
    expect(b.events).toEqual([]);
    expect(await exists(cred.user)).toBe(true);
    // A keeps its live session's user and reaps it once the session is gone.
    expect(await a.r.reap(new Set([s.id]))).toBe(0);
    expect(await exists(cred.user)).toBe(true);
    expect(await a.r.reap(new Set())).toBe(1);
    expect(await exists(cred.user)).toBe(false);
    // Made in this process: the event names its session.
    expect(a.events.at(-1)).toMatchObject({
      type: 'credential.revoked',
      session: s.id,
      role: cred.user,
      reason: 'reaper',
    });
  });

  it('a restarted exit reaps what its previous process left (the event cannot name the session)', async () => {
    const before = users(ADMIN, DEPLOYMENTS[1] as string);
    const s = session('crash');
    const cred = await before.r.ensure(s, 'mdb');
    const after = users(ADMIN, DEPLOYMENTS[1] as string);
    expect(await after.r.reap(new Set())).toBe(1);
    expect(await exists(cred.user)).toBe(false);
    expect(after.events).toEqual([
      { type: 'credential.revoked', target: 'mdb', role: cred.user, reason: 'reaper', terminated: 0 },
    ]);
  });
});

describe('one session, two dynamic targets on one server', () => {
  // Found by the new-user review: names were made of the deployment and the session only, so
  // the second target took the first's account over and the first's logins failed. Each target
  // names its own account now, and each target's reaper lists only its own.
  it("each target's credential works, with its own grant", async () => {
    const deployment = DEPLOYMENTS[4] as string;
    const r = new DynamicCredentials(
      [
        { ...spec(ADMIN, [ROLE_RW]), target: 'mdb' },
        { ...spec(ADMIN, [ROLE_RO]), target: 'mdb-ro' },
      ],
      { log: { info() {}, warn() {}, error() {} }, audit: async () => {}, deploymentId: deployment },
    );
    const s = session('two-targets');
    try {
      const rw = await r.ensure(s, 'mdb');
      const ro = await r.ensure(s, 'mdb-ro').catch(() => undefined);
      for (const [cred, role] of [
        [rw, ROLE_RW],
        [ro, ROLE_RO],
      ] as const) {
        expect(cred).toBeDefined();
        const c = await login(cred?.user ?? '', cred?.password ?? '');
        const [[who]] = (await c.query('SELECT CURRENT_ROLE() AS r')) as unknown as [{ r: string }[]];
        await c.end();
        expect(who?.r).toBe(role);
      }
    } finally {
      await r.revokeSession(s.id, ['mdb', 'mdb-ro'], 'test');
    }
  });
});

describe('an admin without the documented grants', () => {
  it('is named at the check; its failed drop is an error, an audit event and a metric, retried', async () => {
    const weak = users(ADMIN_WEAK, DEPLOYMENTS[3] as string, [ROLE_RO], 1_500);
    const problems = await weak.r.checkAdmin('mdb', [ROLE_RW]);
    expect(problems).toEqual([
      expect.stringContaining(`GRANT SELECT (User, Host) ON mysql.user TO '${ADMIN_WEAK}'@'%'`),
      expect.stringMatching(new RegExp(`cannot grant role \`${ROLE_RW}\`.*WITH ADMIN OPTION`)),
      expect.stringContaining(`GRANT CONNECTION ADMIN ON *.* TO '${ADMIN_WEAK}'@'%'`),
    ]);
    const s = session('weak');
    const cred = await weak.r.ensure(s, 'mdb');
    await weak.r.revokeSession(s.id, ['mdb'], 'session_ended:revoked');
    const failed = weak.events.filter((e) => e.type === 'credential.revoke_failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({
      session: s.id,
      role: cred.user,
      code: 'CIPORT_E_MYSQL_USER_REVOKE_FAILED',
      attempt: 1,
    });
    expect(failed[0]?.error).toMatch(/^1142 \(42000\): SELECT command denied/);
    expect(weak.errors[0]).toMatchObject({
      code: 'CIPORT_E_MYSQL_USER_REVOKE_FAILED',
      hint: expect.stringContaining('docs/mysql.md'),
    });
    expect(weak.failures()).toBe(1);
    expect(await exists(cred.user)).toBe(true);
    // Fixed by the operator; after the backoff the reaper (now able to list) drops it.
    await root.query(`GRANT SELECT (User, Host) ON mysql.user TO ${ADMIN_WEAK}@'%'`);
    expect(await weak.r.reap(new Set())).toBe(0); // within the backoff
    await sleep(1_600);
    expect(await weak.r.reap(new Set())).toBe(1);
    expect(await exists(cred.user)).toBe(false);
    expect(weak.r.failing).toBe(0);
    await root.query(`REVOKE SELECT (User, Host) ON mysql.user FROM ${ADMIN_WEAK}@'%'`);
  });

  it('a refused creation tells the job and the log which grant the admin lacks, and leaves no user', async () => {
    // The weak admin may grant ROLE_RO only; a rule grants ROLE_RW.
    const weak = users(ADMIN_WEAK, DEPLOYMENTS[3] as string, [ROLE_RW]);
    const s = session('weak-create');
    const refused = await weak.r.ensure(s, 'mdb').then(
      () => undefined,
      (err: unknown) => err as { code?: string; message?: string },
    );
    const fix = `GRANT \`${ROLE_RW}\` TO '${ADMIN_WEAK}'@'%' WITH ADMIN OPTION`;
    expect(refused?.code).toBe('CIPORT_E_MYSQL_UPSTREAM_REFUSED');
    expect(refused?.message).toContain(fix);
    expect(refused?.message).not.toContain('unexpected error');
    expect(weak.warnings).toContainEqual(
      expect.objectContaining({
        target: 'mdb',
        problems: expect.arrayContaining([expect.stringContaining(fix)]),
        hint: expect.stringContaining('docs/mysql.md'),
      }),
    );
    expect(await exists(mysqlUserName(s.id, DEPLOYMENTS[3] as string, 'mdb'))).toBe(false);
  });

  it('an agent logs what its admin lacks when it starts, as the gateway does (docs/mysql.md)', async () => {
    const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
    const log = {
      info() {},
      debug() {},
      error() {},
      warn: (obj: Record<string, unknown>, msg: string) => warnings.push({ obj, msg }),
    } as unknown as Logger;
    const dir = mkdtempSync(join(tmpdir(), 'ciport-mu-agent-'));
    const yaml = [
      'gateway: https://127.0.0.1:1', // nobody: the agent keeps retrying its registration
      'name: weak',
      `data_dir: ${dir}`,
      'enrollment_token: {env: ENROLL}',
      'targets:',
      '  - name: mdb',
      '    protocol: mysql',
      `    address: ${HOST}:${PORT}`,
      '    credentials:',
      `      dynamic: {admin: {user: ${ADMIN_WEAK}, password: {env: ADMIN_PW}}, grant: [${ROLE_RW}]}`,
    ].join('\n');
    const env = { ENROLL: 'cpe_x', ADMIN_PW };
    const config = parseAgentConfig(yaml, 'agent.yaml', { env });
    const agent = new Agent(config, { log, env, ca: 'unused' });
    const started = agent.start().catch(() => {});
    try {
      await waitFor(
        () => warnings.some((w) => w.msg === 'dynamic-credentials admin: missing privilege'),
        10_000,
      );
    } finally {
      await agent.close();
      await started;
      rmSync(dir, { recursive: true, force: true });
    }
    const problems = warnings.filter((w) => w.msg === 'dynamic-credentials admin: missing privilege');
    expect(problems.map((w) => w.obj.problem)).toEqual(
      expect.arrayContaining([
        expect.stringContaining(`GRANT \`${ROLE_RW}\` TO '${ADMIN_WEAK}'@'%' WITH ADMIN OPTION`),
      ]),
    );
    expect(problems[0]?.obj).toMatchObject({ target: 'mdb', hint: expect.stringContaining('docs/mysql.md') });
  });
});
