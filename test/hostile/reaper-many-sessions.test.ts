// A hostile pipeline opens many sessions (each CI job may open 30 a minute, and keep them alive
// with heartbeats up to the rule's max_ttl): once more than the store's default page of sessions
// (1000) are active, the per-session account reaper — which drops every account whose session is
// not in its list of active sessions — must still see *every* active session. Otherwise it drops
// the accounts of the oldest live sessions (another team's migration, mid-flight) and, for MySQL,
// kills their connections. Against a real gateway (the exit of a mysql target with per-session
// users on the machine's MariaDB) whose store is filled with newer active sessions.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import type { ClientHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvent } from '../../src/audit/events.js';
import { mysqlUserName } from '../../src/credentials/account-names.js';
import { CiportError } from '../../src/errors/index.js';
import { encodeConnectFrame } from '../../src/exits/mysql/connect-wire.js';
import { LOCAL_CAPABILITIES } from '../../src/exits/mysql/frontend.js';
import { encodePacket, type Packet, PacketReader } from '../../src/exits/mysql/packets.js';
import { waitFor } from '../fixtures/wait-for.js';
import { api, type Harness, openSession, startHarness, tempDir, tunnel } from '../gateway/helpers.js';
import { watchdogSql } from './mysql-raw-exit.js';

const S = randomBytes(3).toString('hex');
const ROLE = `rms_rw_${S}`;
const ADMIN = `rms_adm_${S}`;
const DB = `rms_${S}`;
const PW = `rms-${randomBytes(12).toString('hex')}`;
let h: Harness;
let secrets: ReturnType<typeof tempDir>;
let root: mysql.Connection;

beforeAll(async () => {
  root = await mysql.createConnection({
    host: '127.0.0.1',
    port: 3306,
    user: 'root',
    multipleStatements: true,
  });
  await root.query(
    `CREATE DATABASE ${DB}; CREATE TABLE ${DB}.beat (id INT);
     CREATE ROLE ${ROLE}; GRANT SELECT, INSERT ON ${DB}.* TO ${ROLE};
     CREATE USER ${ADMIN}@'%' IDENTIFIED BY '${PW}';
     GRANT CREATE USER, CONNECTION ADMIN ON *.* TO ${ADMIN}@'%';
     GRANT SELECT (User, Host) ON mysql.user TO ${ADMIN}@'%';
     GRANT ${ROLE} TO ${ADMIN}@'%' WITH ADMIN OPTION;`,
  );
  secrets = tempDir('ciport-hostile-rms-');
  const pwFile = join(secrets.dir, 'pw');
  writeFileSync(pwFile, PW, { mode: 0o600 });
  h = await startHarness(
    {
      targets: [
        {
          name: 'mydyn',
          protocol: 'mysql',
          address: '127.0.0.1:3306',
          database: DB,
          credentials: { dynamic: { admin: { user: ADMIN, password: { file: pwFile } }, grant: [ROLE] } },
        },
      ],
      sessions: { lease_timeout: '3s' },
    },
    { roleReapIntervalMs: 200 },
  );
}, 60_000);

afterAll(async () => {
  await h?.stop();
  secrets?.cleanup();
  if (!root) return;
  const [users] = await root.query(`SELECT User AS u FROM mysql.user WHERE User LIKE 'ciport\\_%'`);
  const deployment = await h?.gateway.store.getMeta('deployment_id').catch(() => undefined);
  for (const { u } of users as { u: string }[])
    if (deployment && u.startsWith(mysqlUserName('x', deployment, 'mydyn').slice(0, 20)))
      await root.query(`DROP USER '${u}'@'%'`).catch(() => {});
  await root.query(
    `DROP DATABASE IF EXISTS ${DB}; DROP ROLE IF EXISTS ${ROLE}; DROP USER IF EXISTS ${ADMIN}@'%';`,
  );
  await root.end();
});

/** A job's connection through the gateway (the listener's connect request, then SQL). */
async function connectThrough(session: { id: string; secret: string }) {
  const c = await h.client();
  const stream: ClientHttp2Stream = await tunnel(c, session, 'mydyn');
  const reader = new PacketReader(stream, (why, d) => new CiportError('CIPORT_E_INTERNAL', `${why}: ${d}`));
  stream.write(
    encodeConnectFrame({
      kind: 'connect',
      user: 'app',
      collation: 45,
      capabilities: LOCAL_CAPABILITIES,
      maxPacketSize: 16 * 1024 * 1024,
      attributes: {},
    }),
  );
  const read = (): Promise<Packet> => reader.read(1 << 20, 10_000);
  return {
    read,
    query(sql: string): void {
      stream.write(encodePacket(Buffer.concat([Buffer.from([0x03]), Buffer.from(sql)]), 0));
    },
    async ping(): Promise<number> {
      stream.write(encodePacket(Buffer.from([0x0e]), 0)); // COM_PING
      return ((await read()).payload[0] as number) ?? -1;
    },
    close: () => stream.close(),
  };
}

const beats = async () => {
  const [rows] = await root.query(`SELECT COUNT(*) AS n FROM ${DB}.beat`);
  return Number((rows as { n: number }[])[0]?.n);
};
const threadsOf = async (user: string) => {
  const [rows] = await root.query('SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?', [user]);
  return (rows as unknown[]).length;
};

const userExists = async (user: string) => {
  const [rows] = await root.query('SELECT 1 FROM mysql.user WHERE User = ? AND Host = ?', [user, '%']);
  return (rows as unknown[]).length > 0;
};

describe('the account reaper with many active sessions', () => {
  it("keeps the oldest live session's user and connection when 1000 newer sessions are active", async () => {
    const c = await h.client();
    const victim = await openSession(c, await h.token(), { targets: ['mydyn'] });
    const conn = await connectThrough(victim);
    expect((await conn.read()).payload[0]).toBe(0x00);
    const deployment = (await h.gateway.store.getMeta('deployment_id')) as string;
    const user = mysqlUserName(victim.id, deployment, 'mydyn');
    expect(await userExists(user)).toBe(true);

    // The victim's job is alive: its client heartbeats.
    const beat = setInterval(() => {
      void api(c, 'POST', `/v1/sessions/${victim.id}/heartbeat`, { bearer: victim.secret }).catch(() => {});
    }, 500);
    // The pipeline's sessions: newer, active, leases far away (as heartbeats keep them).
    const base = (await h.gateway.store.getSession(victim.id)) ?? expect.unreachable();
    const now = Date.now();
    for (let i = 0; i < 1000; i++) {
      const id = `ses_flood_${S}_${i}`;
      await h.gateway.store.createSession(
        {
          ...base,
          id,
          secretHash: randomBytes(32).toString('hex'),
          createdAt: now + 1 + i,
          expiresAt: now + 1_800_000,
          leaseExpiresAt: now + 1_800_000,
        },
        auditEvent('session.opened', { session: id } as never),
      );
    }
    // Several reaper periods.
    await sleep(1_500);
    expect(await userExists(user)).toBe(true);
    expect(await conn.ping()).toBe(0x00);
    clearInterval(beat);
    conn.close();
  }, 60_000);
});

describe('a gateway crash', () => {
  it("does not let a job's watchdog outlive its session: the restarted gateway ends it", async () => {
    const c = await h.client();
    const job = await openSession(c, await h.token(), { targets: ['mydyn'] });
    const conn = await connectThrough(job);
    expect((await conn.read()).payload[0]).toBe(0x00);
    const deployment = (await h.gateway.store.getMeta('deployment_id')) as string;
    const user = mysqlUserName(job.id, deployment, 'mydyn');
    const start = await beats();
    conn.query(watchdogSql(`${DB}.beat`));
    await waitFor(async () => (await beats()) > start + 5, 5_000, 'the watchdog running');
    try {
      // The gateway dies (no session is ended); the job's heartbeats stop with it.
      await h.restart();
      await waitFor(async () => (await threadsOf(user)) === 0, 20_000, "the job's threads ended");
      await waitFor(async () => !(await userExists(user)), 10_000, 'the user dropped');
      const before = await beats();
      await sleep(300);
      expect(await beats()).toBe(before);
    } finally {
      const [rows] = await root.query('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ?', [
        user,
      ]);
      for (const r of rows as { id: number }[]) await root.query(`KILL ${r.id}`).catch(() => {});
    }
  }, 60_000);
});
