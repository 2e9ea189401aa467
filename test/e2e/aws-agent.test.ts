// Issue 15, `protocol: aws` through an agent: the gateway names no aws target; a `ciport agent`
// process declares it and assumes the role with its own AWS identity (its environment, the
// loopback AWS fixture). The gateway sends the session's facts with each stream, so the role
// session carries the same name, tags, capped duration and deny-after-expiry policy (with the
// gateway's rule's session_policy) as when the gateway is the exit, and the agent's
// `aws.credentials_issued` event lands in the gateway's audit log.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { agentYamlHead } from '../fixtures/agent-yaml.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { baseEnv, ensureBuilt, ROOT, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-aws-agent-'));
const HOME = join(dir, 'home');
const ADMIN = `admin-${Math.random().toString(36).slice(2)}`;
const ROLE = 'arn:aws:iam::123456789012:role/deploy';
const SDK_JOB = join(ROOT, 'test/e2e/aws-job/sdk-job.mjs');
const STATEMENT = { Effect: 'Allow', Action: 's3:*', Resource: 'arn:aws:s3:::artifacts/*' };

let aws: AwsFixture;
let gateway: RunningGateway;
let issuer: FixtureIssuer;
let agent: { child: ChildProcess; stderr: () => string; result: Promise<unknown> } | undefined;
const logLines: string[] = [];

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, ...extra });

beforeAll(async () => {
  const built = ensureBuilt();
  mkdirSync(HOME, { recursive: true });
  aws = await startAwsFixture({ roles: { [ROLE]: 3600 } });
  aws.buckets.set('artifacts', new Map([['hello.txt', Buffer.from('hello from s3')]]));
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  gateway = await startTestGateway(
    gatewayConfig(
      {
        listen: `127.0.0.1:${await freePort()}`,
        data_dir: join(dir, 'gw'),
        store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
        admin_tokens: [{ env: 'ADMIN' }],
        sessions: { default_ttl: '20m' },
        issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
        rules: [
          {
            name: 'main',
            issuer: 'gitlab',
            when: { project_id: '61577203' },
            allow: ['cloud'],
            session_policy: JSON.stringify({ Version: '2012-10-17', Statement: STATEMENT }),
          },
        ],
      },
      { ADMIN },
    ),
    { logLines },
  );
  await built;
  const enrolled = await runCli(['agents', 'enroll', '--name', 'dc1', '--targets', 'cloud'], {
    env: env({ CIPORT_ADMIN_TOKEN: ADMIN }),
  });
  expect(enrolled.code, enrolled.stderr).toBe(0);
  writeFileSync(
    join(dir, 'agent.yaml'),
    [
      ...agentYamlHead(gateway, 'dc1', join(dir, 'agent')),
      `  - {name: cloud, protocol: aws, role_arn: "${ROLE}", region: eu-central-1, duration: 15m}`,
      '',
    ].join('\n'),
  );
  // The agent's own AWS identity and STS endpoint: its environment (the SDK's provider chain).
  agent = spawnCli(['agent', '--config', join(dir, 'agent.yaml')], {
    env: baseEnv({ CIPORT_ENROLLMENT_TOKEN: enrolled.stdout.trim(), ...aws.env() }),
    timeoutMs: 300_000,
  });
  await waitFor(() => gateway.agents.hub.serves('cloud'), 30_000, 'the agent to connect');
}, 120_000);

afterAll(async () => {
  agent?.child.kill('SIGTERM');
  await agent?.result;
  await gateway?.close();
  await issuer?.close();
  await aws?.stop();
  rmSync(dir, { recursive: true, force: true });
});

it('a job reads role credentials the agent assumed, named and bounded by the gateway session', async () => {
  const token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  const r = await runCli(
    ['exec', 'cloud', '--', 'bash', '-c', `echo "region=$AWS_REGION"; "${process.execPath}" "${SDK_JOB}"`],
    { env: env({ CIPORT_ID_TOKEN: token, HOME, FIXTURE_URL: aws.url }), timeoutMs: 60_000 },
  );
  expect(r.code, r.stderr).toBe(0);
  const [region, json] = r.stdout.trim().split('\n');
  expect(region).toBe('region=eu-central-1');
  const seen = JSON.parse(json ?? '{}');
  const arn = 'arn:aws:sts::123456789012:assumed-role/deploy/ciport-acme-ledger-8222997048';
  expect(seen).toMatchObject({ arn, hello: 'hello from s3' });

  expect(aws.assumed).toHaveLength(1);
  const call = aws.assumed[0];
  if (!call) throw new Error('no AssumeRole');
  expect(seen.accessKeyId).toBe(call.issued.accessKeyId);
  expect(call.roleSessionName).toBe('ciport-acme-ledger-8222997048');
  expect(call.tags).toMatchObject({ 'ciport:project': 'acme/ledger', 'ciport:job': '8222997048' });
  // duration 15m on the agent's target: STS's minimum, below the 20-minute session.
  expect(call.durationSeconds).toBe(900);
  const sessionId = call.tags['ciport:session'] ?? '';
  const record = await gateway.store.getSession(sessionId);
  expect(record?.state).toBe('ended');
  const expiry = new Date(record?.expiresAt ?? 0).toISOString().replace(/\.\d{3}Z$/, 'Z');
  expect(call.policy).toMatchObject({
    Statement: [STATEMENT, { Effect: 'Deny', Condition: { DateGreaterThan: { 'aws:CurrentTime': expiry } } }],
  });

  await waitFor(
    async () => (await gateway.store.auditEvents()).some((e) => e.type === 'aws.credentials_issued'),
    10_000,
    "the agent's aws.credentials_issued event",
  );
  const events = await gateway.store.auditEvents();
  expect(events.find((e) => e.type === 'aws.credentials_issued')?.data).toMatchObject({
    session: sessionId,
    target: 'cloud',
    agent: 'dc1',
    access_key_id: call.issued.accessKeyId,
    role_session_name: call.roleSessionName,
    deny_after: expiry,
  });
  const everything = JSON.stringify(events) + logLines.join('\n') + (agent?.stderr() ?? '');
  expect(everything).not.toContain(call.issued.secretAccessKey);
  expect(everything).not.toContain(call.issued.sessionToken);
}, 90_000);
