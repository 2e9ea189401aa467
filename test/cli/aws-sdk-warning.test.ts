// `ciport gateway` loads the AWS SDK at start when a target's password is in Secrets Manager. On
// Node < 22 the SDK's first client prints a multi-line NodeVersionSupportWarning about releases
// ciport does not take (the SDK is pinned: docs/aws.md, "Node versions"); the gateway switches it
// off so that its stderr stays its own. The control run shows the SDK does print it here.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DevSigner } from '../../src/identity/index.js';
import { type AwsFixture, startAwsFixture } from '../fixtures/aws.js';
import { baseEnv, ensureBuilt, ROOT, spawnCli } from '../fixtures/cli.js';
import { freePort } from '../fixtures/free-port.js';
import { waitFor } from '../fixtures/wait-for.js';

const WARNING = /NodeVersionSupportWarning/;
const OLD_NODE = Number(process.versions.node.split('.')[0]) < 22;
let aws: AwsFixture;
let dir: string;

beforeAll(async () => {
  aws = await startAwsFixture();
  aws.putSecret('ci/db', { password: 'not-used' });
  dir = mkdtempSync(join(tmpdir(), 'ciport-sdk-warning-'));
  await ensureBuilt();
}, 120_000);
afterAll(async () => {
  await aws.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('the AWS SDK Node version warning', () => {
  it('is what the SDK prints without ciport on Node < 22, and only there (control)', async () => {
    const script = `import('@aws-sdk/client-secrets-manager').then((m) => new m.SecretsManagerClient({}))`;
    const { stderr } = await promisify(execFile)(process.execPath, ['-e', script], {
      cwd: ROOT,
      env: baseEnv({ AWS_REGION: 'eu-west-1' }),
    });
    if (OLD_NODE) expect(stderr).toMatch(WARNING);
    else expect(stderr).not.toMatch(WARNING);
  });

  it('does not reach the gateway stderr when the SDK loads at start', async () => {
    const port = await freePort();
    const config = join(dir, 'gateway.yaml');
    writeFileSync(
      config,
      `listen: 127.0.0.1:${port}
data_dir: ${join(dir, 'data')}
issuers:
  - {name: gl, kind: gitlab, issuer: https://gitlab.example.com, audience: ciport, jwks_file: ${join(dir, 'jwks.json')}}
targets:
  - name: db
    protocol: postgres
    address: 127.0.0.1:5432
    database: test
    credentials: {user: app, password: {aws_secretsmanager: {secret_id: ci/db, key: password}}}
rules:
  - {name: r, issuer: gl, when: {project_id: "1"}, allow: [db]}
`,
    );
    writeFileSync(join(dir, 'jwks.json'), JSON.stringify((await DevSigner.ephemeral()).jwks()));
    const run = spawnCli(['gateway', '--config', config], { env: baseEnv(aws.env()), timeoutMs: 60_000 });
    try {
      await waitFor(
        () => (/gateway listening/.test(run.stderr() + run.stdout()) ? true : undefined),
        20_000,
      ).catch((err) => {
        throw new Error(`${err}: ${run.stderr()} ${run.stdout()}`);
      });
      // The secret was read through the SDK before the gateway listened.
      expect(aws.verified('secretsmanager').length).toBeGreaterThan(0);
      expect(run.stderr()).not.toMatch(WARNING);
    } finally {
      run.child.kill('SIGTERM');
      await run.result;
    }
  }, 60_000);
});
