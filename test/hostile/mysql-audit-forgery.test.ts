// Query audit integrity at the exit: a job that speaks the stream directly tries to make the
// audit record statements that never ran (file content shaped as a command, commands pipelined
// behind one after which the server drops the connection), or an execution under another
// statement's text (pipelined prepares). The observer (observe.ts) follows the server's replies:
// a statement is reported when its reply begins, each PREPARE_OK pairs with its own prepare.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodePacket } from '../../src/exits/mysql/packets.js';
import { firstCell, HostileStream, makeTargetUser, startExit, type TestExit } from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exit: TestExit;

beforeAll(async () => {
  target = await makeTargetUser();
  exit = await startExit(target.upstream, 'ses_forgery');
});
afterAll(async () => {
  await exit?.close();
  await target?.drop();
});

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

describe('mysql exit: audit forgery', () => {
  it('LOAD DATA LOCAL content whose sequence id wraps to 0 is not reported as a statement', async () => {
    const s = await HostileStream.open(exit.port);
    expect((await s.read()).payload[0]).toBe(0x00);
    s.query(`CREATE TABLE ${target.db}.rows (a TEXT)`);
    expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
    s.query(`LOAD DATA LOCAL INFILE 'data.txt' INTO TABLE ${target.db}.rows`);
    // Refused by the server now (the port never negotiates LOCAL_FILES).
    expect((await s.read()).payload[0]).toBe(0xff);
    // What was file content: seq 2 … 255, then 0 (wrapped) shaped as a COM_QUERY, then the
    // empty end-of-file packet. The exit refuses the first out-of-sequence packet and relays
    // nothing more: the forged "statement" neither runs nor reaches the audit.
    for (let seq = 2; seq <= 255; seq++) s.send(Buffer.from('x\n'), seq);
    const forged = 'DROP DATABASE production_forged_by_job';
    s.send(Buffer.concat([Buffer.from([0x03]), Buffer.from(`${forged}\n`)]), 0);
    s.send(Buffer.alloc(0), 1);
    const refused = await s.read();
    expect(refused.payload.toString('utf8')).toContain('CIPORT_E_MYSQL_PROTOCOL');
    s.close();
    const texts = exit.events.map((e) => e.text);
    expect(texts).toContain(`LOAD DATA LOCAL INFILE 'data.txt' INTO TABLE ${target.db}.rows`);
    expect(texts.filter((t) => t.includes(forged))).toEqual([]);
  });

  // Was a known hole (issue 13, security review of session 6): the observer took every command
  // sent for one that ran. Now a command is reported when the server's reply begins.
  it('commands pipelined behind a KILL CONNECTION of itself are never reported as answered', async () => {
    const s = await HostileStream.open(exit.port);
    expect((await s.read()).payload[0]).toBe(0x00);
    s.query(`CREATE TABLE ${target.db}.kept (a INT)`);
    expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
    const planted = `DROP TABLE ${target.db}.kept`;
    s.socket.write(
      Buffer.concat([
        encodePacket(Buffer.from('\x03SELECT 1', 'latin1'), 0),
        encodePacket(Buffer.from('\x03KILL CONNECTION CONNECTION_ID()', 'latin1'), 0),
        encodePacket(Buffer.from(`\x03${planted}`, 'latin1'), 0),
      ]),
    );
    await s.readUntilEnd(); // SELECT 1
    const killed = await s.read();
    expect(killed.payload.readUInt16LE(1)).toBe(1927); // ER_CONNECTION_KILLED, then the server closes
    // The exit is done with the connection once the server closed it: then it reports the rest.
    s.socket.end();
    const reported = () => exit.events.some((e) => e.text === planted);
    for (let i = 0; i < 100 && !reported(); i++) await new Promise((r) => setTimeout(r, 50));
    const byText = new Map(exit.events.map((e) => [e.text, e.outcome]));
    expect(byText.get('SELECT 1')).toBe('ok');
    expect(byText.get('KILL CONNECTION CONNECTION_ID()')).toBe('error');
    // It never ran (the table is there): in the audit as sent and unanswered, never as answered.
    expect(byText.get(planted)).toBe('unanswered');
    const check = await HostileStream.open(exit.port);
    expect((await check.read()).payload[0]).toBe(0x00);
    check.query(
      `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '${target.db}' AND table_name = 'kept'`,
    );
    expect(firstCell(await check.readUntilEnd())).toBe('1');
    check.close();
  });

  // Was a known hole (issue 13, security review of session 6): closed by following the replies.
  it('pipelined prepares do not make an execute event carry another statement text', async () => {
    const s = await HostileStream.open(exit.port);
    expect((await s.read()).payload[0]).toBe(0x00);
    s.query(`CREATE TABLE ${target.db}.victim (a INT)`);
    expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
    s.query(`INSERT INTO ${target.db}.victim VALUES (1),(2)`);
    expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
    // Two prepares in one write: the observer captures only the first PREPARE_OK.
    const prepare = (sql: string) => Buffer.concat([Buffer.from([0x16]), Buffer.from(sql)]);
    s.socket.write(
      Buffer.concat([encodePacket(prepare('SELECT 1'), 0), encodePacket(prepare('SELECT 2'), 0)]),
    );
    // Each: PREPARE_OK + one column definition (DEPRECATE_EOF: no EOF).
    for (let i = 0; i < 4; i++) await s.read();
    const harmful = `DELETE FROM ${target.db}.victim`;
    s.send(prepare(harmful));
    const prepared = await s.read();
    expect(prepared.payload[0]).toBe(0x00);
    const id = prepared.payload.readUInt32LE(1);
    // COM_STMT_EXECUTE id, flags 0, iteration count 1, no parameters
    s.send(Buffer.concat([Buffer.from([0x17]), u32(id), Buffer.from([0]), u32(1)]));
    const executed = await s.read();
    expect(executed.payload[0], executed.payload.toString('utf8')).toBe(0x00);
    s.close();
    const executes = exit.events.filter((e) => e.command === 'execute').map((e) => e.text);
    // What ran was the DELETE; the audit must not say it was `SELECT 2`.
    expect(executes).toEqual([harmful]);
    expect(exit.events.find((e) => e.command === 'execute')?.outcome).toBe('ok');
  });
});
