// Issue 15, "AWS APIs without handing out credentials", through a real gateway session: a job
// opens http targets with `credentials: {aws_sigv4: …}` with `ciport open` and uses curl against
// the exported URLs. The upstream is the AWS fixture, which verifies every signature like AWS
// would; the gateway's AWS credentials come from its environment (the SDK's provider chain), the
// job never has any.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { type JobSession, openJobSession } from '../fixtures/job-session.js';
import { waitFor } from '../fixtures/wait-for.js';

const ROLE = 'arn:aws:iam::123456789012:role/search-writer';

let aws: AwsFixture;
let session: JobSession;
const logLines: string[] = [];
const urlOf = (target: string) => session.urlOf(target);

function curl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('curl', ['-sS', ...args], { env: session.jobEnv(), maxBuffer: 64 << 20 }, (err, out) =>
      err ? reject(err) : resolve(out),
    ),
  );
}

beforeAll(async () => {
  aws = await startAwsFixture({ roles: { [ROLE]: 3600 } });
  // The gateway runs in this process: its SDK provider chain reads this environment.
  Object.assign(process.env, aws.env());
  const upstream = new URL(aws.url).host;
  session = await openJobSession(
    [
      {
        name: 'api',
        protocol: 'http',
        address: upstream,
        credentials: { aws_sigv4: { service: 'execute-api', region: 'eu-west-1' } },
      },
      {
        name: 'search',
        protocol: 'http',
        address: upstream,
        credentials: { aws_sigv4: { service: 'es', region: 'eu-west-1', role: ROLE } },
      },
    ],
    logLines,
  );
}, 120_000);

afterAll(async () => {
  await session?.close();
  await aws?.stop();
});

describe('aws_sigv4 through a gateway session', () => {
  it('the job has no AWS credentials', () => {
    expect(Object.keys(session.vars).filter((k) => k.startsWith('AWS_'))).toEqual([]);
    expect(JSON.stringify(session.vars)).not.toContain(aws.base.secretAccessKey);
  });

  it('curl GET and POST verify as the gateway’s identity; the job’s own signature never reaches AWS', async () => {
    const get = JSON.parse(
      await curl([
        '-H',
        'Authorization: AWS4-HMAC-SHA256 Credential=AKIAJOBJOB/20200101/eu-west-1/execute-api/aws4_request, SignedHeaders=host, Signature=00',
        '-H',
        'X-Amz-Security-Token: job-token',
        '-H',
        'X-Amz-Date: 20200101T000000Z',
        `${urlOf('api')}/prod/pets?limit=2`,
      ]),
    );
    expect(get).toMatchObject({ caller: aws.base.arn, service: 'execute-api', path: '/prod/pets' });
    const seen = aws.verified('execute-api').at(-1);
    expect(seen?.headers['x-amz-security-token']).toBeUndefined();
    expect(seen?.headers['x-amz-date']).not.toBe('20200101T000000Z');
    expect(JSON.stringify(seen?.headers)).not.toContain('AKIAJOBJOB');

    const post = JSON.parse(
      await curl([
        '-X',
        'POST',
        '-H',
        'Content-Type: application/json',
        '--data-binary',
        '{"name":"rex"}',
        `${urlOf('api')}/prod/pets`,
      ]),
    );
    expect(post).toMatchObject({ caller: aws.base.arn, method: 'POST', body: '{"name":"rex"}' });
  });

  it('with `role`, AWS sees the assumed role, assumed once', async () => {
    for (let i = 0; i < 3; i++) {
      const out = JSON.parse(
        await curl(['-X', 'POST', '--data-binary', `{"query":${i}}`, `${urlOf('search')}/logs/_search`]),
      );
      expect(out).toMatchObject({
        caller: 'arn:aws:sts::123456789012:assumed-role/search-writer/ciport-search',
        service: 'es',
        body: `{"query":${i}}`,
      });
    }
    expect(aws.assumed.filter((a) => a.roleArn === ROLE)).toHaveLength(1);
  });

  it('a body over 8 MiB gets 413 CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE', async () => {
    const file = join(session.dir, 'big.bin');
    writeFileSync(file, Buffer.alloc(8 * 1024 * 1024 + 1, 'q'));
    const before = aws.requests.length;
    const out = await curl(['-i', '-X', 'PUT', '--data-binary', `@${file}`, `${urlOf('api')}/prod/blob`]);
    expect(out).toMatch(/^HTTP\/1\.1 413 /m);
    expect(out).toMatch(/ciport-error: CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE/i);
    expect(aws.requests.length).toBe(before);
  });

  it('hundreds of requests on kept-alive connections all verify', async () => {
    const before = aws.verified('execute-api').length;
    const urls = Array.from({ length: 150 }, (_, i) => [
      '-o',
      '/dev/null',
      `${urlOf('api')}/prod/items/${i}?page=${i}`,
    ]).flat();
    // One curl process per batch reuses its connection: num_connects is 1 for the first only.
    const fmt = ['-w', '%{http_code} %{num_connects}\\n'];
    const gets = (await curl([...fmt, ...urls])).trim().split('\n');
    const posts = (await curl([...fmt, '-X', 'POST', '--data-binary', 'payload', ...urls]))
      .trim()
      .split('\n');
    for (const lines of [gets, posts]) {
      expect(lines).toHaveLength(150);
      expect(lines.filter((l) => !l.startsWith('200 '))).toEqual([]);
      expect(lines.reduce((n, l) => n + Number(l.split(' ')[1]), 0)).toBe(1);
    }
    expect(aws.verified('execute-api').length - before).toBe(300);
  });

  it('each request is audited as http.request; no AWS secret in the audit or the logs', async () => {
    const { gateway } = session;
    const [open] = await gateway.manager.list();
    const events = await waitFor(
      async () => {
        const all = (await gateway.store.auditEvents({ limit: 100_000 })).filter(
          (e) => e.type === 'http.request' && (e.data as { session?: string }).session === open?.id,
        );
        return all.length >= 306 ? all : undefined;
      },
      10_000,
      'the http.request events',
    );
    const refused = events.filter((e) => (e.data as { status: number }).status === 413);
    expect(refused.map((e) => (e.data as { error?: string }).error)).toEqual([
      'CIPORT_E_AWS_SIGV4_BODY_TOO_LARGE',
    ]);
    const secrets = [
      aws.base.secretAccessKey,
      ...aws.assumed.flatMap((a) => [a.issued.secretAccessKey, a.issued.sessionToken ?? '']),
    ];
    const all = JSON.stringify(await gateway.store.auditEvents({ limit: 100_000 })) + logLines.join('\n');
    for (const s of secrets) expect(all).not.toContain(s);
  });
});
