// deploy/postgres/ciport-store.sql sends the store role's password in the text of
// `CREATE ROLE … PASSWORD '…'`. A server that logs DDL (log_statement = ddl or all, a common
// audit setting) writes that statement, password included, to its log in clear: readable by
// whoever reads the server's logs or ships them elsewhere. The script runs as a superuser, so it
// can turn statement logging off for its own session (SET log_statement = none), or send a
// SCRAM verifier instead of the password.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { baseEnv, ROOT } from '../fixtures/cli.js';
import { PG_ADMIN_URL } from '../store/harness.js';

const SQL = join(ROOT, 'deploy/postgres/ciport-store.sql');
const name = `ciport_pwlog_${randomBytes(4).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'ciport-pwlog-'));

async function admin<T extends pg.QueryResultRow>(text: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL });
  await client.connect();
  try {
    return (await client.query<T>(text)).rows;
  } finally {
    await client.end();
  }
}

/** The server's log: pg_current_logfile() with the logging collector, else Debian's stderr log. */
async function serverLog(): Promise<string> {
  const [{ file, dataDir, version }] = (await admin<{
    file: string | null;
    dataDir: string;
    version: string;
  }>(
    "select pg_current_logfile() as file, current_setting('data_directory') as \"dataDir\", current_setting('server_version_num') as version",
  )) as [{ file: string | null; dataDir: string; version: string }];
  const path = file
    ? file.startsWith('/')
      ? file
      : join(dataDir, file)
    : `/var/log/postgresql/postgresql-${Math.floor(Number(version) / 10000)}-main.log`;
  expect(existsSync(path), `the server log (${path}) is readable here`).toBe(true);
  return path;
}

afterAll(async () => {
  await admin(`drop database if exists "${name}" with (force)`);
  await admin(`drop role if exists "${name}"`);
  rmSync(dir, { recursive: true, force: true });
});

describe('the store role script on a server that logs DDL', () => {
  it('does not put the role password in the server log', async () => {
    const log = await serverLog();
    const password = `pwlog${randomBytes(12).toString('hex')}`;
    const pwFile = join(dir, 'pw');
    writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
    const r = spawnSync(
      'psql',
      ['-X', '-v', 'ON_ERROR_STOP=1', '-v', `role=${name}`, '-v', `db=${name}`, '-f', SQL, PG_ADMIN_URL],
      {
        encoding: 'utf8',
        env: baseEnv({ CIPORT_DB_PASSWORD_FILE: pwFile, PGOPTIONS: '-c log_statement=ddl' }),
      },
    );
    expect(r.status, r.stderr).toBe(0);
    // The server writes its log asynchronously to the file.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(readFileSync(log, 'utf8').includes(password), 'the password is in the server log').toBe(false);
  }, 60_000);
});
