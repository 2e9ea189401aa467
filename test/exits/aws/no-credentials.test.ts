// The aws exit in a process whose AWS provider chain finds nothing (no env keys, no profile, no
// metadata service): the job's request is answered 502 CIPORT_E_AWS_NO_CREDENTIALS, audited as a
// failure, and nothing crashes. Its own file: the chain is resolved once per process.
import { expect, it } from 'vitest';
import type { AwsTarget } from '../../../src/config/targets/aws.js';
import { targetSchema } from '../../../src/config/targets/index.js';
import { awsExitDefinition } from '../../../src/exits/aws/definition.js';
import type { AwsCredentialsEvent } from '../../../src/exits/aws/events.js';
import type { StreamExit } from '../../../src/exits/contract.js';
import { serveOnce } from './serve-once.js';

for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
Object.assign(process.env, {
  AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials',
  AWS_CONFIG_FILE: '/nonexistent/config',
  AWS_EC2_METADATA_DISABLED: 'true',
});

it('answers 502 CIPORT_E_AWS_NO_CREDENTIALS and reports the failure', async () => {
  const target = targetSchema.parse({
    name: 'deploy',
    protocol: 'aws',
    role_arn: 'arn:aws:iam::123456789012:role/deploy',
  }) as AwsTarget;
  const exit = awsExitDefinition().build(target, { connectTimeoutMs: 1000 }) as StreamExit;
  const events: AwsCredentialsEvent[] = [];
  const { answer, outcome } = await serveOnce(
    exit,
    'GET /v1/aws/credentials HTTP/1.1\r\nHost: ciport\r\n\r\n',
    {
      session: { id: 'ses_1' },
      facts: {
        expiresAt: Date.now() + 3_600_000,
        principal: {
          issuer: 'gl',
          subject: 's',
          project: 'p',
          ref: null,
          pipeline: null,
          job: '1',
          job_url: null,
        },
      },
      onCredentials: (e) => events.push(e),
    },
  );
  expect(answer).toMatch(/^HTTP\/1\.1 502 /);
  expect(answer).toContain('ciport-error: CIPORT_E_AWS_NO_CREDENTIALS');
  expect(outcome).toMatchObject({ code: 'CIPORT_E_AWS_NO_CREDENTIALS' });
  expect(events).toMatchObject([{ type: 'aws.credentials_failed', code: 'CIPORT_E_AWS_NO_CREDENTIALS' }]);
  exit.close();
}, 30_000);
