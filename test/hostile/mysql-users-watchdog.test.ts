// A hostile job through the real port (`ciport open`, the gateway's exit and an agent's) with a
// per-session MySQL user, against the machine's MariaDB: before its session ends it leaves a
// "watchdog" running — a compound statement (no privilege needed) that loops with a CONTINUE
// HANDLER (so KILL QUERY does not end it, and its closed socket goes unnoticed), re-passwords its
// user (so nobody else can log in as it) and kills every other thread of its user (the drop's
// own connection among them). When the job ends, the watchdog must be ended and the user dropped:
// with the admin docs/mysql.md recommends (CONNECTION ADMIN), the drop needs neither the user's
// password nor a connection as the user. The engine-level cases (the least-privilege fallback
// failing loudly instead of auditing a revocation) are in mysql-session-users.test.ts.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Held } from '../contract/driver.js';
import { holdStatement } from '../contract/driver.js';
import { mysqlUsersFixture } from '../contract/mysql-users.js';
import { startUpstreams, type Upstreams } from '../contract/upstreams.js';
import { startWorld, targetName, type World } from '../contract/world.js';
import { waitFor } from '../fixtures/wait-for.js';
import { watchdogSql } from './mysql-raw-exit.js';

const fixture = mysqlUsersFixture('mysqlw', 'CREATE USER, CONNECTION ADMIN');

let up: Upstreams;
let world: World;
const holding = new Set<Held>();
/** Users whose threads a failing case may leave running (the watchdog outlives its user). */
const planted = new Set<string>();

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-hostile-mysql-watchdog-'));
  up = await startUpstreams(dir);
  await fixture.setUp(up);
  world = await startWorld(dir, [fixture.driver], up);
}, 120_000);

afterEach(async () => {
  for (const h of holding) h.release();
  holding.clear();
  await world?.endJobs();
  for (const user of planted) {
    const ids = await up.mysqlAdmin(`SELECT ID FROM information_schema.PROCESSLIST WHERE USER = '${user}'`);
    for (const id of ids.split('\n').filter(Boolean))
      await up.mysqlAdmin(`KILL ${Number(id)}`).catch(() => '');
    await up.mysqlAdmin(`DROP USER IF EXISTS '${user}'@'%'`).catch(() => '');
  }
  planted.clear();
});

afterAll(async () => {
  await world?.stop();
  if (up) await fixture.tearDown(up);
  await up?.stop();
});

const count = async (sql: string) => Number((await up.mysqlAdmin(sql)).trim());
const beats = () => count(`SELECT COUNT(*) FROM ${up.mysqlDb}.${fixture.table}`);
const threadsOf = (user: string) =>
  count(`SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '${user}'`);
const userExists = async (user: string) =>
  (await count(`SELECT COUNT(*) FROM mysql.user WHERE User = '${user}'`)) === 1;

const watchdog = () => `DELIMITER //\n${watchdogSql(`${up.mysqlDb}.${fixture.table}`)}//`;

describe.each([
  { name: 'the gateway', host: 'gateway' },
  { name: 'an agent', host: 'agent' },
] as const)('a watchdog left by a job through $name', ({ host }) => {
  const target = targetName('mysqlw', host);

  it('is ended with the session, and the user dropped', async () => {
    const job = await world.open(target);
    const user = job.env.MYSQL_USER as string;
    planted.add(user);
    const start = await beats();
    const held = await holdStatement(
      ['mariadb', '-u', user, '-N', '-B', '-e', watchdog()],
      job.env,
      async () => (await beats()) > start + 5,
      'the watchdog writing',
    );
    holding.add(held);
    await job.end();
    await waitFor(async () => (await threadsOf(user)) === 0, 15_000, "the job's threads ended");
    const before = await beats();
    await sleep(500);
    expect(await beats()).toBe(before);
    await waitFor(async () => !(await userExists(user)), 15_000, 'the user dropped');
    const events = await waitFor(
      async () => {
        const all = await world.eventsOf(job.session);
        return all.some((e) => e.type === 'credential.revoked') ? all : undefined;
      },
      15_000,
      'credential.revoked',
    );
    expect(events.filter((e) => e.type === 'credential.revoke_failed')).toEqual([]);
    expect(events.find((e) => e.type === 'credential.revoked')?.data).toMatchObject({
      role: user,
      terminated: expect.any(Number),
    });
  }, 90_000);
});
