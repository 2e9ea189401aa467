// Sessions against the real MariaDB: MariaDB's ed25519 plugin upstream, stopping statements
// with KILL QUERY (on demand and when a session ends), COM_CHANGE_USER refused, and a tunnel
// stream that does not start with a connect request.

import { spawn } from 'node:child_process';
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CiportError } from '../../../src/errors/index.js';
import { encodeConnectFrame } from '../../../src/exits/mysql/connect-wire.js';
import { LOCAL_CAPABILITIES } from '../../../src/exits/mysql/frontend.js';
import { killMysqlQuery } from '../../../src/exits/mysql/kill.js';
import { encodePacket, PacketReader, parseErr } from '../../../src/exits/mysql/packets.js';
import { MysqlThreadRegistry } from '../../../src/exits/mysql/threads.js';
import type { MysqlUpstreamTarget } from '../../../src/exits/mysql/upstream.js';
import {
  admin,
  MARIADB_ADDRESS,
  type PortHarness,
  runClient,
  startPort,
  suffix,
  waitFor,
} from './harness.js';

const S = suffix();
const USER = `ciport_ses_${S}`;
const PW = `pw-${randomBytes(12).toString('hex')}`;
const ED_USER = `ciport_ed_${S}`;
// 32 bytes: the length node:crypto can sign MariaDB's ed25519 with (docs/mysql.md).
const ED_PW = randomBytes(16).toString('hex');
const ED_SHORT_USER = `ciport_eds_${S}`;
const ED_SHORT_PW = `short-${randomBytes(4).toString('hex')}`;
let root: mysql.Connection;
let ed25519 = false;
const harnesses: PortHarness[] = [];

const target = (extra: Partial<MysqlUpstreamTarget> = {}): MysqlUpstreamTarget => ({
  address: MARIADB_ADDRESS,
  user: USER,
  password: PW,
  ...extra,
});

async function port(upstream: MysqlUpstreamTarget = target()) {
  const h = await startPort({ upstream });
  harnesses.push(h);
  return h;
}

const connectApp = (h: PortHarness) =>
  mysql.createConnection({ host: '127.0.0.1', port: h.port, user: h.user, password: h.otp });

/** The statement the upstream thread `id` runs, or undefined when it runs none (or is gone). */
async function running(id: number): Promise<string | undefined> {
  const [rows] = await root.query('SELECT INFO FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
  return (rows as { INFO: string | null }[])[0]?.INFO ?? undefined;
}

beforeAll(async () => {
  root = await admin();
  await root.query(`CREATE USER '${USER}'@'%' IDENTIFIED BY '${PW}'`);
  const [plugins] = await root.query(
    "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'",
  );
  if ((plugins as unknown[]).length === 0) await root.query("INSTALL SONAME 'auth_ed25519'");
  ed25519 = true;
  await root.query(`CREATE USER '${ED_USER}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('${ED_PW}')`);
  await root.query(
    `CREATE USER '${ED_SHORT_USER}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('${ED_SHORT_PW}')`,
  );
});

afterAll(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
  for (const u of [USER, ED_USER, ED_SHORT_USER]) await root?.query(`DROP USER IF EXISTS '${u}'@'%'`);
  await root?.end();
});

describe("MariaDB's ed25519 upstream", () => {
  it('authenticates a 32-byte password with client_ed25519 (auth switch from the server)', async () => {
    expect(ed25519).toBe(true);
    const h = await port(target({ user: ED_USER, password: ED_PW }));
    const r = await runClient(
      'mariadb',
      [
        '--no-defaults',
        '-h',
        '127.0.0.1',
        '-P',
        String(h.port),
        '-u',
        h.user,
        '-N',
        '-e',
        'SELECT CURRENT_USER()',
      ],
      { PATH: process.env.PATH ?? '', MYSQL_PWD: h.otp },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(`${ED_USER}@%`);
    expect(h.connected[0]?.auth).toBe('client_ed25519');
  });

  it("signs with the key MariaDB derived from the password (its stored public key is node's)", async () => {
    const [rows] = await root.query('SELECT authentication_string AS k FROM mysql.user WHERE user = ?', [
      ED_USER,
    ]);
    const stored = (rows as { k: string }[])[0]?.k;
    const key = createPrivateKey({
      key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), Buffer.from(ED_PW)]),
      format: 'der',
      type: 'pkcs8',
    });
    const x = createPublicKey(key).export({ format: 'jwk' }).x as string;
    // MariaDB stores base64 without padding; JWK has base64url.
    expect(stored).toBe(Buffer.from(x, 'base64url').toString('base64').replace(/=+$/, ''));
  });

  it('refuses other password lengths with a message saying why, before sending anything wrong', async () => {
    const h = await port(target({ user: ED_SHORT_USER, password: ED_SHORT_PW }));
    const err = await connectApp(h).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(
      /^CIPORT_E_MYSQL_UPSTREAM_AUTH: .*client_ed25519 is supported for 32-byte passwords only/,
    );
    expect(err?.message).not.toContain(ED_SHORT_PW);
  });
});

describe('KILL QUERY', () => {
  it('killMysqlQuery cuts a SELECT SLEEP(30) of the connection and leaves it usable', async () => {
    const h = await port();
    const c = await connectApp(h);
    const id = h.connected[0]?.connectionId as number;
    expect(id).toBeGreaterThan(0);
    const sleeping = c.query('SELECT SLEEP(30) AS s');
    // Handled now: it may reject while the KILL is still being awaited (checked below).
    sleeping.catch(() => {});
    await waitFor('the SLEEP upstream', async () =>
      (await running(id))?.startsWith('SELECT SLEEP') ? true : undefined,
    );
    await killMysqlQuery(target(), id);
    // MariaDB ends the statement with ER_QUERY_INTERRUPTED (1317) instead of SLEEP's result.
    await expect(sleeping).rejects.toMatchObject({ errno: 1317 });
    const [after] = await c.query('SELECT 2 AS two');
    expect(after).toEqual([{ two: 2 }]);
    await c.end();
  });

  it('refuses an unknown thread with the server errno', async () => {
    await expect(killMysqlQuery(target(), 2 ** 32 - 2)).rejects.toMatchObject({
      code: 'CIPORT_E_MYSQL_UPSTREAM_REFUSED',
      errno: 1094,
    });
  });

  it('a session that ends during SLEEP(30) gets the statement killed upstream', async () => {
    const h = await port();
    const c = await connectApp(h);
    c.on('error', () => {});
    const id = h.connected[0]?.connectionId as number;
    const sleeping = c.query('SELECT SLEEP(30)').catch((e: Error) => e);
    await waitFor('the SLEEP upstream', async () =>
      (await running(id))?.startsWith('SELECT SLEEP') ? true : undefined,
    );
    h.abort();
    await waitFor('the exit result', async () => h.exitResults[0]);
    expect(await h.exitResults[0]?.killed).toBe(true);
    await waitFor('the SLEEP to stop', async () => ((await running(id)) === undefined ? true : undefined));
    expect(await sleeping).toBeInstanceOf(Error);
  });

  it('an application killed mid-query (no COM_QUIT) gets its statement killed too', async () => {
    const h = await port();
    const c = await connectApp(h);
    c.on('error', () => {});
    const id = h.connected[0]?.connectionId as number;
    void c.query('SELECT SLEEP(30)').catch(() => {});
    await waitFor('the SLEEP upstream', async () =>
      (await running(id))?.startsWith('SELECT SLEEP') ? true : undefined,
    );
    c.destroy();
    await waitFor('the SLEEP to stop', async () => ((await running(id)) === undefined ? true : undefined));
    await waitFor('the exit result', async () => h.exitResults[0]);
    expect(await h.exitResults[0]?.killed).toBe(true);
  });
});

describe("KILL with the listener's connection id (what clients send on Ctrl-C or a timeout)", () => {
  it('reaches the right upstream thread for a connection of the same session', async () => {
    const h = await port();
    const a = await connectApp(h);
    const b = await connectApp(h);
    const upstreamA = h.connected[0]?.connectionId as number;
    expect(a.threadId).toBeGreaterThanOrEqual(2 ** 31); // the listener's id, not the upstream's
    const sleeping = a.query('SELECT SLEEP(30)');
    // Handled now: it may reject while the KILL is still being awaited (checked below).
    sleeping.catch(() => {});
    await waitFor('the SLEEP upstream', async () =>
      (await running(upstreamA))?.startsWith('SELECT SLEEP') ? true : undefined,
    );
    await b.query(`KILL QUERY ${a.threadId}`);
    await expect(sleeping).rejects.toMatchObject({ errno: 1317 });
    // The audit keeps what the application sent.
    expect(h.events.map((e) => e.text)).toContain(`KILL QUERY ${a.threadId}`);
    await Promise.all([a.end(), b.end()]);
  });

  it("the mariadb CLI's Ctrl-C stops its statement", async () => {
    const h = await port();
    const cli = spawn(
      'mariadb',
      ['--no-defaults', '-h', '127.0.0.1', '-P', String(h.port), '-u', h.user, '-e', 'SELECT SLEEP(30)'],
      { env: { PATH: process.env.PATH ?? '', MYSQL_PWD: h.otp }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    cli.stdout.on('data', (d) => {
      output += d;
    });
    cli.stderr.on('data', (d) => {
      output += d;
    });
    const exited = new Promise<number | null>((resolve) => cli.on('close', resolve));
    const id = (await waitFor('the CLI connected', async () => h.connected[0]))?.connectionId;
    await waitFor('the SLEEP upstream', async () => ((await running(id)) ? true : undefined));
    cli.kill('SIGINT');
    await exited;
    expect(output).toMatch(/Query execution was interrupted/);
    expect(await running(id)).toBeUndefined();
  });

  it("never reaches another session's thread", async () => {
    const threads = new MysqlThreadRegistry();
    const one = await startPort({ upstream: target(), threads, sessionId: 'ses_one' });
    const two = await startPort({ upstream: target(), threads, sessionId: 'ses_two' });
    harnesses.push(one, two);
    const a = await connectApp(one);
    const b = await connectApp(two);
    const upstreamA = one.connected[0]?.connectionId as number;
    const sleeping = a.query('SELECT SLEEP(30)').catch((e: { errno: number }) => e);
    await waitFor('the SLEEP upstream', async () => ((await running(upstreamA)) ? true : undefined));
    await expect(b.query(`KILL QUERY ${a.threadId}`)).rejects.toMatchObject({ errno: 1094 });
    expect(await running(upstreamA)).toMatch(/^SELECT SLEEP/);
    await killMysqlQuery(target(), upstreamA);
    expect(await sleeping).toMatchObject({ errno: 1317 });
    await Promise.all([a.end(), b.end()]);
    await waitFor('both connections unregistered', async () => (threads.size === 0 ? true : undefined));
  });
});

describe('what the relay refuses', () => {
  it('COM_CHANGE_USER gets an ERR and the connection closes, the upstream identity never changes', async () => {
    const h = await port();
    const c = await connectApp(h);
    c.on('error', () => {});
    const id = h.connected[0]?.connectionId as number;
    const err = await c.changeUser({ user: 'root', password: '' }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: COM_CHANGE_USER is not allowed/);
    await waitFor('the upstream connection to close', async () => {
      const [rows] = await root.query('SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
      return (rows as unknown[]).length === 0 ? true : undefined;
    });
  });

  it('the exit refuses COM_CHANGE_USER itself (a job can bypass its local listener)', async () => {
    const h = await port();
    const s = connect({ host: '127.0.0.1', port: h.exitPort });
    s.on('error', () => {});
    s.write(
      encodeConnectFrame({
        kind: 'connect',
        user: 'app',
        collation: 45,
        capabilities: LOCAL_CAPABILITIES,
        maxPacketSize: 1 << 24,
        attributes: {},
      }),
    );
    const reader = new PacketReader(
      s,
      (why, detail) => new CiportError('CIPORT_E_INTERNAL', `${why} ${detail}`),
    );
    const ok = await reader.read(4096, 5000);
    expect(ok.payload[0]).toBe(0x00);
    const id = h.connected[0]?.connectionId as number;
    s.write(encodePacket(Buffer.concat([Buffer.from([0x11]), Buffer.from('root\0')]), 0));
    const err = parseErr((await reader.read(4096, 5000)).payload);
    expect(err.message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: COM_CHANGE_USER is not allowed/);
    await waitFor('the upstream connection to close', async () => {
      const [rows] = await root.query('SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
      return (rows as unknown[]).length === 0 ? true : undefined;
    });
    s.destroy();
  });

  it('a tunnel stream that does not start with CIMY gets an ERR and no upstream connection', async () => {
    const h = await port();
    const s = connect({ host: '127.0.0.1', port: h.exitPort });
    s.write(Buffer.from('\x03SELECT 1 -- not a connect request'));
    const reader = new PacketReader(
      s,
      (why, detail) => new CiportError('CIPORT_E_INTERNAL', `${why} ${detail}`),
    );
    const err = parseErr((await reader.read(4096, 5000)).payload);
    s.destroy();
    expect(err.message).toMatch(/^CIPORT_E_MYSQL_PROTOCOL: mysql stream header: missing CIMY magic/);
    expect(h.connected).toEqual([]);
    await waitFor('the exit error', async () => h.exitErrors[0]);
    expect(h.exitErrors[0]).toMatchObject({ code: 'CIPORT_E_MYSQL_PROTOCOL' });
  });
});
