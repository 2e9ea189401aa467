// Issue 15, `protocol: aws`, end to end: a real gateway assumes the target's role at the loopback
// AWS fixture (STS/S3 shaped like AWS, every SigV4 signature verified) and a job reads the role
// credentials from the client's loopback container-credentials endpoint with Debian's AWS CLI
// (/usr/bin/aws) and a Node script using @aws-sdk/client-s3's default chain. Checked: the identity
// the fixture saw, what the AssumeRole carried (session name, tags, capped duration, the
// deny-after-expiry policy plus the rule's session_policy), that both fail once the session is
// over, the loopback endpoint's refusals, STS failures as stable codes, no secret in the gateway's
// log, the audit log or the job's env, and 20 parallel sessions each with their own credentials.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningGateway } from '../../src/gateway/server.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { baseEnv, ensureBuilt, openedEnv, ROOT, runCli, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { gatewayConfig, startTestGateway } from '../fixtures/gateway.js';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { waitFor } from '../fixtures/wait-for.js';

const dir = mkdtempSync(join(tmpdir(), 'ciport-e2e-aws-'));
const HOME = join(dir, 'home');
const ROLE = 'arn:aws:iam::123456789012:role/deploy';
const SDK_JOB = join(ROOT, 'test/e2e/aws-job/sdk-job.mjs');
const RULE_STATEMENT = {
  Sid: 'Artifacts',
  Effect: 'Allow',
  Action: ['s3:*', 'sts:GetCallerIdentity'],
  Resource: '*',
};

let aws: AwsFixture;
let gateway: RunningGateway;
let issuer: FixtureIssuer;
let token: string;
let configDoc: Record<string, unknown>;
const configFile = join(dir, 'gateway.json');
const logLines: string[] = [];

const env = (extra: NodeJS.ProcessEnv = {}) =>
  baseEnv({ CIPORT_GATEWAY: gateway.url, CIPORT_CA_FILE: gateway.caFile, ...extra });

/** What a job's tools see: the port's exports and the fixture's URL, nothing of the test's env. */
const jobEnv = (vars: Record<string, string>) => ({
  PATH: process.env.PATH ?? '',
  HOME,
  FIXTURE_URL: aws.url,
  ...vars,
});

function run(
  file: string,
  args: string[],
  envVars: NodeJS.ProcessEnv,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: envVars, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const cli = (vars: Record<string, string>, ...args: string[]) =>
  run('/usr/bin/aws', [...args, '--endpoint-url', aws.url], jobEnv(vars));
const sdkJob = (vars: Record<string, string>) => run(process.execPath, [SDK_JOB], jobEnv(vars));

/** `ciport open deploy` in the background; its exported variables and a way to close it. */
async function openPort(name: string, target = 'deploy') {
  const envFile = join(dir, `${name}.env`);
  const state = join(dir, `${name}.json`);
  const open = spawnCli(['open', target, '--env-file', envFile, '--state', state], {
    env: env({ CIPORT_ID_TOKEN: token }),
    timeoutMs: 300_000,
  });
  const vars = await openedEnv(envFile, 30_000);
  return {
    vars,
    close: async () => {
      await runCli(['close', '--state', state], { env: env() });
      return open.result;
    },
  };
}

const sessionOf = (vars: Record<string, string>) => vars.AWS_CONTAINER_CREDENTIALS_FULL_URI;

beforeAll(async () => {
  const built = ensureBuilt();
  mkdirSync(HOME, { recursive: true });
  // `denied` names a role the fixture's STS refuses (its trust policy does not allow us).
  aws = await startAwsFixture({ roles: { [ROLE]: 3600 } });
  aws.buckets.set('artifacts', new Map([['hello.txt', Buffer.from('hello from s3')]]));
  // The gateway's own AWS identity: the provider chain finds it in the environment, and the SDK's
  // endpoint resolution sends STS to the fixture (vitest runs each file in its own process).
  Object.assign(process.env, aws.env());
  issuer = await FixtureIssuer.start({ kind: 'gitlab' });
  configDoc = {
    listen: `127.0.0.1:${await freePort()}`,
    data_dir: join(dir, 'gw'),
    store: { sqlite: { path: join(dir, 'gw', 'ciport.db') } },
    sessions: { default_ttl: '20m', rate_limit: { per_minute: 10000, burst: 1000 } },
    issuers: [{ name: 'gitlab', kind: 'gitlab', issuer: issuer.url, audience: 'ciport' }],
    targets: [
      { name: 'deploy', protocol: 'aws', role_arn: ROLE, region: 'eu-west-1' },
      { name: 'denied', protocol: 'aws', role_arn: 'arn:aws:iam::123456789012:role/admin' },
    ],
    rules: [
      {
        name: 'main',
        issuer: 'gitlab',
        when: { project_id: '61577203', ref_protected: true },
        allow: ['deploy', 'denied'],
        max_ttl: '30m',
        session_policy: { Version: '2012-10-17', Statement: [RULE_STATEMENT] },
      },
    ],
  };
  writeFileSync(configFile, JSON.stringify(configDoc));
  gateway = await startTestGateway(gatewayConfig(configDoc), { logLines });
  token = await issuer.mint({}, { preset: 'gitlab-main', audience: 'ciport' });
  await built;
}, 120_000);

afterAll(async () => {
  await gateway?.close();
  await issuer?.close();
  await aws?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('aws target: a job gets role credentials through its port', () => {
  it('the AWS CLI and the SDK act as the assumed role; both fail once the session is over', async () => {
    const port = await openPort('main');
    const { vars } = port;
    expect(vars.AWS_CONTAINER_CREDENTIALS_FULL_URI).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/aws\/credentials$/);
    expect(vars.AWS_CONTAINER_AUTHORIZATION_TOKEN).toMatch(/^[\w-]{40,}$/);
    expect(vars.AWS_REGION).toBe('eu-west-1');
    expect(vars.AWS_DEFAULT_REGION).toBe('eu-west-1');
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'])
      expect(vars[k]).toBeUndefined();

    const who = await cli(vars, 'sts', 'get-caller-identity', '--output', 'json');
    expect(who.stderr).toBe('');
    expect(who.code).toBe(0);
    const arn = 'arn:aws:sts::123456789012:assumed-role/deploy/ciport-acme-ledger-8222997048';
    expect(JSON.parse(who.stdout).Arn).toBe(arn);
    const up = await run(
      'bash',
      [
        '-c',
        'echo cli was here | /usr/bin/aws s3 cp - s3://artifacts/from-cli.txt --endpoint-url "$FIXTURE_URL"',
      ],
      jobEnv(vars),
    );
    expect(up.code, up.stderr).toBe(0);
    const ls = await cli(vars, 's3', 'ls', 's3://artifacts/');
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toContain('hello.txt');
    expect(ls.stdout).toContain('from-cli.txt');
    const cat = await cli(vars, 's3', 'cp', 's3://artifacts/hello.txt', '-');
    expect(cat.stdout).toBe('hello from s3');

    const sdk = await sdkJob(vars);
    expect(sdk.code, sdk.stderr).toBe(0);
    const seen = JSON.parse(sdk.stdout.trim().split('\n').pop() ?? '{}');
    expect(seen).toMatchObject({ arn, hello: 'hello from s3' });
    expect(seen.keys).toEqual(expect.arrayContaining(['hello.txt', 'from-cli.txt', 'from-node.txt']));
    expect(aws.buckets.get('artifacts')?.get('from-cli.txt')?.toString()).toBe('cli was here\n');

    // One AssumeRole for the session (both tools were served the same credentials) …
    const calls = aws.assumed.filter((a) => a.roleArn === ROLE);
    expect(calls).toHaveLength(1);
    const call = calls[0];
    if (!call) throw new Error('no AssumeRole');
    expect(seen.accessKeyId).toBe(call.issued.accessKeyId);
    // … every S3 request the fixture verified was signed by the assumed role.
    const s3 = aws.verified('s3');
    expect(s3.length).toBeGreaterThanOrEqual(5);
    for (const r of s3) expect(r.caller?.arn).toBe(arn);
    expect(call.caller).toBe(aws.base.arn);

    // What the AssumeRole carried: the job's name and tags, a duration cut to the session, and
    // a policy that denies everything after the session's expiry besides the rule's statements.
    const sessionId = call.tags['ciport:session'] ?? '';
    const record = await gateway.store.getSession(sessionId);
    expect(record?.state).toBe('active');
    expect(call.roleSessionName).toBe('ciport-acme-ledger-8222997048');
    expect(call.tags).toMatchObject({
      'ciport:project': 'acme/ledger',
      'ciport:project_id': '61577203',
      'ciport:ref': 'main',
      'ciport:pipeline': '1519139981',
      'ciport:job': '8222997048',
      'ciport:issuer': 'gitlab',
    });
    const remaining = ((record?.expiresAt ?? 0) - Date.now()) / 1000;
    expect(call.durationSeconds).toBeGreaterThanOrEqual(900);
    expect(call.durationSeconds).toBeLessThanOrEqual(20 * 60);
    expect(call.durationSeconds).toBeGreaterThan(remaining - 60);
    const expiry = new Date(record?.expiresAt ?? 0).toISOString().replace(/\.\d{3}Z$/, 'Z');
    expect(call.policy).toEqual({
      Version: '2012-10-17',
      Statement: [
        RULE_STATEMENT,
        {
          Sid: 'CiportSessionExpired',
          Effect: 'Deny',
          Action: '*',
          Resource: '*',
          Condition: { DateGreaterThan: { 'aws:CurrentTime': expiry } },
        },
      ],
    });

    // The session ends: the endpoint is gone, both tools fail, no new AssumeRole.
    await port.close();
    const after = await cli(vars, 'sts', 'get-caller-identity');
    expect(after.code).not.toBe(0);
    const sdkAfter = await sdkJob(vars);
    expect(sdkAfter.code).not.toBe(0);
    expect(sdkAfter.stdout).toBe('');
    expect(aws.assumed.filter((a) => a.roleArn === ROLE)).toHaveLength(1);

    // Audited without secrets; no secret in the gateway's log either.
    const events = await gateway.store.auditEvents();
    const issued = events.filter((e) => e.type === 'aws.credentials_issued');
    expect(issued).toHaveLength(1);
    expect(issued[0]?.data).toMatchObject({
      session: sessionId,
      target: 'deploy',
      role_arn: ROLE,
      role_session_name: call.roleSessionName,
      access_key_id: call.issued.accessKeyId,
      deny_after: expiry,
      tags: call.tags,
    });
    // What an auditor exports says the same, without the secrets either.
    const exported = await runCli(['audit', 'export', '--config', configFile, '--format', 'jsonl'], {
      env: env(),
    });
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout).toContain(`"access_key_id":"${call.issued.accessKeyId}"`);
    const everything = JSON.stringify(events) + logLines.join('\n') + exported.stdout;
    expect(everything).not.toContain(call.issued.secretAccessKey);
    expect(everything).not.toContain(call.issued.sessionToken);
    expect(everything).not.toContain(vars.AWS_CONTAINER_AUTHORIZATION_TOKEN);
  }, 180_000);

  it('ciport exec: the command gets the endpoint, never AWS keys, and the SDK works', async () => {
    const r = await runCli(
      [
        'exec',
        'deploy',
        '--',
        'bash',
        '-c',
        `env | grep -E '^AWS_' | cut -d= -f1 | sort | tr '\\n' ' '; echo; "${process.execPath}" "${SDK_JOB}"; ps -eww -o args= > "${join(dir, 'argv.txt')}"`,
      ],
      { env: env({ CIPORT_ID_TOKEN: token, HOME, FIXTURE_URL: aws.url }), timeoutMs: 60_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const [names, json] = r.stdout.trim().split('\n');
    expect(names?.trim().split(' ')).toEqual([
      'AWS_CONTAINER_AUTHORIZATION_TOKEN',
      'AWS_CONTAINER_CREDENTIALS_FULL_URI',
      'AWS_DEFAULT_REGION',
      'AWS_REGION',
    ]);
    const last = aws.assumed.at(-1);
    expect(JSON.parse(json ?? '{}').accessKeyId).toBe(last?.issued.accessKeyId);
    // No process's argv (ciport's, the job's) carries the secret key or the session token.
    const argv = readFileSync(join(dir, 'argv.txt'), 'utf8');
    expect(argv).toContain('ciport');
    expect(argv).not.toContain(last?.issued.secretAccessKey);
    expect(argv).not.toContain(last?.issued.sessionToken);
  }, 60_000);
});

describe('the loopback endpoint and the exit refuse what they should', () => {
  let port: Awaited<ReturnType<typeof openPort>>;
  let url: string;
  beforeAll(async () => {
    port = await openPort('hostile');
    url = sessionOf(port.vars) ?? '';
  }, 60_000);
  afterAll(() => port?.close());

  const get = (headers: Record<string, string>, method = 'GET') =>
    fetch(url, { method, headers }).then(async (r) => ({
      status: r.status,
      code: r.headers.get('ciport-error'),
      body: await r.text(),
    }));

  /** Send raw bytes to the endpoint; the whole answer. */
  const raw = (bytes: string) =>
    new Promise<string>((resolve) => {
      const u = new URL(url);
      const s = connect(Number(u.port), '127.0.0.1', () => s.write(bytes));
      let out = '';
      s.on('data', (c) => {
        out += c.toString();
      });
      s.on('error', () => resolve(out));
      s.on('close', () => resolve(out));
      setTimeout(() => s.destroy(), 5_000);
    });

  it('a missing or wrong token is refused before the gateway is asked', async () => {
    const before = aws.assumed.length;
    const tunnelsBefore = logLines.filter((l) => l.includes('tunnel opened')).length;
    expect(await get({})).toMatchObject({ status: 401, code: 'CIPORT_E_AWS_AUTHORIZATION_MISSING' });
    const wrong = await get({ Authorization: `${port.vars.AWS_CONTAINER_AUTHORIZATION_TOKEN}x` });
    expect(wrong).toMatchObject({ status: 403, code: 'CIPORT_E_AWS_AUTHORIZATION_WRONG' });
    expect(wrong.body).not.toContain('AccessKeyId');
    expect(await get({ Authorization: 'Bearer nope' })).toMatchObject({ status: 403 });
    expect(aws.assumed.length).toBe(before);
    expect(logLines.filter((l) => l.includes('tunnel opened')).length).toBe(tunnelsBefore);
  });

  it('oversized, malformed and non-GET requests are refused; the endpoint keeps serving', async () => {
    const auth = { Authorization: port.vars.AWS_CONTAINER_AUTHORIZATION_TOKEN ?? '' };
    const big = await raw(`GET /aws/credentials HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    expect(await raw('GARBAGE\r\n\r\n')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await get(auth, 'POST')).toMatchObject({ status: 405, code: 'CIPORT_E_METHOD_NOT_ALLOWED' });
    const body = await raw(
      `GET /aws/credentials HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.Authorization}\r\nContent-Length: 5\r\n\r\nhello`,
    );
    expect(body).toMatch(/^HTTP\/1\.1 400 /);
    expect(body).toContain('CIPORT_E_AWS_BAD_REQUEST');
    const ok = await get(auth);
    expect(ok.status).toBe(200);
    const creds = JSON.parse(ok.body);
    expect(Object.keys(creds).sort()).toEqual([
      'AccessKeyId',
      'Expiration',
      'RoleArn',
      'SecretAccessKey',
      'Token',
    ]);
    expect(creds.RoleArn).toBe(ROLE);
    expect(Date.parse(creds.Expiration)).toBeGreaterThan(Date.now());
  });

  it('STS refusing the role is a stable code (403), audited, without the STS message', async () => {
    const denied = await openPort('denied', 'denied');
    try {
      const auth = { Authorization: denied.vars.AWS_CONTAINER_AUTHORIZATION_TOKEN ?? '' };
      const r = await fetch(sessionOf(denied.vars) ?? '', { headers: auth });
      expect(r.status).toBe(403);
      expect(r.headers.get('ciport-error')).toBe('CIPORT_E_AWS_ASSUME_ROLE_DENIED');
      const body = (await r.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('CIPORT_E_AWS_ASSUME_ROLE_DENIED');
      expect(body.error.message).toContain('AccessDenied');
      expect(body.error.message).not.toContain('is not authorized to perform');
      const cliFails = await cli(denied.vars, 'sts', 'get-caller-identity');
      expect(cliFails.code).not.toBe(0);
      const events = await gateway.store.auditEvents();
      expect(events.find((e) => e.type === 'aws.credentials_failed')?.data).toMatchObject({
        target: 'denied',
        code: 'CIPORT_E_AWS_ASSUME_ROLE_DENIED',
        sts_code: 'AccessDenied',
      });
      // The gateway is still fine: the other target serves.
      expect((await get({ Authorization: port.vars.AWS_CONTAINER_AUTHORIZATION_TOKEN ?? '' })).status).toBe(
        200,
      );
    } finally {
      await denied.close();
    }
  }, 60_000);
});

describe('parallel sessions', () => {
  it('20 sessions of one project at once each get their own credentials', async () => {
    const before = aws.assumed.length;
    const script =
      'curl -sS -H "Authorization: $AWS_CONTAINER_AUTHORIZATION_TOKEN" "$AWS_CONTAINER_CREDENTIALS_FULL_URI"';
    const runs = await Promise.all(
      Array.from({ length: 20 }, () =>
        runCli(['exec', 'deploy', '--', 'bash', '-c', script], {
          env: env({ CIPORT_ID_TOKEN: token }),
          timeoutMs: 120_000,
        }),
      ),
    );
    const keys = runs.map((r) => {
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).AccessKeyId as string;
    });
    expect(new Set(keys).size).toBe(20);
    const calls = aws.assumed.slice(before);
    expect(calls).toHaveLength(20);
    expect(new Set(calls.map((c) => c.tags['ciport:session'])).size).toBe(20);
    expect(calls.map((c) => c.issued.accessKeyId).sort()).toEqual([...keys].sort());
  }, 180_000);
});

describe('STS unreachable (last: it stops the fixture)', () => {
  it('a credentials request gets 502 CIPORT_E_AWS_ASSUME_ROLE_FAILED; the gateway keeps serving', async () => {
    const port = await openPort('sts-down');
    try {
      await aws.stop();
      const r = await fetch(sessionOf(port.vars) ?? '', {
        headers: { Authorization: port.vars.AWS_CONTAINER_AUTHORIZATION_TOKEN ?? '' },
      });
      expect(r.status).toBe(502);
      expect(r.headers.get('ciport-error')).toBe('CIPORT_E_AWS_ASSUME_ROLE_FAILED');
      // The event is appended while the answer goes out: wait for it rather than race it.
      await waitFor(async () => {
        const events = await gateway.store.auditEvents();
        expect(events.filter((e) => e.type === 'aws.credentials_failed').at(-1)?.data).toMatchObject({
          target: 'deploy',
          code: 'CIPORT_E_AWS_ASSUME_ROLE_FAILED',
          sts_code: 'ECONNREFUSED',
        });
        return true;
      });
      const health = await runCli(['whoami'], { env: env({ CIPORT_ID_TOKEN: token }) });
      expect(health.code, health.stderr).toBe(0);
    } finally {
      await port.close();
    }
  }, 60_000);
});
