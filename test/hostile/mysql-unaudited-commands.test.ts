import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostileStream, makeTargetUser, startExit, type TestExit, threadRunning } from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exit: TestExit;

beforeAll(async () => {
  target = await makeTargetUser();
  exit = await startExit(target.upstream, 'ses_unaudited');
});
afterAll(async () => {
  await exit?.close();
  await target?.drop();
});

describe('mysql exit: commands that act without a query event', () => {
  it('COM_PROCESS_KILL is refused before it reaches the server: the other statement runs on', async () => {
    const running = await HostileStream.open(exit.port);
    expect((await running.read()).payload[0]).toBe(0x00);
    const statement = "SELECT SLEEP(20), 'process-kill-target'";
    running.query(statement);
    const ended = running.readUntilEnd(30_000).then(
      (packets) => packets[packets.length - 1]?.payload[0] === 0xff,
      () => true,
    );
    const id = await threadRunning(statement);

    const killer = await HostileStream.open(exit.port);
    expect((await killer.read()).payload[0]).toBe(0x00);
    const before = exit.events.length;
    const payload = Buffer.alloc(5);
    payload[0] = 0x0c;
    payload.writeUInt32LE(id, 1);
    killer.send(payload);
    const answer = await killer.read();
    killer.close();
    // Refused by the exit (only audited commands are relayed), the thread untouched.
    expect(answer.payload[0]).toBe(0xff);
    expect(answer.payload.toString('utf8')).toContain('CIPORT_E_MYSQL_PROTOCOL');
    expect(await threadRunning(statement)).toBe(id);
    running.close();
    await ended;
    expect(exit.events.slice(before).map((e) => e.text)).toEqual([]);
  }, 60_000);
});
