// A job through a mysql target with a static user (credentials.user/password) runs
// `SET PASSWORD = PASSWORD('…')`: MariaDB and MySQL let every account change its own password
// without any privilege. The injected password stops working — every later connection of every
// session of the target fails (CIPORT_E_MYSQL_UPSTREAM_AUTH) — and the job now knows a password
// of the shared account, usable wherever the server is reachable without the port.
// KNOWN HOLE (docs/mysql.md, "Known holes"): ciport does not filter SQL. MySQL 8 closes it with
// `ALTER USER … PASSWORD REQUIRE CURRENT` on the static account (the job never holds the current
// password); MariaDB has no equivalent — use per-session users (credentials.dynamic), where a
// re-passworded user serves one session and is dropped at its end, and let the static account
// log in only from the exit's address. This turns red if a job can no longer do it.
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostileStream, makeTargetUser, startExit, type TestExit } from './mysql-raw-exit.js';

let target: Awaited<ReturnType<typeof makeTargetUser>>;
let exit: TestExit;

beforeAll(async () => {
  target = await makeTargetUser();
  exit = await startExit(target.upstream, 'ses_repassword');
});
afterAll(async () => {
  await exit?.close();
  await target?.drop();
});

describe('mysql exit: a static user shared by every session of a target', () => {
  it.fails("a job cannot change the shared account's password", async () => {
    const job = await HostileStream.open(exit.port);
    expect((await job.read()).payload[0]).toBe(0x00);
    job.query("SET PASSWORD = PASSWORD('chosen-by-the-job')");
    const answer = await job.read();
    job.close();
    try {
      // The next session's connection through the same exit still logs in.
      const next = await HostileStream.open(exit.port);
      const ok = await next.read();
      next.close();
      expect(answer.payload[0]).toBe(0xff);
      expect(ok.payload[0]).toBe(0x00);
    } finally {
      const root = await mysql.createConnection({ host: '127.0.0.1', port: 3306, user: 'root' });
      await root.query(`SET PASSWORD FOR '${target.user}'@'127.0.0.1' = PASSWORD(?)`, [
        target.upstream.password,
      ]);
      await root.end();
    }
  });
});
