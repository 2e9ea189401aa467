// Per-session MySQL users end to end (issue 13), through the gateway's exit and through an
// agent's, against the machine's MariaDB, made by a least-privilege admin (docs/mysql.md): each of
// several parallel jobs of one project logs in as its own user with the granted role active and
// cannot see the others' threads; the user is dropped when its job ends; revoking a session kills
// its statement in progress and drops its user. The world is the exit contract suite's.
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mysqlUserName } from '../../src/credentials/account-names.js';
import type { Held, JobPort } from '../contract/driver.js';
import { holdStatement } from '../contract/driver.js';
import { mysqlUsersFixture } from '../contract/mysql-users.js';
import { startUpstreams, type Upstreams } from '../contract/upstreams.js';
import { AGENT, startWorld, targetName, type World } from '../contract/world.js';
import { waitFor } from '../fixtures/wait-for.js';

// The admin docs/mysql.md recommends: CREATE USER, CONNECTION ADMIN, the names in mysql.user,
// the role WITH ADMIN OPTION; never root.
const fixture = mysqlUsersFixture('mysqlu', 'CREATE USER, CONNECTION ADMIN');
const ROLE = fixture.role;
const ADMIN_PW = fixture.adminPassword;
const TABLE = fixture.table;

let up: Upstreams;
let world: World;
const holding = new Set<Held>();

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-mysql-users-'));
  up = await startUpstreams(dir);
  await fixture.setUp(up);
  world = await startWorld(dir, [fixture.driver], up);
}, 120_000);

afterEach(async () => {
  for (const h of holding) h.release();
  holding.clear();
  await world?.endJobs();
});

afterAll(async () => {
  await world?.stop();
  if (up) await fixture.tearDown(up);
  await up?.stop();
});

const cli = (job: JobPort, sql: string) =>
  job.run(['mariadb', '-u', job.env.MYSQL_USER ?? '', '-N', '-B', '-e', sql]);
const userExists = async (user: string) =>
  (await up.mysqlAdmin(`SELECT COUNT(*) FROM mysql.user WHERE User = '${user}'`)).trim() === '1';
/** The session's part of its user name (the last 12 characters; the deployment does not change it). */
const sessionPart = (id: string, target: string) => mysqlUserName(id, 'aaaaaaaaaa', target).slice(-12);

describe.each([
  { name: 'the gateway', host: 'gateway' },
  { name: 'an agent', host: 'agent' },
] as const)('per-session MySQL users through $name', ({ host }) => {
  const target = targetName('mysqlu', host);

  it('parallel jobs each log in as their own user with the role, blind to each other; dropped at job end', async () => {
    const jobs = await Promise.all([world.open(target), world.open(target), world.open(target)]);
    const users = jobs.map((j) => j.env.MYSQL_USER as string);
    for (const [i, job] of jobs.entries()) {
      expect(users[i]).toMatch(/^ciport_[0-9a-z]{6}_[0-9a-z]{5}_[0-9a-z]{12}$/);
      expect(users[i]?.endsWith(sessionPart(job.session, target))).toBe(true);
      const r = await cli(job, `SELECT CURRENT_USER(), CURRENT_ROLE(); INSERT INTO ${TABLE} VALUES (${i})`);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${users[i]}@%\t${ROLE}\n`);
      // The role grants SELECT and INSERT on the database; nothing else.
      const denied = await cli(job, `DELETE FROM ${TABLE}`);
      expect(denied.stderr).toMatch(/DELETE command denied/);
    }
    expect(new Set(users).size).toBe(3);

    // Job 0 runs a statement; job 1 cannot see it, let alone kill it.
    const [a, b] = jobs as [JobPort, JobPort, JobPort];
    const marker = `mu_hold_${randomBytes(3).toString('hex')}`;
    const held = await holdStatement(
      ['mariadb', '-u', users[0] as string, '-N', '-B', '-e', `SELECT SLEEP(60) AS ${marker}`],
      a.env,
      async () =>
        (
          await up.mysqlAdmin(
            `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%${marker}%' AND INFO NOT LIKE '%PROCESSLIST%'`,
          )
        ).trim() === '1',
      'the held statement',
    );
    holding.add(held);
    const seen = await cli(
      b,
      `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '${users[0]}'`,
    );
    expect(seen.stdout.trim()).toBe('0');
    const id = (
      await up.mysqlAdmin(
        `SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE '%${marker}%' AND INFO NOT LIKE '%PROCESSLIST%'`,
      )
    ).trim();
    const kill = await cli(b, `KILL QUERY ${id}`);
    expect(kill.stderr).toMatch(/not owner of thread|Unknown thread/);
    expect(held.closed()).toBe(false);

    // Job 0 ends: its statement is killed and its user dropped; the others' users stay.
    await a.end();
    await waitFor(async () => !(await userExists(users[0] as string)), 15_000, "job 0's user dropped");
    await waitFor(() => held.closed(), 15_000, "job 0's statement ended");
    expect(await userExists(users[1] as string)).toBe(true);
    const events = await world.eventsOf(a.session);
    const created = events.filter((e) => e.type === 'credential.created');
    const revoked = events.filter((e) => e.type === 'credential.revoked');
    expect(created.map((e) => e.data)).toEqual([
      expect.objectContaining({ target, role: users[0], granted: [ROLE] }),
    ]);
    expect(revoked.map((e) => e.data)).toEqual([
      expect.objectContaining({ target, role: users[0], reason: expect.stringMatching(/^session_ended:/) }),
    ]);
    if (host === 'agent') expect(created[0]?.data).toMatchObject({ agent: AGENT });
    // The user's password was never anywhere the job, the audit or the agent's log could see.
    const audit = JSON.stringify(events);
    expect(audit).not.toContain(ADMIN_PW);
    expect(world.agentStderr()).not.toContain(ADMIN_PW);
    for (const job of jobs) expect(Object.values(job.env).join('\n')).not.toContain(ADMIN_PW);

    await Promise.all(jobs.slice(1).map((j) => j.end()));
    for (const user of users.slice(1))
      await waitFor(async () => !(await userExists(user)), 15_000, `${user} dropped`);
  }, 90_000);

  it('revoking the session kills its statement in progress and drops its user', async () => {
    const job = await world.open(target);
    const user = job.env.MYSQL_USER as string;
    const marker = `mu_rev_${randomBytes(3).toString('hex')}`;
    const running = async () =>
      (
        await up.mysqlAdmin(
          `SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%${marker}%' AND INFO NOT LIKE '%PROCESSLIST%'`,
        )
      ).trim();
    const held = await holdStatement(
      ['mariadb', '-u', user, '-N', '-B', '-e', `SELECT SLEEP(60) AS ${marker}`],
      job.env,
      async () => (await running()) === '1',
      'the held statement',
    );
    holding.add(held);
    const revoked = await world.revoke(job.session);
    expect(revoked.code).toBe(0);
    await waitFor(async () => (await running()) === '0', 15_000, 'the statement killed');
    await waitFor(async () => !(await userExists(user)), 15_000, 'the user dropped');
    await waitFor(() => held.closed(), 15_000, 'the client disconnected');
  }, 60_000);
});
