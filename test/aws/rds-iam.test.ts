// Issue 15, "Databases with IAM authentication": postgres and mysql targets with
// `credentials: {aws_rds_iam: …}`, through a real gateway session, against stand-ins for RDS
// (test/fixtures/rds-standin.ts: TLS, a cleartext password asked for exactly as RDS does for an
// IAM user, then the real local PostgreSQL / MariaDB). The token the exit sent must be what
// @aws-sdk/rds-signer makes for the same inputs at the same second, and must verify as a
// presigned `rds-db:connect` URL against the AWS fixture; psql and mysql run real statements.
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { Signer } from '@aws-sdk/rds-signer';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { makePki } from '../exits/http/helpers.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { type JobSession, openJobSession } from '../fixtures/job-session.js';
import { type RdsStandIn, startRdsMysql, startRdsPostgres } from '../fixtures/rds-standin.js';
import { waitFor } from '../fixtures/wait-for.js';

const ROLE = 'arn:aws:iam::123456789012:role/db-connect';
const IAM_USER = 'app_iam';

let aws: AwsFixture;
let pg: RdsStandIn;
let my: RdsStandIn;
let session: JobSession;
const logLines: string[] = [];

function sh(script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile('sh', ['-c', script], { env: session.jobEnv() }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

beforeAll(async () => {
  aws = await startAwsFixture({ roles: { [ROLE]: 3600 } });
  Object.assign(process.env, aws.env());
  const pki = makePki();
  pg = await startRdsPostgres({ tls: { key: pki.keyPem, cert: pki.certPem }, upstreamUser: 'postgres' });
  my = await startRdsMysql({ tls: { key: pki.keyPem, cert: pki.certPem } });
  // The session's dir does not exist yet: the CA goes next to the test's temp files.
  const caFile = join(process.env.TMPDIR ?? '/tmp', `ciport-rds-ca-${process.pid}.pem`);
  writeFileSync(caFile, pki.caPem);
  const tls = { ca: { file: caFile }, servername: 'localhost' };
  session = await openJobSession(
    [
      {
        name: 'pg',
        protocol: 'postgres',
        address: `127.0.0.1:${pg.port}`,
        database: 'postgres',
        tls,
        credentials: { aws_rds_iam: { user: IAM_USER, region: 'eu-west-1' } },
      },
      {
        name: 'my',
        protocol: 'mysql',
        address: `127.0.0.1:${my.port}`,
        tls,
        credentials: { aws_rds_iam: { user: IAM_USER, region: 'eu-west-1', role: ROLE } },
      },
    ],
    logLines,
  );
}, 120_000);

afterAll(async () => {
  await session?.close();
  await pg?.close();
  await my?.close();
  await aws?.stop();
});

/** What @aws-sdk/rds-signer makes for these inputs at the second the token says it was signed. */
async function expectedToken(
  token: string,
  port: number,
  credentials: { accessKeyId: string; secretAccessKey: string; sessionToken?: string | undefined },
): Promise<string> {
  const amzDate = new URL(`https://${token}`).searchParams.get('X-Amz-Date') ?? '';
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!m) throw new Error(`no X-Amz-Date in the token: ${amzDate}`);
  const at = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  vi.useFakeTimers({ toFake: ['Date'] });
  try {
    vi.setSystemTime(at);
    return await new Signer({
      hostname: 'localhost',
      port,
      username: IAM_USER,
      region: 'eu-west-1',
      credentials,
    }).getAuthToken();
  } finally {
    vi.useRealTimers();
  }
}

/** The token presented to the AWS fixture as the presigned GET it is: its verdict. */
function verifyAsPresigned(token: string): Promise<{ status: number; body: string }> {
  const slash = token.indexOf('/');
  const fixture = new URL(aws.url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: fixture.hostname,
        port: fixture.port,
        method: 'GET',
        path: token.slice(slash),
        headers: { host: token.slice(0, slash) },
      },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('RDS IAM authentication at the exit', () => {
  it('postgres: psql works end to end; the token is rds-signer’s, sent in cleartext inside TLS', async () => {
    const r = await sh(`psql -v ON_ERROR_STOP=1 -tAc "select 'through-' || 42"`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('through-42');
    expect(pg.logins).toHaveLength(1);
    const login = pg.logins[0]!;
    expect(login).toMatchObject({ user: IAM_USER, tls: true });
    expect(login.password).toMatch(
      new RegExp(`^localhost:${pg.port}/\\?Action=connect&DBUser=${IAM_USER}&X-Amz-`),
    );
    expect(login.password).toBe(await expectedToken(login.password, pg.port, aws.base));
    const verdict = await verifyAsPresigned(login.password);
    expect(verdict.status).toBe(200);
    expect(JSON.parse(verdict.body)).toMatchObject({ caller: aws.base.arn, service: 'rds-db' });
    // The job never saw it.
    expect(JSON.stringify(session.vars)).not.toContain(login.password);
  });

  it('postgres: each upstream connection gets a token of its own making', async () => {
    const r = await sh(`psql -tAc 'select 1' && psql -tAc 'select 2'`);
    expect(r.stdout.trim().split('\n')).toEqual(['1', '2']);
    expect(pg.logins).toHaveLength(3);
  });

  it('mysql (with `role`): the mysql client works end to end; the token is the assumed role’s', async () => {
    const r = await sh(`mysql -u "$MYSQL_USER" -N -B -e "select concat('through-', 42)"`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('through-42');
    expect(my.logins).toHaveLength(1);
    const login = my.logins[0]!;
    expect(login).toMatchObject({ user: IAM_USER, tls: true });
    const assumed = aws.assumed.filter((a) => a.roleArn === ROLE);
    expect(assumed).toHaveLength(1);
    expect(assumed[0]?.roleSessionName).toBe('ciport-my');
    expect(login.password).toBe(await expectedToken(login.password, my.port, assumed[0]!.issued));
    expect(login.password).toContain('X-Amz-Security-Token=');
    const verdict = await verifyAsPresigned(login.password);
    expect(verdict.status).toBe(200);
    expect(JSON.parse(verdict.body).caller).toBe(
      'arn:aws:sts::123456789012:assumed-role/db-connect/ciport-my',
    );
  });

  it('mysql: a statement left running by a killed client is stopped by a KILL logging in with a fresh token', async () => {
    const marker = `ciport_rds_kill_${process.pid}`;
    const running = () =>
      new Promise<boolean>((resolve) =>
        execFile(
          'mysql',
          [
            '-h',
            '127.0.0.1',
            '-u',
            'root',
            '-N',
            '-B',
            '-e',
            'select info from information_schema.processlist',
          ],
          { env: { PATH: process.env.PATH ?? '' } },
          (_err, out) => resolve(String(out).includes(marker)),
        ),
      );
    const before = my.logins.length;
    const client = spawn(
      'sh',
      ['-c', `exec mysql -u "$MYSQL_USER" -N -B -e "select sleep(60) as ${marker}"`],
      {
        env: session.jobEnv(),
        stdio: 'ignore',
      },
    );
    await waitFor(async () => ((await running()) ? true : undefined), 10_000, 'the statement upstream');
    // A token made a second later differs (X-Amz-Date): the KILL's must not be the old one.
    await new Promise((r) => setTimeout(r, 1100));
    client.kill('SIGKILL');
    await waitFor(async () => ((await running()) ? undefined : true), 15_000, 'the statement killed');
    const logins = my.logins.slice(before);
    expect(logins).toHaveLength(2);
    expect(logins[1]?.user).toBe(IAM_USER);
    expect(logins[1]?.password).not.toBe(logins[0]?.password);
  });

  it('no token or AWS secret in the audit or the logs', async () => {
    const everything =
      JSON.stringify(await session.gateway.store.auditEvents({ limit: 10_000 })) + logLines.join('\n');
    for (const login of [...pg.logins, ...my.logins]) {
      expect(everything).not.toContain(login.password);
      // The signature alone would do: a token is a bearer credential for 15 minutes.
      expect(everything).not.toContain(
        new URL(`https://${login.password}`).searchParams.get('X-Amz-Signature'),
      );
    }
    expect(everything).not.toContain(aws.base.secretAccessKey);
  });
});
