import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { auditedStatements } from '../../fixtures/queries.js';
import { type Driver, expectMd5Series, holdStatement } from '../driver.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
/** The 1 MiB value the download query makes: md5 of 1..32768, concatenated. */
const DOWNLOAD_SQL = "select string_agg(md5(i::text), '' order by i) from generate_series(1, 32768) i";

export const postgresDriver: Driver = {
  protocol: 'postgres',
  target: (name, up) => ({
    name,
    protocol: 'postgres',
    address: '127.0.0.1:5432',
    database: 'test',
    credentials: { user: up.pgRole, password: { env: 'PG_PW' } },
  }),

  async attempt(job, up) {
    const r = await job.run(['psql', '-tAc', 'select current_user']);
    return { ok: r.code === 0 && r.stdout.trim() === up.pgRole, detail: `${r.code} ${r.stdout}${r.stderr}` };
  },

  async dataBothWays(job) {
    const down = await job.run(['psql', '-tAc', DOWNLOAD_SQL]);
    expect(down.code).toBe(0);
    expectMd5Series(down.stdout);

    const upload = randomBytes(512 * 1024).toString('hex');
    const file = join(job.dir, 'upload.sql');
    writeFileSync(
      file,
      `create temp table t (v text);\ninsert into t values ('${upload}');\n` +
        "select length(v) || ' ' || encode(sha256(convert_to(v, 'UTF8')), 'hex') from t;\n",
    );
    const up = await job.run(['psql', '-v', 'ON_ERROR_STOP=1', '-tAq', '-f', file]);
    expect(up.stderr).toBe('');
    expect(up.stdout.trim()).toBe(`${upload.length} ${sha(upload)}`);
  },

  async injectedCredential(job, up) {
    const r = await job.run(['psql', '-tAc', "select current_user || ' ' || session_user"]);
    expect(r).toMatchObject({ code: 0, stdout: `${up.pgRole} ${up.pgRole}\n` });
    // The job authenticated to its port with a one-time password, not the role's.
    expect(job.exported.PGPASSWORD).toMatch(/.{20,}/);
    expect(job.exported.PGPASSWORD).not.toBe(up.secrets.PG_PW);
  },

  auditTraffic(events, exit) {
    const statements = auditedStatements(events);
    expect(statements.map((s) => s.statement)).toContain('select current_user');
    for (const s of statements) expect(s.event.data).toMatchObject({ exit, database: 'test' });
  },

  hold(job, up) {
    const marker = `contract_hold_${randomBytes(4).toString('hex')}`;
    return holdStatement(
      ['psql', '-tAc', `select pg_sleep(60) as ${marker}`],
      job.env,
      async () =>
        (
          await up.pgAdmin(
            `select count(*) from pg_stat_activity where usename = '${up.pgRole}' and state = 'active' and query like '%as ${marker}'`,
          )
        ).trim() === '1',
      'pg_sleep to run upstream',
    );
  },

  async upstreamOpen(up) {
    return Number(
      (await up.pgAdmin(`select count(*) from pg_stat_activity where usename = '${up.pgRole}'`)).trim(),
    );
  },
};
