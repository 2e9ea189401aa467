// The aws exit on its own: served over a real loopback socket (the host's stream), calling the
// loopback AWS fixture through the SDK (AWS_ENDPOINT_URL), or an STS that is down. Checks the
// answer's shape, one AssumeRole per session (concurrent requests share it), the refresh rule,
// the request bounds, and that failures are stable codes with STS's code, never its message.
// (A process without AWS credentials: no-credentials.test.ts, its own process.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsTarget } from '../../../src/config/targets/aws.js';
import { targetSchema } from '../../../src/config/targets/index.js';
import { REFRESH_BEFORE_MS, RoleSessions } from '../../../src/exits/aws/assume.js';
import { awsExitDefinition } from '../../../src/exits/aws/definition.js';
import type { AwsCredentialsEvent } from '../../../src/exits/aws/events.js';
import type { ExitConnection, ExitSessionFacts, StreamExit } from '../../../src/exits/contract.js';
import { type AwsFixture, startAwsFixture } from '../../fixtures/aws.js';
import { freePort } from '../../fixtures/free-port.js';
import { serveOnce } from './serve-once.js';

const ROLE = 'arn:aws:iam::123456789012:role/deploy';
let aws: AwsFixture;

beforeAll(async () => {
  aws = await startAwsFixture({ roles: { [ROLE]: 3600 } });
  Object.assign(process.env, aws.env());
});
afterAll(() => aws.stop());

const target = (extra: object = {}): AwsTarget =>
  targetSchema.parse({ name: 'deploy', protocol: 'aws', role_arn: ROLE, ...extra }) as AwsTarget;

const facts = (extra: Partial<ExitSessionFacts> = {}): ExitSessionFacts => ({
  expiresAt: Date.now() + 30 * 60_000,
  principal: {
    issuer: 'gitlab',
    subject: 'project_path:acme/ledger:ref_type:branch:ref:main',
    project: 'acme/ledger',
    project_id: '61577203',
    ref: 'main',
    pipeline: '1519139981',
    job: '8222997048',
    job_url: null,
  },
  ...extra,
});

const request = (exit: StreamExit, bytes: string, connection: Partial<ExitConnection> = {}) =>
  serveOnce(exit, bytes, { facts: facts(), ...connection });

const GET = 'GET /v1/aws/credentials HTTP/1.1\r\nHost: ciport\r\nConnection: close\r\n\r\n';

describe('aws exit', () => {
  it('answers the container-credentials shape; concurrent requests of a session share one AssumeRole', async () => {
    const exit = awsExitDefinition().build(target(), { connectTimeoutMs: 1000 }) as StreamExit;
    const events: AwsCredentialsEvent[] = [];
    const before = aws.assumed.length;
    const answers = await Promise.all(
      Array.from({ length: 8 }, () =>
        request(exit, GET, { session: { id: 'ses_shared' }, onCredentials: (e) => events.push(e) }),
      ),
    );
    expect(aws.assumed.length - before).toBe(1);
    const bodies = answers.map((a) => {
      expect(a.answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(a.answer).toMatch(/\r\nCache-Control: no-store\r\n/);
      return JSON.parse(a.answer.split('\r\n\r\n')[1] ?? '');
    });
    const issued = aws.assumed.at(-1)?.issued;
    for (const b of bodies) {
      expect(b).toEqual({
        AccessKeyId: issued?.accessKeyId,
        SecretAccessKey: issued?.secretAccessKey,
        Token: issued?.sessionToken,
        Expiration: new Date(issued?.expiresAt ?? 0).toISOString().replace(/\.\d{3}Z$/, 'Z'),
        RoleArn: ROLE,
      });
    }
    expect(events).toHaveLength(1);
    expect(JSON.stringify(events)).not.toContain(issued?.secretAccessKey);
    expect(JSON.stringify(events)).not.toContain(issued?.sessionToken);
    // The session ended: never served again, from the cache or from a new AssumeRole.
    exit.sessionEnded?.('ses_shared');
    const late = await request(exit, GET, { session: { id: 'ses_shared' } });
    expect(late.answer).toContain('CIPORT_E_SESSION_ENDED');
    expect(aws.assumed.length - before).toBe(1);
    exit.close();
  });

  it('refuses non-GET, bodies, oversized and malformed heads with stable codes, before any AssumeRole', async () => {
    const exit = awsExitDefinition().build(target(), { connectTimeoutMs: 1000 }) as StreamExit;
    const before = aws.assumed.length;
    const post = await request(exit, 'POST /v1/aws/credentials HTTP/1.1\r\nContent-Length: 0\r\n\r\n');
    expect(post.answer).toMatch(/^HTTP\/1\.1 405 /);
    expect(post.answer).toContain('CIPORT_E_METHOD_NOT_ALLOWED');
    const body = await request(exit, 'GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc');
    expect(body.answer).toContain('CIPORT_E_AWS_BAD_REQUEST');
    const big = await request(exit, `GET / HTTP/1.1\r\nX: ${'a'.repeat(10_000)}\r\n\r\n`);
    expect(big.answer).toMatch(/^HTTP\/1\.1 400 /);
    const junk = await request(exit, '\x16\x03\x01 not http\r\n\r\n');
    expect(junk.answer).toContain('CIPORT_E_AWS_BAD_REQUEST');
    expect(aws.assumed.length).toBe(before);
    exit.close();
  });

  it('STS down: 502 CIPORT_E_AWS_ASSUME_ROLE_FAILED with the network code; an audited failure', async () => {
    const saved = process.env.AWS_ENDPOINT_URL_STS;
    process.env.AWS_ENDPOINT_URL_STS = `http://127.0.0.1:${await freePort()}`;
    try {
      const exit = awsExitDefinition().build(target(), { connectTimeoutMs: 1000 }) as StreamExit;
      const events: AwsCredentialsEvent[] = [];
      const r = await request(exit, GET, { onCredentials: (e) => events.push(e) });
      expect(r.answer).toMatch(/^HTTP\/1\.1 502 /);
      expect(r.answer).toContain('ciport-error: CIPORT_E_AWS_ASSUME_ROLE_FAILED');
      expect(r.outcome).toMatchObject({ code: 'CIPORT_E_AWS_ASSUME_ROLE_FAILED' });
      expect(events).toEqual([
        {
          type: 'aws.credentials_failed',
          role_arn: ROLE,
          code: 'CIPORT_E_AWS_ASSUME_ROLE_FAILED',
          sts_code: 'ECONNREFUSED',
        },
      ]);
      exit.close();
    } finally {
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_STS;
      else process.env.AWS_ENDPOINT_URL_STS = saved;
    }
  });
});

describe('role sessions: duration and refresh', () => {
  const fake = () => {
    const calls: { DurationSeconds: number; Policy: string }[] = [];
    let now = Date.parse('2026-06-01T10:00:00Z');
    const sessions = new RoleSessions(
      target({ duration: '1h' }),
      async (input) => {
        calls.push(input);
        return {
          AccessKeyId: `ASIA${calls.length}`,
          SecretAccessKey: 's',
          SessionToken: 't',
          Expiration: new Date(now + input.DurationSeconds * 1000),
        };
      },
      () => now,
    );
    return { calls, sessions, at: () => now, advance: (ms: number) => (now += ms) };
  };

  it('cuts the duration to the session, never below 900 s, and re-assumes only with < 5 min left', async () => {
    const f = fake();
    const long = { ...facts(), expiresAt: f.at() + 3 * 3_600_000 };
    expect((await f.sessions.get('a', long)).AccessKeyId).toBe('ASIA1');
    expect(f.calls[0]?.DurationSeconds).toBe(3600);
    f.advance(3_600_000 - REFRESH_BEFORE_MS - 1000);
    expect((await f.sessions.get('a', long)).AccessKeyId).toBe('ASIA1');
    f.advance(2000);
    expect((await f.sessions.get('a', long)).AccessKeyId).toBe('ASIA2');
    const short = { ...facts(), expiresAt: f.at() + 20 * 60_000 };
    await f.sessions.get('b', short);
    expect(f.calls[2]?.DurationSeconds).toBe(1200);
    const ending = { ...facts(), expiresAt: f.at() + 60_000 };
    await f.sessions.get('c', ending);
    expect(f.calls[3]?.DurationSeconds).toBe(900);
    const deny = JSON.parse(f.calls[3]?.Policy ?? '{}').Statement.at(-1);
    expect(deny.Condition.DateGreaterThan['aws:CurrentTime']).toBe(
      new Date(ending.expiresAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    );
    expect(JSON.parse(f.calls[3]?.Policy ?? '{}').Statement[0]).toMatchObject({
      Effect: 'Allow',
      Action: '*',
    });
  });
});
