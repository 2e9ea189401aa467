import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MysqlThreadRegistry } from '../../src/exits/mysql/threads.js';
import {
  firstCell,
  HostileStream,
  makeTargetUser,
  startExit,
  type TestExit,
  threadRunning,
} from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exitA: TestExit;
let exitB: TestExit;

beforeAll(async () => {
  target = await makeTargetUser();
  // One exit process (one registry), two sessions.
  const threads = new MysqlThreadRegistry();
  exitA = await startExit(target.upstream, 'ses_victim', threads);
  exitB = await startExit(target.upstream, 'ses_attacker', threads);
});
afterAll(async () => {
  await exitA?.close();
  await exitB?.close();
  await target?.drop();
});

const STATEMENT = "SELECT SLEEP(20), 'victim-session-statement'";

/**
 * The victim session runs STATEMENT; resolves with SLEEP's value, or `ERR <errno>` (MariaDB
 * answers an interrupted statement with ERR 1317, MySQL's SLEEP with 1).
 */
async function victimRunning(): Promise<{ victim: HostileStream; answer: Promise<string | undefined> }> {
  const victim = await HostileStream.open(exitA.port);
  expect((await victim.read()).payload[0]).toBe(0x00);
  victim.query(STATEMENT);
  const answer = victim.readUntilEnd(30_000).then(
    (packets) => {
      // The ERR can come after the column definitions.
      const last = packets[packets.length - 1]?.payload;
      return last?.[0] === 0xff ? `ERR ${last.readUInt16LE(1)}` : firstCell(packets);
    },
    () => undefined,
  );
  return { victim, answer };
}

describe('mysql exit: isolation between sessions of one target', () => {
  // A SHARED STATIC USER (docs/mysql.md "Known holes"): sessions of a target with one static
  // user are one account to the server, so isolation fails here by design — it.fails pins that.
  // Per-session users (credentials.dynamic) give each session its own: test/e2e/mysql-users.test.ts
  // asserts both properties hold there, through the gateway and through an agent.
  it.fails("a job does not see another session's statements in the process list", async () => {
    const { victim, answer } = await victimRunning();
    await threadRunning(STATEMENT);
    const attacker = await HostileStream.open(exitB.port);
    expect((await attacker.read()).payload[0]).toBe(0x00);
    attacker.query(
      `SELECT info FROM information_schema.processlist WHERE info LIKE '%victim-session%' AND id <> CONNECTION_ID()`,
    );
    const seen = firstCell(await attacker.readUntilEnd());
    attacker.close();
    victim.close();
    await answer;
    expect(seen, "another session's statement text, read from the process list").toBeUndefined();
  }, 60_000);

  // A SHARED STATIC USER (docs/mysql.md "Known holes"): sessions of a target with one static
  // user are one account to the server, so isolation fails here by design — it.fails pins that.
  // Per-session users (credentials.dynamic) give each session its own: test/e2e/mysql-users.test.ts
  // asserts both properties hold there, through the gateway and through an agent.
  it.fails("a job cannot KILL QUERY another session's upstream thread", async () => {
    const { victim, answer } = await victimRunning();
    const id = await threadRunning(STATEMENT);
    const attacker = await HostileStream.open(exitB.port);
    expect((await attacker.read()).payload[0]).toBe(0x00);
    attacker.query(`KILL QUERY ${id}`);
    const killed = (await attacker.readUntilEnd())[0]?.payload[0];
    attacker.close();
    // Accepted: the victim's answer comes now (not after 20 s); refused: no need to wait for it.
    const slept = killed === 0x00 ? await answer : undefined;
    victim.close();
    await answer;
    // Interrupted (ERR 1317 ER_QUERY_INTERRUPTED, or SLEEP's 1): the other session stopped it.
    expect(slept, "the victim's statement was interrupted by another session").not.toMatch(/^(ERR 1317|1)$/);
    expect(killed, "another session's KILL QUERY was accepted").toBe(0xff);
  }, 60_000);
});
