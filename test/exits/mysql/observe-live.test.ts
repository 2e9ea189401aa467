// The observer against the real MariaDB through the port (local listener ⇄ tunnel hop ⇄ exit):
// every reply shape a port relays is followed — the connection stays up and each statement is
// reported with its outcome — pipelined commands are all reported, in order, however many; a
// statement cut while it runs is reported unanswered; character sets at the handshake and in SET
// NAMES. (Protocol vectors of the same: replies.test.ts, observe.test.ts; attacks:
// test/hostile/mysql-audit-forgery.test.ts, mysql-charset-audit.test.ts.)
import type mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LOCAL_CAPABILITIES } from '../../../src/exits/mysql/frontend.js';
import { Cap, encodePacket } from '../../../src/exits/mysql/packets.js';
import { connectApp, mariadbCli, mariadbTarget, type PortHarness, waitFor } from './harness.js';
import { type RawClient, rawLogin, rawQuery } from './raw.js';
import { close, cmd, execute, fetch, prepare, query } from './vectors.js';

let target: Awaited<ReturnType<typeof mariadbTarget>>;
let root: mysql.Connection;
let DB: string;
const port = (extra?: Parameters<typeof target.port>[0]) => target.port(extra);

beforeAll(async () => {
  target = await mariadbTarget('ciport_obs');
  ({ root, db: DB } = target);
  await root.query(`CREATE TABLE \`${DB}\`.items (id INT PRIMARY KEY, name VARCHAR(50))`);
  await root.query(`INSERT INTO \`${DB}\`.items VALUES (1, 'one'), (2, 'two'), (3, 'three')`);
  await root.query(
    `CREATE PROCEDURE \`${DB}\`.two_results() BEGIN SELECT 1 AS a; SELECT name FROM \`${DB}\`.items; END`,
  );
});

afterAll(async () => {
  await target?.drop();
});

const audited = (h: PortHarness) => h.events.map((e) => `${e.command}:${e.text}:${e.outcome}`);

/** Read packets until `n` replies are complete (each ends with an OK, an ERR or an EOF/0xfe). */
async function readUntil(c: RawClient, done: (payload: Buffer) => boolean): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (;;) {
    const p = (await c.read(10_000)).payload;
    out.push(p);
    if (done(p)) return out;
  }
}

describe('every reply shape through the port, followed', () => {
  it.each([
    ['DEPRECATE_EOF', LOCAL_CAPABILITIES],
    ['classic EOFs', (LOCAL_CAPABILITIES & ~Cap.DEPRECATE_EOF) >>> 0],
  ])(
    'cursors, fetches, field lists, statistics, set option, resets and multi-results (%s)',
    async (_n, caps) => {
      const h = await port();
      const c = await rawLogin(h.port, h.otp, caps);
      const d = (caps & Cap.DEPRECATE_EOF) !== 0;
      const isEnd = (p: Buffer) => p[0] === 0xff || (p[0] === 0xfe && p.length < 0xffffff);
      c.socket.write(prepare('SELECT id FROM items ORDER BY id'));
      // PREPARE_OK, one column definition (+ EOF without DEPRECATE_EOF)
      const ok = (await c.read()).payload;
      expect(ok[0]).toBe(0x00);
      const id = ok.readUInt32LE(1);
      await c.read();
      if (!d) await c.read();
      // Execute with a read-only cursor: the metadata, then an end carrying CURSOR_EXISTS.
      c.socket.write(execute(id, 1));
      await readUntil(c, isEnd);
      c.socket.write(fetch(id, 2));
      await readUntil(c, isEnd);
      c.socket.write(fetch(id, 5));
      await readUntil(c, isEnd);
      c.socket.write(cmd(0x04, 'items\0')); // COM_FIELD_LIST
      await readUntil(c, isEnd);
      c.socket.write(cmd(0x09)); // COM_STATISTICS: one string
      expect((await c.read()).payload.toString('latin1')).toMatch(/^Uptime/);
      c.socket.write(cmd(0x1b, Buffer.from([0, 0]))); // COM_SET_OPTION: an EOF
      expect((await c.read()).payload[0]).toBe(0xfe);
      c.socket.write(cmd(0x1a, Buffer.from([id, 0, 0, 0]))); // COM_STMT_RESET
      expect((await c.read()).payload[0]).toBe(0x00);
      c.socket.write(close(id));
      // CALL: two result sets and the CALL's OK; then a statement after it.
      c.socket.write(query('CALL two_results()'));
      let results = 0;
      await readUntil(c, (p) => {
        if (p[0] === 0xff) return true;
        if (p[0] === 0x00 && p.length >= 7 && p.length < 0xffffff && !(p.readUInt16LE(3) & 0x08)) return true;
        if (isEnd(p)) results++;
        return false;
      });
      expect(results).toBe(d ? 2 : 4);
      expect(await rawQuery(c, 'SELECT 42', d)).toHaveLength(d ? 4 : 5);
      c.close();
      await waitFor('the exit to end', async () => h.exitResults[0]);
      expect(h.exitResults[0]?.error).toBeUndefined();
      expect(audited(h)).toEqual([
        'prepare:SELECT id FROM items ORDER BY id:ok',
        'execute:SELECT id FROM items ORDER BY id:ok',
        'query:CALL two_results():ok',
        'query:SELECT 42:ok',
      ]);
    },
  );

  it('3000 statements pipelined in one write: all reported, in order, none before its reply', async () => {
    const h = await port();
    const c = await rawLogin(h.port, h.otp, LOCAL_CAPABILITIES);
    const n = 3000;
    c.socket.write(Buffer.concat(Array.from({ length: n }, (_, i) => query(`SELECT ${i}`))));
    let answered = 0;
    await readUntil(c, (p) => p[0] === 0xfe && ++answered === n);
    c.close();
    await waitFor('the exit to end', async () => h.exitResults[0]);
    expect(h.events).toHaveLength(n);
    expect(h.events.every((e, i) => e.text === `SELECT ${i}` && e.outcome === 'ok')).toBe(true);
    const at = h.events.map((e) => e.at ?? 0);
    expect(at.every((t, i) => i === 0 || t >= (at[i - 1] as number))).toBe(true);
  });

  it('mysql2: prepared statements and a CALL with two result sets, each with its outcome', async () => {
    const h = await port();
    const c = await connectApp(h);
    const [byId] = await c.execute('SELECT name FROM items WHERE id = ?', [2]);
    expect(byId).toEqual([{ name: 'two' }]);
    await expect(c.execute('SELECT nope FROM items WHERE id = ?', [2])).rejects.toThrow(/nope/);
    const [called] = await c.query('CALL two_results()');
    expect((called as unknown[]).length).toBe(3);
    await expect(c.query('SELECT * FROM missing_table')).rejects.toThrow(/missing_table/);
    await c.end();
    await waitFor('the exit to end', async () => h.exitResults[0]);
    expect(audited(h)).toEqual([
      'prepare:SELECT name FROM items WHERE id = ?:ok',
      'execute:SELECT name FROM items WHERE id = ?:ok',
      'prepare:SELECT nope FROM items WHERE id = ?:error',
      'query:CALL two_results():ok',
      'query:SELECT * FROM missing_table:error',
    ]);
  });
});

describe('statements the server never answered', () => {
  it('a SLEEP cut by the end of the session: reported unanswered, and killed upstream', async () => {
    const h = await port();
    const c = await connectApp(h);
    c.on('error', () => {});
    const sleeping = c.query('SELECT SLEEP(30) AS cut_by_session').catch((e: Error) => e);
    await waitFor('SLEEP to run', async () => {
      const [rows] = await root.query(
        "SELECT id FROM information_schema.processlist WHERE info = 'SELECT SLEEP(30) AS cut_by_session'",
      );
      return (rows as unknown[]).length > 0 ? true : undefined;
    });
    expect(h.events).toEqual([]); // running, not answered
    h.abort();
    expect(await sleeping).toBeInstanceOf(Error);
    const result = await waitFor('the exit to end', async () => h.exitResults[0]);
    expect(await result.killed).toBe(true);
    expect(audited(h)).toEqual(['query:SELECT SLEEP(30) AS cut_by_session:unanswered']);
  });

  it('commands behind one the server refuses by closing (a packet above max_allowed_packet): never "ok"', async () => {
    const h = await port();
    const c = await rawLogin(h.port, h.otp, LOCAL_CAPABILITIES);
    const [[{ max }]] = (await root.query('SELECT @@max_allowed_packet AS max')) as unknown as [
      [{ max: number }],
    ];
    const big = Buffer.alloc(max + 1024, 0x20);
    big.write('\x03SELECT 1', 0, 'latin1');
    c.socket.write(Buffer.concat([query('SELECT 7'), encodePacket(big, 0), query(`DROP TABLE ${DB}.items`)]));
    await c.closed();
    await waitFor('the exit to end', async () => h.exitResults[0]);
    expect(audited(h)[0]).toBe('query:SELECT 7:ok');
    for (const e of h.events.slice(1)) expect(e.outcome, e.text.slice(0, 40)).not.toBe('ok');
    const [rows] = await root.query(`SELECT COUNT(*) AS n FROM \`${DB}\`.items`);
    expect((rows as { n: number }[])[0]?.n).toBe(3);
  });
});

describe('character sets through the port', () => {
  const cli = (h: PortHarness, charset: string, sql: string) =>
    mariadbCli(h, [`--default-character-set=${charset}`, '--batch', '--skip-column-names', '-e', sql]);

  it('the mariadb CLI with gbk or big5 is refused with CIPORT_E_MYSQL_CHARSET; nothing runs upstream', async () => {
    for (const charset of ['gbk', 'big5']) {
      const h = await port();
      const r = await cli(h, charset, 'SELECT 1');
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/ERROR 1115 \(42000\).*CIPORT_E_MYSQL_CHARSET/);
      expect(h.connected).toEqual([]);
    }
  });

  it('utf8mb4: non-ASCII text as text; latin1 (a C locale): allowed, its non-ASCII statements in hex', async () => {
    const h = await port();
    const utf8 = await cli(h, 'utf8mb4', "SELECT 'café'");
    expect(utf8.stdout.trim()).toBe('café');
    const latin1 = await cli(h, 'latin1', "SELECT 'café'");
    expect(latin1.code).toBe(0);
    await waitFor('both exits to end', async () => (h.exitResults.length === 2 ? true : undefined));
    const cafe = h.events.filter((e) => e.text.includes('caf') || e.encoding === 'hex');
    expect(cafe.map((e) => [e.text, e.encoding])).toEqual([
      ["SELECT 'café'", undefined],
      // The CLI sends its argument's bytes as they are (UTF-8), which the server reads as latin1.
      [Buffer.from("SELECT 'café'").toString('hex'), 'hex'],
    ]);
  });

  it('SET NAMES gbk from the CLI is refused; SET NAMES utf8mb4 is not', async () => {
    const h = await port();
    const refused = await cli(h, 'utf8mb4', 'SET NAMES gbk; SELECT 1');
    expect(refused.stderr).toMatch(
      /ERROR 1115 \(42000\).*CIPORT_E_MYSQL_CHARSET: "SET NAMES gbk" is refused/,
    );
    const fine = await cli(h, 'utf8mb4', "SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci; SELECT 'ü'");
    expect(fine.stderr).toBe('');
    expect(fine.stdout.trim()).toBe('ü');
  });
});
