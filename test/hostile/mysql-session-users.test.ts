// A hostile job against its own per-session MySQL user (credentials.dynamic, src/credentials/
// mysql-users.ts), on the MariaDB of this machine, with admins as docs/mysql.md tells operators to
// make them. The job holds the user's SQL for the length of its session (the port relays its
// statements as they are); what it may try:
//   - escalate beyond its role (other roles, grants, accounts, the mysql schema);
//   - outlive the session: a compound statement (`BEGIN NOT ATOMIC`, no privilege needed) that
//     loops with a CONTINUE HANDLER, so KILL QUERY does not stop it and a closed socket goes
//     unnoticed, and fights the drop: it re-passwords the user (SET PASSWORD needs no privilege
//     on one's own account) so that the drop cannot log in as the user to end its threads, and
//     kills every other thread of the user (one's own threads may always be killed);
//   - leave objects behind that run with its role's privileges after the user is gone.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mysqlUserPrefix } from '../../src/credentials/account-names.js';
import { DynamicCredentials, type RoleEvent } from '../../src/credentials/dynamic.js';
import { MARIADB_HOST, MARIADB_PORT, mariadbUsersSpec } from '../fixtures/mysql-dynamic.js';
import { waitFor } from '../fixtures/wait-for.js';
import { watchdogSql } from './mysql-raw-exit.js';

const HOST = MARIADB_HOST;
const PORT = MARIADB_PORT;
const tag = randomBytes(3).toString('hex');
const DB = `hsu_${tag}`;
const ROLE = `hsu_rw_${tag}`;
const OTHER_ROLE = `hsu_other_${tag}`;
const LP_ADMIN = `hsu_lp_${tag}`;
const KILL_ADMIN = `hsu_ka_${tag}`;
const READER = `hsu_rd_${tag}`;
const PW = 'hsu-admin-pw';
const DEPLOYMENT = randomBytes(5).toString('hex');

let root: mysql.Connection;

beforeAll(async () => {
  root = await mysql.createConnection({ host: HOST, port: PORT, user: 'root', multipleStatements: true });
  await root.query(
    `CREATE DATABASE ${DB}; CREATE TABLE ${DB}.beat (id INT);
     CREATE ROLE ${ROLE};
     GRANT SELECT, INSERT, CREATE ROUTINE, EXECUTE, CREATE VIEW ON ${DB}.* TO ${ROLE};
     CREATE ROLE ${OTHER_ROLE}; GRANT ALL ON ${DB}.* TO ${OTHER_ROLE};
     CREATE USER ${LP_ADMIN}@'%' IDENTIFIED BY '${PW}';
     GRANT CREATE USER ON *.* TO ${LP_ADMIN}@'%';
     GRANT SELECT (User, Host) ON mysql.user TO ${LP_ADMIN}@'%';
     GRANT ${ROLE} TO ${LP_ADMIN}@'%' WITH ADMIN OPTION;
     CREATE USER ${KILL_ADMIN}@'%' IDENTIFIED BY '${PW}';
     GRANT CREATE USER, CONNECTION ADMIN ON *.* TO ${KILL_ADMIN}@'%';
     GRANT SELECT (User, Host) ON mysql.user TO ${KILL_ADMIN}@'%';
     GRANT ${ROLE} TO ${KILL_ADMIN}@'%' WITH ADMIN OPTION;
     CREATE USER ${READER}@'%' IDENTIFIED BY '${PW}';
     GRANT EXECUTE, SELECT ON ${DB}.* TO ${READER}@'%';`,
  );
}, 60_000);

afterEach(async () => {
  // Whatever a case left running or standing (a watchdog the drop could not end, a locked user).
  const [rows] = await root.query('SELECT ID AS id, USER AS u FROM information_schema.PROCESSLIST');
  for (const r of rows as { id: number; u: string }[])
    if (r.u.startsWith(mysqlUserPrefix(DEPLOYMENT, 'mdb'))) await root.query(`KILL ${r.id}`).catch(() => {});
  const [users] = await root.query(`SELECT User AS u FROM mysql.user WHERE User LIKE 'ciport\\_%'`);
  for (const { u } of users as { u: string }[])
    if (u.startsWith(mysqlUserPrefix(DEPLOYMENT, 'mdb'))) await root.query(`DROP USER '${u}'@'%'`);
});

afterAll(async () => {
  if (!root) return;
  await root.query(
    `DROP DATABASE IF EXISTS ${DB}; DROP ROLE IF EXISTS ${ROLE}; DROP ROLE IF EXISTS ${OTHER_ROLE};
     DROP USER IF EXISTS ${LP_ADMIN}@'%'; DROP USER IF EXISTS ${KILL_ADMIN}@'%';
     DROP USER IF EXISTS ${READER}@'%';`,
  );
  await root.end();
});

function manager(admin: string) {
  const spec = mariadbUsersSpec(admin, PW, [ROLE]);
  const events: RoleEvent[] = [];
  const logs: object[] = [];
  const r = new DynamicCredentials([spec], {
    log: { info: () => {}, warn: (o) => logs.push(o), error: (o) => logs.push(o) },
    audit: async (e) => {
      events.push(e);
    },
    deploymentId: DEPLOYMENT,
  });
  return { r, events, logs };
}

const session = () => ({ id: `ses_h_${randomBytes(6).toString('hex')}`, expiresAt: Date.now() + 600_000 });

/** The job: logged in as its user, as the port's exit logs it in (the user's password injected). */
async function job(cred: { user: string; password: string }) {
  const c = await mysql.createConnection({ host: HOST, port: PORT, ...cred, database: DB });
  c.on('error', () => {});
  return c;
}

const threadsOf = async (user: string) => {
  const [rows] = await root.query('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ?', [
    user,
  ]);
  return (rows as { id: number }[]).length;
};
const userExists = async (user: string) => {
  const [rows] = await root.query('SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?', [user, '%']);
  return (rows as unknown[]).length > 0;
};
const beats = async () => {
  const [rows] = await root.query(`SELECT COUNT(*) AS n FROM ${DB}.beat`);
  return Number((rows as { n: number }[])[0]?.n);
};

/** Start the watchdog on a connection of the job, then go away (the session's tunnel is cut). */
async function plantWatchdog(cred: { user: string; password: string }) {
  const c = await job(cred);
  void c.query(watchdogSql(`${DB}.beat`)).catch(() => undefined);
  const before = await beats();
  await waitFor(async () => (await beats()) > before + 5, 5_000, 'the watchdog running');
  c.destroy();
}

describe('a per-session user cannot do more than its role', () => {
  it('no other role, no grant, no account, no mysql schema, no definer but itself or its role', async () => {
    const { r } = manager(KILL_ADMIN);
    const s = session();
    const cred = await r.ensure(s, 'mdb');
    const c = await job(cred);
    const [[who]] = (await c.query('SELECT CURRENT_ROLE() AS r')) as unknown as [{ r: string }[]];
    expect(who?.r).toBe(ROLE);
    const refused: Array<[string, RegExp]> = [
      [`SET ROLE ${OTHER_ROLE}`, /not granted|Access denied|Invalid role/i],
      [`SET DEFAULT ROLE ${OTHER_ROLE}`, /not granted|Access denied|Invalid role/i],
      [`SET DEFAULT ROLE NONE FOR ${READER}@'%'`, /Access denied|denied/i],
      [`GRANT ${ROLE} TO ${READER}@'%'`, /Access denied|denied/i],
      [`GRANT ${OTHER_ROLE} TO CURRENT_USER`, /Access denied|denied/i],
      [`GRANT INSERT ON ${DB}.* TO ${READER}@'%'`, /denied/i],
      [`CREATE USER hsu_evil_${tag}@'%'`, /denied/i],
      [`CREATE ROLE hsu_evil_${tag}`, /denied/i],
      [`ALTER USER CURRENT_USER() ACCOUNT UNLOCK`, /denied/i],
      [`ALTER USER ${READER}@'%' IDENTIFIED BY 'x'`, /denied/i],
      [`SET PASSWORD FOR ${READER}@'%' = PASSWORD('x')`, /denied/i],
      [`RENAME USER CURRENT_USER() TO hsu_evil_${tag}@'%'`, /denied/i],
      [`DROP USER ${READER}@'%'`, /denied/i],
      ['SELECT User FROM mysql.user', /denied/i],
      ['SELECT * FROM mysql.global_priv', /denied/i],
      [`CREATE DEFINER=${READER}@'%' PROCEDURE ${DB}.p_evil() SELECT 1`, /denied|SUPER|SET USER/i],
      [`CREATE DEFINER=${OTHER_ROLE} PROCEDURE ${DB}.p_evil() SELECT 1`, /denied|SUPER|SET USER/i],
      [`KILL CONNECTION USER '${READER}'`, /^$/], // answers OK, kills nothing (checked below)
    ];
    const reader = await mysql.createConnection({ host: HOST, port: PORT, user: READER, password: PW });
    for (const [sql, pattern] of refused) {
      const outcome = await c.query(sql).then(
        () => 'accepted',
        (err: Error) => err.message,
      );
      if (sql.startsWith('KILL')) expect(outcome, sql).toBe('accepted');
      else expect(outcome, sql).toMatch(pattern);
    }
    await expect(reader.query('SELECT 1')).resolves.toBeDefined();
    await reader.end();
    c.destroy();
    await r.revokeSession(s.id, ['mdb'], 'test');
  });
});

describe('a per-session user does not outlive its session', () => {
  it('a plain statement in progress is ended and the user dropped (least-privilege admin)', async () => {
    const { r, events } = manager(LP_ADMIN);
    const s = session();
    const cred = await r.ensure(s, 'mdb');
    const c = await job(cred);
    const sleeping = c.query('SELECT SLEEP(30)').then(
      () => 'finished',
      () => 'ended',
    );
    await waitFor(async () => (await threadsOf(cred.user)) === 1, 5_000, 'the statement running');
    await r.revokeSession(s.id, ['mdb'], 'session_ended:client_end');
    expect(await sleeping).toBe('ended');
    expect(await userExists(cred.user)).toBe(false);
    expect(events.at(-1)).toMatchObject({ type: 'credential.revoked', role: cred.user, terminated: 1 });
  });

  it('a least-privilege drop never reports a user revoked while a thread of it fights on', async () => {
    // The admin may only end the user's threads by logging in as the user. The watchdog
    // re-passwords the user and kills its other threads: the drop may lose that fight, but then
    // it must say so (credential.revoke_failed, the user kept locked for a retry), not audit
    // `credential.revoked` over a thread that goes on writing with the role's privileges.
    const { r, events } = manager(LP_ADMIN);
    const s = session();
    const cred = await r.ensure(s, 'mdb');
    await plantWatchdog(cred);
    await r.revokeSession(s.id, ['mdb'], 'session_ended:client_end');
    await sleep(300);
    const before = await beats();
    await sleep(300);
    const stillWriting = (await beats()) > before;
    const last = events.at(-1);
    if (stillWriting) {
      expect(last).toMatchObject({ type: 'credential.revoke_failed', role: cred.user });
      expect(last?.error).toMatch(/end its connections|connection/i);
      // Locked: no new login, with the password the job set or any other.
      expect(await userExists(cred.user)).toBe(true);
      await expect(
        mysql.createConnection({ host: HOST, port: PORT, user: cred.user, password: 'the-job-knows-this' }),
      ).rejects.toThrow(/locked|denied/i);
    } else {
      expect(last).toMatchObject({ type: 'credential.revoked', role: cred.user });
      expect(await threadsOf(cred.user)).toBe(0);
    }
  });

  it('an admin with CONNECTION ADMIN ends the watchdog and drops the user', async () => {
    const { r, events } = manager(KILL_ADMIN);
    expect(await r.checkAdmin('mdb')).toEqual([]);
    const s = session();
    const cred = await r.ensure(s, 'mdb');
    await plantWatchdog(cred);
    await r.revokeSession(s.id, ['mdb'], 'session_ended:client_end');
    await waitFor(async () => (await threadsOf(cred.user)) === 0, 5_000, "the job's threads ended");
    const before = await beats();
    await sleep(300);
    expect(await beats()).toBe(before);
    expect(await userExists(cred.user)).toBe(false);
    expect(events.at(-1)).toMatchObject({ type: 'credential.revoked', role: cred.user, terminated: 1 });
  });

  it('the least-privilege admin is told at the check that it cannot end connections itself', async () => {
    const { r } = manager(LP_ADMIN);
    expect(await r.checkAdmin('mdb')).toEqual([expect.stringMatching(/CONNECTION ADMIN/)]);
  });

  // KNOWN HOLE (not fixed): an XA transaction the job PREPAREs survives its connection being
  // killed and its user being dropped (MariaDB 10.5+ detaches prepared XA transactions instead of
  // rolling them back), holding its row locks, and any account — even one with SELECT only — may
  // list it (XA RECOVER) and commit it: writes made under the session's role land after the
  // session, committed by someone else. The server does not say whose a prepared XA transaction
  // is, so the drop cannot roll back only the session's; the exit would have to refuse XA
  // statements (SQL parsing in the relay, src/exits/mysql/observe*.ts) or track the session's
  // xids. This turns red once the drop (or the exit) leaves no prepared transaction behind.
  it.fails('a transaction the session prepared (XA) is not left for someone else to commit', async () => {
    const { r } = manager(KILL_ADMIN);
    const s = session();
    const cred = await r.ensure(s, 'mdb');
    const c = await job(cred);
    const xid = `hsu_xa_${randomBytes(3).toString('hex')}`;
    await c.query(`XA START '${xid}'`);
    await c.query(`INSERT INTO ${DB}.beat VALUES (4242)`);
    await c.query(`XA END '${xid}'`);
    await c.query(`XA PREPARE '${xid}'`);
    c.destroy();
    await r.revokeSession(s.id, ['mdb'], 'session_ended:revoked');
    expect(await userExists(cred.user)).toBe(false);
    const reader = await mysql.createConnection({ host: HOST, port: PORT, user: READER, password: PW });
    try {
      await expect(reader.query(`XA COMMIT '${xid}'`)).rejects.toThrow();
      const [rows] = await root.query(`SELECT COUNT(*) AS n FROM ${DB}.beat WHERE id = 4242`);
      expect(Number((rows as { n: number }[])[0]?.n)).toBe(0);
    } finally {
      await reader.end();
      await root.query(`XA ROLLBACK '${xid}'`).catch(() => undefined);
      await root.query(`DELETE FROM ${DB}.beat WHERE id = 4242`);
    }
  });

  // KNOWN HOLE (not fixed: MariaDB semantics, not ciport's code): MariaDB lets a user make its
  // *current role* the definer of what it creates (`DEFINER=CURRENT_ROLE`, no SUPER needed). Such
  // a SQL SECURITY DEFINER routine (or view, or event when the scheduler is on) does not dangle
  // when the user is dropped: it runs with the role's privileges for whoever may EXECUTE it — a
  // later session with a weaker role, a reporting account — long after the session ended. The
  // drop cannot tell these objects from the operator's (their definer is the role). Mitigation:
  // grant session roles no CREATE ROUTINE / CREATE VIEW / EVENT / TRIGGER unless they need them
  // (docs/mysql.md). This turns red if something starts removing or refusing them.
  it.fails('nothing the session created runs with its role after its user is dropped', async () => {
    const { r } = manager(KILL_ADMIN);
    const s = session();
    const cred = await r.ensure(s, 'mdb');
    const c = await job(cred);
    await c.query(
      `CREATE DEFINER=CURRENT_ROLE PROCEDURE ${DB}.p_left() SQL SECURITY DEFINER INSERT INTO ${DB}.beat VALUES (7)`,
    );
    c.destroy();
    await r.revokeSession(s.id, ['mdb'], 'session_ended:client_end');
    expect(await userExists(cred.user)).toBe(false);
    // Another account, with EXECUTE but no INSERT, writes through it.
    const reader = await mysql.createConnection({ host: HOST, port: PORT, user: READER, password: PW });
    try {
      await expect(reader.query(`INSERT INTO ${DB}.beat VALUES (8)`)).rejects.toThrow(/denied/);
      await expect(reader.query(`CALL ${DB}.p_left()`)).rejects.toThrow();
    } finally {
      await reader.end();
      await root.query(`DROP PROCEDURE IF EXISTS ${DB}.p_left`);
    }
  });
});
