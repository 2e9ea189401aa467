import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { auditedStatements } from '../../fixtures/queries.js';
import { type Driver, expectMd5Series, holdStatement, type JobPort } from '../driver.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
/** 1 MiB: the md5 of 1..32768 concatenated, built by the server. */
const DOWNLOAD_SQL =
  'WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 32768) ' +
  'SELECT GROUP_CONCAT(MD5(i) ORDER BY i SEPARATOR "") FROM n';

/** The job's mariadb CLI: host, port and password from the env, the user on its command line. */
function cli(job: JobPort, sql: string, extra: string[] = []) {
  return job.run(['mariadb', '-u', job.env.MYSQL_USER ?? '', '-N', '-B', ...extra, '-e', sql]);
}

export const mysqlDriver: Driver = {
  protocol: 'mysql',
  target: (name, up) => ({
    name,
    protocol: 'mysql',
    address: '127.0.0.1:3306',
    database: up.mysqlDb,
    credentials: { user: up.mysqlUser, password: { env: 'MYSQL_PW' } },
  }),

  async attempt(job, up) {
    const r = await cli(job, 'SELECT CURRENT_USER()');
    return {
      ok: r.code === 0 && r.stdout.trim() === `${up.mysqlUser}@127.0.0.1`,
      detail: `${r.code} ${r.stdout}${r.stderr}`,
    };
  },

  async dataBothWays(job, up) {
    const down = await cli(
      job,
      `SET SESSION group_concat_max_len = 2097152, max_recursive_iterations = 100000; ${DOWNLOAD_SQL}`,
    );
    expect(down.stderr).toBe('');
    expectMd5Series(down.stdout);

    const upload = randomBytes(512 * 1024).toString('hex');
    const file = join(job.dir, 'upload.sql');
    writeFileSync(
      file,
      `CREATE TEMPORARY TABLE t (v LONGTEXT);\nINSERT INTO t VALUES ('${upload}');\n` +
        'SELECT CONCAT(LENGTH(v), " ", SHA2(v, 256)) FROM t;\n',
    );
    const r = await job.run(['sh', '-c', `mariadb -u "$MYSQL_USER" -N -B ${up.mysqlDb} < "$1"`, 'sh', file]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(`${upload.length} ${sha(upload)}`);
  },

  async injectedCredential(job, up) {
    const r = await cli(job, 'SELECT USER()');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('@')[0]).toBe(up.mysqlUser);
    // The job logged in to its port with a one-time password, not the user's.
    expect(job.exported.MYSQL_PWD).toMatch(/.{20,}/);
    expect(job.exported.MYSQL_PWD).not.toBe(up.secrets.MYSQL_PW);
    // The real password works only straight to the server, never through what the job holds.
    expect(Object.values(job.env).join('\n')).not.toContain(up.secrets.MYSQL_PW);
  },

  auditTraffic(events, exit) {
    const statements = auditedStatements(events);
    expect(statements.map((s) => s.statement)).toContain('SELECT CURRENT_USER()');
    for (const s of statements) expect(s.event.data).toMatchObject({ exit });
    // Reported once the server answered (docs/mysql.md, "Query events").
    expect(statements.find((s) => s.statement === 'SELECT CURRENT_USER()')?.outcome).toBe('ok');
  },

  auditHeld(events) {
    // Cut while it ran, never answered: in the audit all the same, and said so.
    const held = auditedStatements(events).filter((s) =>
      s.statement.startsWith('SELECT SLEEP(60) AS contract_hold_'),
    );
    expect(held.map((s) => s.outcome)).toEqual(['unanswered']);
  },

  hold(job, up) {
    const marker = `contract_hold_${randomBytes(4).toString('hex')}`;
    return holdStatement(
      ['mariadb', '-u', job.env.MYSQL_USER ?? '', '-N', '-B', '-e', `SELECT SLEEP(60) AS ${marker}`],
      job.env,
      async () =>
        (
          await up.mysqlAdmin(
            `SELECT COUNT(*) FROM information_schema.processlist WHERE user = '${up.mysqlUser}' AND info LIKE '%AS ${marker}'`,
          )
        ).trim() === '1',
      'SLEEP to run upstream',
    );
  },

  async upstreamOpen(up) {
    return Number(
      (
        await up.mysqlAdmin(
          `SELECT COUNT(*) FROM information_schema.processlist WHERE user = '${up.mysqlUser}'`,
        )
      ).trim(),
    );
  },
};
