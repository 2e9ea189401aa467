// Query audit vs the connection's character set: the observer decodes statement text as UTF-8
// whatever the connection negotiated. In GBK (and Big5, SJIS, CP932, GB18030), 0xBF 0x5C is one
// character: the backslash is no escape to the server, while the audit shows `\'` as an escaped
// quote. A job can write a statement the audit reads as one SELECT of a string literal,
// `SELECT 'a\uFFFD\'; DROP TABLE …; SELECT 1 #'`, and the server runs as three statements,
// `SELECT 'a縗'`, `DROP TABLE …` and `SELECT 1` (the comment hides the last quote).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { firstCell, HostileStream, makeTargetUser, startExit, type TestExit } from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exit: TestExit;

beforeAll(async () => {
  target = await makeTargetUser();
  exit = await startExit(target.upstream, 'ses_charset');
});
afterAll(async () => {
  await exit?.close();
  await target?.drop();
});

const GBK_CHINESE_CI = 28;

async function smuggle(how: 'collation' | 'set-names'): Promise<void> {
  const table = `precious_${how.replace('-', '_')}`;
  const s = await HostileStream.open(
    exit.port,
    how === 'collation' ? { collation: GBK_CHINESE_CI } : { collation: 45 },
  );
  expect((await s.read()).payload[0]).toBe(0x00);
  if (how === 'set-names') {
    s.query('SET NAMES gbk');
    expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
  }
  s.query(`CREATE TABLE ${target.db}.${table} (a INT)`);
  expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
  const sql = Buffer.concat([
    Buffer.from("SELECT 'a"),
    Buffer.from([0xbf]),
    Buffer.from(`\\'; DROP TABLE ${target.db}.${table}; SELECT 1 #'`),
  ]);
  s.send(Buffer.concat([Buffer.from([0x03]), sql]));
  const first = await s.readUntilEnd();
  if (first[first.length - 1]?.payload[0] !== 0xff) {
    // The SELECT's result set, then the DROP's OK, then the last SELECT's result set.
    await s.read();
    await s.readUntilEnd();
  }
  s.query(
    `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '${target.db}' AND table_name = '${table}'`,
  );
  const left = firstCell(await s.readUntilEnd());
  s.close();
  if (left === '1') return; // refused or not run: nothing hidden
  // The server ran the DROP (the table is gone): the audit must show it in the server's reading,
  // not inside what a UTF-8 reading presents as a string literal.
  const recorded = exit.events.map((e) => e.text).find((t) => t.startsWith("SELECT 'a") && t.includes(table));
  expect(recorded).toBe(new TextDecoder('gbk').decode(sql));
}

describe('mysql exit: audit text and the connection character set', () => {
  // KNOWN HOLE (issue 13, security review of session 6; docs/mysql.md "Known holes"): this
  // test fails while the hole exists, so it runs as it.fails and turns red once fixed.
  it.fails('a GBK collation in the connect request does not hide a statement from the audit', async () => {
    await smuggle('collation');
  });

  // KNOWN HOLE (issue 13, security review of session 6; docs/mysql.md "Known holes"): this
  // test fails while the hole exists, so it runs as it.fails and turns red once fixed.
  it.fails('SET NAMES gbk does not hide a statement from the audit', async () => {
    await smuggle('set-names');
  });
});
