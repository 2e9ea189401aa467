// Issue 15, hostile: an `aws_sigv4` http target whose credentials cannot be had (STS is down:
// its endpoint refuses connections) answers 502 CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE, request
// after request, without crashing the gateway; its other targets keep working, and no AWS secret
// reaches the logs, the audit or the job.
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { freePort } from '../fixtures/free-port.js';
import { type JobSession, openJobSession } from '../fixtures/job-session.js';

let aws: AwsFixture;
let session: JobSession;
const logLines: string[] = [];

function curl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('curl', ['-sS', '-i', ...args], { env: session.jobEnv() }, (err, out) =>
      err ? reject(err) : resolve(out),
    ),
  );
}

beforeAll(async () => {
  aws = await startAwsFixture();
  // STS is down: nothing listens where the SDK's endpoint resolution sends STS calls.
  Object.assign(process.env, aws.env(), { AWS_ENDPOINT_URL_STS: `http://127.0.0.1:${await freePort()}` });
  const upstream = new URL(aws.url).host;
  session = await openJobSession(
    [
      {
        name: 'search',
        protocol: 'http',
        address: upstream,
        credentials: {
          aws_sigv4: { service: 'es', region: 'eu-west-1', role: 'arn:aws:iam::123456789012:role/search' },
        },
      },
      {
        name: 'api',
        protocol: 'http',
        address: upstream,
        credentials: { aws_sigv4: { service: 'execute-api', region: 'eu-west-1' } },
      },
    ],
    logLines,
  );
}, 120_000);

afterAll(async () => {
  await session?.close();
  await aws?.stop();
});

describe('aws_sigv4 with STS down', () => {
  it('answers 502 CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE each time, and the gateway serves on', async () => {
    for (let i = 0; i < 3; i++) {
      const out = await curl([
        '-X',
        'POST',
        '--data-binary',
        '{"q":1}',
        `${session.urlOf('search')}/_search`,
      ]);
      expect(out).toMatch(/^HTTP\/1\.1 502 /);
      expect(out).toMatch(/ciport-error: CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE/i);
      expect(out).toMatch(/role arn:aws:iam::123456789012:role\/search could not be obtained/);
    }
    expect(aws.requests.filter((r) => r.service === 'es')).toEqual([]);
    // The target signed with the exit's own credentials needs no STS: it works.
    const ok = await curl([`${session.urlOf('api')}/prod/ping`]);
    expect(ok).toMatch(/^HTTP\/1\.1 200 /);
    expect(ok).toContain(aws.base.arn);
  });

  it('the failures are audited with the code; no secret in the audit, the logs or the job env', async () => {
    const events = (await session.gateway.store.auditEvents({ limit: 10_000 })).filter(
      (e) => e.type === 'http.request',
    );
    const failed = events.filter(
      (e) => (e.data as { error?: string }).error === 'CIPORT_E_AWS_CREDENTIALS_UNAVAILABLE',
    );
    expect(failed.map((e) => (e.data as { status: number }).status)).toEqual([502, 502, 502]);
    const everything = [
      JSON.stringify(await session.gateway.store.auditEvents({ limit: 10_000 })),
      logLines.join('\n'),
      JSON.stringify(session.vars),
    ].join('\n');
    expect(everything).not.toContain(aws.base.secretAccessKey);
  });
});
