// End to end against the real MariaDB on 127.0.0.1:3306 with real clients (the mariadb CLI,
// mysql2: query and prepared statements) through local listener ⇄ tunnel hop ⇄ exit.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_CAPABILITIES } from '../../../src/exits/mysql/frontend.js';
import { Cap } from '../../../src/exits/mysql/packets.js';
import type { MysqlUpstreamTarget } from '../../../src/exits/mysql/upstream.js';
import {
  admin,
  MARIADB_ADDRESS,
  type PortHarness,
  type Ran,
  runClient,
  startPort,
  suffix,
} from './harness.js';
import { rawLogin, rawQuery } from './raw.js';

const S = suffix();
const DB = `ciport_e2e_${S}`;
const USER = `ciport_app_${S}`;
const PW = `pw-${randomBytes(12).toString('hex')}`;
const harnesses: PortHarness[] = [];
const outputs: Ran[] = [];
let root: mysql.Connection;

async function port(
  upstream: Partial<MysqlUpstreamTarget> = {},
  extra: Partial<Parameters<typeof startPort>[0]> = {},
) {
  const h = await startPort({
    upstream: { address: MARIADB_ADDRESS, user: USER, password: PW, database: DB, ...upstream },
    ...extra,
  });
  harnesses.push(h);
  return h;
}

function cli(h: PortHarness, args: string[], password = h.otp): Promise<Ran> {
  return runClient(
    'mariadb',
    [
      '--no-defaults',
      '-h',
      '127.0.0.1',
      '-P',
      String(h.port),
      '-u',
      h.user,
      '--batch',
      '--skip-column-names',
      ...args,
    ],
    { PATH: process.env.PATH ?? '/usr/bin:/bin', MYSQL_PWD: password },
  ).then((r) => {
    outputs.push(r);
    return r;
  });
}

beforeAll(async () => {
  root = await admin();
  await root.query(`CREATE DATABASE \`${DB}\``);
  await root.query(`CREATE USER '${USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('${PW}')`);
  await root.query(`GRANT SELECT, INSERT, CREATE, DROP ON \`${DB}\`.* TO '${USER}'@'%'`);
  await root.query(`CREATE TABLE \`${DB}\`.items (id INT PRIMARY KEY, name VARCHAR(50))`);
  await root.query(`INSERT INTO \`${DB}\`.items VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
});

afterAll(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
  // Not one byte the applications received holds the injected password.
  for (const h of harnesses) expect(h.toApp().includes(PW)).toBe(false);
  await root?.query(`DROP USER IF EXISTS '${USER}'@'%'`);
  await root?.query(`DROP DATABASE IF EXISTS \`${DB}\``);
  await root?.end();
  // No output of any client ever shows the injected password.
  for (const r of outputs) expect(`${r.stdout}${r.stderr}`).not.toContain(PW);
});

describe('mariadb CLI through the port', () => {
  it('runs queries as the injected user with the one-time password (native locally and upstream)', async () => {
    const h = await port();
    const r = await cli(h, ['-e', 'SELECT CURRENT_USER(), DATABASE(); SELECT name FROM items ORDER BY id']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n')).toEqual([`${USER}@%\t${DB}`, 'one', 'two', 'three', '']);
    expect(h.connected[0]).toMatchObject({ auth: 'mysql_native_password', tls: false });
    expect(h.events.map((e) => e.text)).toContain('SELECT name FROM items ORDER BY id');
    expect(h.tunnels).toBe(1);
  });

  it('refuses a wrong one-time password with ERR 1045 naming the code, and opens nothing upstream', async () => {
    const h = await port();
    const r = await cli(h, ['-e', 'SELECT 1'], 'not-the-otp');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/ERROR 1045 \(28000\).*CIPORT_E_MYSQL_AUTH/);
    expect(h.tunnels).toBe(0);
    expect(h.clientErrors[0]).toMatchObject({ code: 'CIPORT_E_MYSQL_AUTH' });
    expect(r.stderr).not.toContain(h.otp);
  });

  it('refuses another user name than the port expects', async () => {
    const h = await port({}, { user: 'app' });
    const r = await runClient(
      'mariadb',
      ['--no-defaults', '-h', '127.0.0.1', '-P', String(h.port), '-u', 'someone', '-e', 'SELECT 1'],
      { PATH: process.env.PATH ?? '', MYSQL_PWD: h.otp },
    );
    expect(r.stderr).toMatch(/ERROR 1045 .*CIPORT_E_MYSQL_AUTH.*accepts user 'app' only/);
    expect(h.tunnels).toBe(0);
  });

  it('lets the app choose the schema when the target has none, and USE shows in the audit', async () => {
    const h = await port({ database: undefined });
    const r = await cli(h, [
      '-D',
      DB,
      '-e',
      'SELECT COUNT(*) FROM items; USE information_schema; SELECT DATABASE()',
    ]);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toEqual(['3', 'information_schema', '']);
    expect(h.events.some((e) => e.command === 'init_db' && e.text === 'USE `information_schema`')).toBe(true);
  });

  it('reports the upstream refusal for a wrong injected password with CIPORT_E_MYSQL_UPSTREAM_AUTH', async () => {
    const h = await port({ password: 'wrong-password' });
    const r = await cli(h, ['-e', 'SELECT 1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/ERROR 1045 \(28000\).*CIPORT_E_MYSQL_UPSTREAM_AUTH/);
    expect(r.stderr).not.toContain('wrong-password');
    expect(h.exitErrors[0]).toMatchObject({ code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH' });
    expect(h.clientErrors[0]).toMatchObject({ code: 'CIPORT_E_MYSQL_UPSTREAM_AUTH' });
  });
});

describe('refusals the application sees', () => {
  it('an unknown database: CIPORT_E_MYSQL_UPSTREAM_REFUSED with the server errno', async () => {
    const h = await port({ database: `${DB}_missing` });
    const r = await cli(h, ['-e', 'SELECT 1']);
    expect(r.stderr).toMatch(/ERROR (1049|1044) \(42000\).*CIPORT_E_MYSQL_UPSTREAM_REFUSED/);
    expect(h.exitErrors[0]).toMatchObject({ code: 'CIPORT_E_MYSQL_UPSTREAM_REFUSED' });
  });

  it('an unreachable upstream: CIPORT_E_UPSTREAM_UNREACHABLE as 1105 (08001)', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const h = await port({ address: `127.0.0.1:${closed}` });
    const r = await cli(h, ['-e', 'SELECT 1']);
    expect(r.stderr).toMatch(/ERROR 1105 \(08001\).*CIPORT_E_UPSTREAM_UNREACHABLE/);
  });

  it('a client that requires TLS fails with its own message; one that prefers it goes on in plaintext', async () => {
    const h = await port();
    const strict = await cli(h, ['--ssl-verify-server-cert', '-e', 'SELECT 1']);
    expect(strict.stderr).toMatch(/SSL is required, but the server does not support it/);
    expect(h.tunnels).toBe(0);
    const preferred = await cli(h, ['--ssl', '-e', 'SELECT 5']);
    expect(preferred.stdout.trim()).toBe('5');
  });
});

describe('bulk data through the port', () => {
  it('LOAD DATA LOCAL INFILE is refused by the server (the port never negotiates it), nothing of the file arrives', async () => {
    const h = await port();
    const dir = mkdtempSync(join(tmpdir(), 'ciport-mysql-'));
    const file = join(dir, 'rows.tsv');
    writeFileSync(file, Array.from({ length: 500 }, (_, i) => `${1000 + i}\tfile-row-${i}`).join('\n'));
    try {
      const r = await cli(h, ['--local-infile=1', '-e', `LOAD DATA LOCAL INFILE '${file}' INTO TABLE items`]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/not allowed|1148|4166/i);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const [rows] = await root.query(`SELECT COUNT(*) AS n FROM \`${DB}\`.items WHERE id >= 1000`);
    expect((rows as { n: number }[])[0]?.n).toBe(0);
    expect(JSON.stringify(h.events)).not.toContain('file-row-1');
  });

  it('a 6 MiB value goes up as a parameter and comes back in a row', async () => {
    const h = await port();
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: h.port,
      user: h.user,
      password: h.otp,
    });
    const big = randomBytes(3 * 1024 * 1024).toString('hex');
    await c.query('CREATE TABLE blobs (v LONGTEXT)');
    await c.execute('INSERT INTO blobs VALUES (?)', [big]);
    const [rows] = await c.query('SELECT v, LENGTH(v) AS n FROM blobs');
    await c.query('DROP TABLE blobs');
    await c.end();
    expect((rows as { n: number }[])[0]?.n).toBe(big.length);
    expect((rows as { v: string }[])[0]?.v === big).toBe(true);
  });
});

describe('mysql2 through the port', () => {
  it('query and prepared statements (execute), with statement events but no parameter values', async () => {
    const h = await port();
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: h.port,
      user: h.user,
      password: h.otp,
    });
    try {
      const [rows] = await c.query('SELECT name FROM items WHERE id = 2');
      expect(rows).toEqual([{ name: 'two' }]);
      const [byId] = await c.execute('SELECT name FROM items WHERE id = ?', [3]);
      expect(byId).toEqual([{ name: 'three' }]);
      const [again] = await c.execute('SELECT name FROM items WHERE id = ?', [1]);
      expect(again).toEqual([{ name: 'one' }]);
      await c.query('CREATE TABLE t_secret (v VARCHAR(64))');
      await c.execute('INSERT INTO t_secret VALUES (?)', ['param-value-never-audited']);
      const [secret] = await c.query('SELECT v FROM t_secret');
      expect(secret).toEqual([{ v: 'param-value-never-audited' }]);
    } finally {
      await c.end();
    }
    await new Promise((r) => setTimeout(r, 100));
    const prepared = 'SELECT name FROM items WHERE id = ?';
    expect(h.events.filter((e) => e.text === prepared).map((e) => e.command)).toEqual([
      'prepare',
      'execute',
      'execute',
    ]);
    expect(
      h.events.find((e) => e.command === 'query' && e.text === 'SELECT name FROM items WHERE id = 2'),
    ).toMatchObject({
      protocol: 'simple',
      truncated: false,
    });
    expect(JSON.stringify(h.events)).not.toContain('param-value-never-audited');
    // The app said COM_QUIT: nothing to kill.
    await new Promise((r) => setTimeout(r, 100));
    expect(h.exitResults[0]?.killed).toBeUndefined();
  });

  it('multipleStatements: two result sets from one COM_QUERY, reported as one statement', async () => {
    const h = await port();
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: h.port,
      user: h.user,
      password: h.otp,
      multipleStatements: true,
    });
    const [results] = await c.query('SELECT 1 AS a; SELECT name FROM items WHERE id = 1');
    await c.end();
    expect(results).toEqual([[{ a: 1 }], [{ name: 'one' }]]);
    expect(h.events.filter((e) => e.command === 'query').map((e) => e.text)).toEqual([
      'SELECT 1 AS a; SELECT name FROM items WHERE id = 1',
    ]);
  });

  it('cuts long statements at maxQueryLength on a character boundary', async () => {
    const h = await port({}, { maxQueryLength: 20 });
    const c = await mysql.createConnection({
      host: '127.0.0.1',
      port: h.port,
      user: h.user,
      password: h.otp,
    });
    await c.query("SELECT 'ääääääääääää' AS x");
    await c.end();
    const e = h.events.find((x) => x.command === 'query');
    expect(e?.truncated).toBe(true);
    expect(Buffer.byteLength(e?.text ?? '')).toBeLessThanOrEqual(20);
    expect(e?.text.startsWith("SELECT 'ä")).toBe(true);
    expect(e?.text).not.toContain('\uFFFD');
  });
});

describe('capabilities negotiated locally are the ones upstream', () => {
  it('CLIENT_DEPRECATE_EOF (MySQL 8 clients): result sets end with an OK, no EOF after the columns', async () => {
    const h = await port();
    const c = await rawLogin(h.port, h.otp, LOCAL_CAPABILITIES);
    const rows = await rawQuery(c, 'SELECT 7', true);
    c.close();
    // column count, column definition, row, OK-as-EOF (0xfe, longer than an EOF packet)
    expect(rows.map((p) => p[0])).toEqual([1, 3, 1, 0xfe]);
    expect(rows[2]?.toString('latin1', 1)).toBe('7');
    expect(rows[3]?.length).toBeGreaterThan(5);
  });

  it('without it (libmariadb, mysql2): EOF packets after the columns and the rows', async () => {
    const h = await port();
    const c = await rawLogin(h.port, h.otp, (LOCAL_CAPABILITIES & ~Cap.DEPRECATE_EOF) >>> 0);
    const rows = await rawQuery(c, 'SELECT 7', false);
    c.close();
    expect(rows.map((p) => p[0])).toEqual([1, 3, 0xfe, 1, 0xfe]);
    expect(rows[2]?.length).toBe(5);
  });

  it.each([
    [224, 'utf8mb4 utf8mb4_unicode_ci'],
    [8, 'latin1 latin1_swedish_ci'],
  ])(
    'the collation the application chose (%i) is the connection collation upstream',
    async (collation, expected) => {
      const h = await port();
      const c = await rawLogin(h.port, h.otp, (LOCAL_CAPABILITIES & ~Cap.DEPRECATE_EOF) >>> 0, collation);
      const rows = await rawQuery(
        c,
        "SELECT CONCAT(@@character_set_client, ' ', @@collation_connection)",
        false,
      );
      c.close();
      expect(rows[3]?.toString('latin1', 1)).toBe(expected);
    },
  );

  it('without CLIENT_MULTI_STATEMENTS the upstream refuses two statements in one COM_QUERY', async () => {
    const h = await port();
    const c = await rawLogin(
      h.port,
      h.otp,
      (LOCAL_CAPABILITIES & ~Cap.MULTI_STATEMENTS & ~Cap.DEPRECATE_EOF) >>> 0,
    );
    const rows = await rawQuery(c, 'SELECT 1; SELECT 2', false);
    c.close();
    expect(rows[0]?.[0]).toBe(0xff);
    expect(rows[0]?.readUInt16LE(1)).toBe(1064); // a syntax error: the server saw one statement
  });
});
