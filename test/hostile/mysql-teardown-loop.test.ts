// A job that wants its SQL to outlive its connection: a compound statement (MariaDB's
// `BEGIN NOT ATOMIC`, no CREATE ROUTINE needed) looping with a CONTINUE HANDLER FOR SQLEXCEPTION.
// The handler catches the ER_QUERY_INTERRUPTED of a `KILL QUERY` and the loop goes on; the
// server only notices a closed client socket when it writes, which the loop never does. So when
// the tunnel is torn down (session ended, stream reset, client killed), the exit must end the
// whole upstream connection (`KILL CONNECTION`), not just its statement in progress.
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../fixtures/wait-for.js';
import { HostileStream, makeTargetUser, startExit, type TestExit } from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exit: TestExit;
let root: mysql.Connection;

beforeAll(async () => {
  target = await makeTargetUser();
  root = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
  await root.query(`CREATE TABLE ${target.db}.beat (id INT)`);
  exit = await startExit(target.upstream, 'ses_loop');
});
afterAll(async () => {
  await exit?.close();
  await target?.drop();
  await root?.end();
});

const threadsOf = async (user: string) => {
  const [rows] = await root.query('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ?', [
    user,
  ]);
  return (rows as { id: number }[]).length;
};
const beats = async () => {
  const [rows] = await root.query(`SELECT COUNT(*) AS n FROM ${target.db}.beat`);
  return Number((rows as { n: number }[])[0]?.n);
};

describe('mysql exit: a connection torn down mid-statement', () => {
  it('ends a looping compound statement whose handler swallows KILL QUERY', async () => {
    const s = await HostileStream.open(exit.port);
    expect((await s.read()).payload[0]).toBe(0x00);
    s.query(
      `BEGIN NOT ATOMIC DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END; ` +
        `WHILE 1 DO INSERT INTO ${target.db}.beat VALUES (1); DO SLEEP(0.05); END WHILE; END`,
    );
    await waitFor(async () => (await beats()) > 2, 5_000, 'the loop running');
    // The job goes away without COM_QUIT (as when its session ends and the stream is reset).
    s.close();
    await waitFor(async () => (await threadsOf(target.user)) === 0, 5_000, "the job's thread ended").catch(
      () => undefined,
    );
    const before = await beats();
    await sleep(500);
    // Nothing of the job runs on after its connection is gone.
    expect(await beats()).toBe(before);
    expect(await threadsOf(target.user)).toBe(0);
    // With its upstream connection gone, the exit is done with the stream too.
    await waitFor(() => exit.results.length === 1, 5_000, 'the exit done with the stream');
    expect(await exit.results[0]?.killed).toBe(true);
  });
});
