// A job that skips its local listener and writes the CIMY connect request itself: the exit must
// log in with the target's injected identity and schema whatever the request names, forward no
// capability that changes the framing the observer reads, refuse COM_CHANGE_USER, and leave
// LOAD DATA LOCAL to the application (the exit never reads a file of its own host).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { firstCell, HostileStream, makeTargetUser, startExit, type TestExit } from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exit: TestExit;

beforeAll(async () => {
  target = await makeTargetUser();
  exit = await startExit(target.upstream, 'ses_direct');
});
afterAll(async () => {
  await exit?.close();
  await target?.drop();
});

describe('mysql exit: a hand-crafted connect request', () => {
  it('cannot choose the upstream user or schema, nor smuggle COMPRESS/SSL/extended flags', async () => {
    const s = await HostileStream.open(exit.port, {
      user: 'root',
      database: 'mysql',
      capabilities: 0xffffffff,
      attributes: { _client_name: 'root-please' },
    });
    const ok = await s.read();
    expect(ok.payload[0]).toBe(0x00);
    s.query('SELECT CURRENT_USER()');
    expect(firstCell(await s.readUntilEnd())).toBe(`${target.user}@127.0.0.1`);
    s.query('SELECT DATABASE()');
    expect(firstCell(await s.readUntilEnd())).toBe(target.db);
    // Plain (uncompressed) framing still works after the OK: COMPRESS was not forwarded.
    s.query('SELECT 41+1');
    expect(firstCell(await s.readUntilEnd())).toBe('42');
    s.close();
    expect(exit.events.map((e) => e.text)).toContain('SELECT 41+1');
  });

  it('COM_CHANGE_USER to root (no password on this server) is refused before it reaches upstream', async () => {
    const s = await HostileStream.open(exit.port);
    expect((await s.read()).payload[0]).toBe(0x00);
    // COM_CHANGE_USER: user NUL, auth len 0, schema NUL, charset, plugin NUL
    const change = Buffer.concat([
      Buffer.from([0x11]),
      Buffer.from('root\0'),
      Buffer.from([0]),
      Buffer.from('mysql\0'),
      Buffer.from([45, 0]),
      Buffer.from('mysql_native_password\0'),
    ]);
    s.send(change);
    const answer = await s.read();
    expect(answer.payload[0]).toBe(0xff);
    expect(answer.payload.toString('utf8')).toContain('CIPORT_E_MYSQL_PROTOCOL');
    s.close();
  });

  it('LOAD DATA LOCAL is never negotiated, even when the connect request asks for every flag', async () => {
    const s = await HostileStream.open(exit.port, { capabilities: 0xffffffff });
    expect((await s.read()).payload[0]).toBe(0x00);
    s.query(`CREATE TABLE ${target.db}.f (a TEXT)`);
    expect((await s.readUntilEnd())[0]?.payload[0]).toBe(0x00);
    s.query(`LOAD DATA LOCAL INFILE '/etc/hostname' INTO TABLE ${target.db}.f`);
    // The server refuses it (CLIENT_LOCAL_FILES never reaches it): no file request at all.
    const answer = await s.read();
    expect(answer.payload[0]).toBe(0xff);
    s.query(`SELECT COUNT(*) FROM ${target.db}.f`);
    expect(firstCell(await s.readUntilEnd())).toBe('0');
    s.close();
  });

  it('COM_RESET_CONNECTION keeps the injected identity; multi-statements are audited whole', async () => {
    const s = await HostileStream.open(exit.port);
    expect((await s.read()).payload[0]).toBe(0x00);
    s.send(Buffer.from([0x1f]));
    expect((await s.read()).payload[0]).toBe(0x00);
    s.query('SELECT CURRENT_USER()');
    expect(firstCell(await s.readUntilEnd())).toBe(`${target.user}@127.0.0.1`);
    const multi = `SELECT 1; CREATE TABLE ${target.db}.second_statement (a INT)`;
    s.query(multi);
    // Two results: the SELECT's (more results flag), then the CREATE's OK.
    await s.readUntilEnd();
    expect((await s.read()).payload[0]).toBe(0x00);
    s.close();
    expect(exit.events.map((e) => e.text)).toContain(multi);
  });
});
