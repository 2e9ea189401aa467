// The GitLab component takes the gateway URL from a job-level `variables:` entry
// (CIPORT_GATEWAY: $[[ inputs.gateway ]]), and the port's targets from CIPORT_TARGETS, split by
// the shell into `ciport open`'s argv. Variables given when a pipeline is run (Run pipeline
// form, API, schedules, trigger tokens, a parent's `trigger:` with variables) take precedence over
// job variables. Whoever may run a pipeline with variables on a protected branch, without being
// allowed to change its code, thereby sends that branch's ID token (aud = the real gateway,
// ref_protected: true) to a URL of their choice, and can replay it to the real gateway.
// CIPORT_TARGETS does the same through an option: "--gateway=https://elsewhere db".
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt, LAUNCHER } from '../fixtures/cli.js';
import { FakeGateway } from '../fixtures/fake-gateway.js';
import { buildJobs, withIncludes } from '../gitlab/ci-config.js';

const REAL = 'https://ciport.example.invalid';
const ID_TOKEN = 'eyJ-protected-branch-id-token-0123456789';
const job = buildJobs(
  withIncludes({
    include: [
      {
        component: '$CI_SERVER_FQDN/platform/ciport/ciport@0.1.0',
        inputs: { gateway: REAL, audience: REAL, client: 'image', targets: 'db' },
      },
    ],
    job: { extends: '.ciport', script: ['true'] },
  }),
).get('job') as { before_script: string[]; variables: Record<string, string> };

const dir = mkdtempSync(join(tmpdir(), 'ciport-varoverride-'));
let evil: FakeGateway;

beforeAll(async () => {
  await ensureBuilt();
  // client: image — a ciport on the runner's PATH.
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin', 'ciport'), `#!/bin/sh\nexec "${process.execPath}" "${LAUNCHER}" "$@"\n`, {
    mode: 0o755,
  });
  evil = await FakeGateway.start({ targets: [], tokens: { [ID_TOKEN]: 'deny' } });
}, 180_000);

afterAll(async () => {
  await evil?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The job's before_script with the job's variables, then `pipeline` over them (GitLab's precedence). */
async function runJob(pipeline: Record<string, string>, jobId: string) {
  const vars: Record<string, string> = {};
  for (const [k, v] of Object.entries(job.variables)) vars[k] = String(v).replace('$CI_JOB_ID', jobId);
  const env = {
    PATH: `${join(dir, 'bin')}:/usr/bin:/bin`,
    HOME: dir,
    CI_JOB_ID: jobId,
    CIPORT_ID_TOKEN: ID_TOKEN,
    ...vars,
    ...pipeline,
  };
  // Asynchronously: the evil gateway answers from this process.
  const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
    execFile(
      'sh',
      ['-c', ['set -e', ...job.before_script].join('\n')],
      { env, timeout: 60_000 },
      (err, _o, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr: String(stderr) }),
    );
  });
  rmSync(`/tmp/ciport-${jobId}`, { recursive: true, force: true });
  return r;
}

/** Whether a request the evil gateway received after the `from`th carried the ID token. */
const tokenSentToEvil = (from: number) =>
  evil.requests.slice(from).some((r) => JSON.stringify(r).includes(ID_TOKEN));

describe('pipeline variables against the component', () => {
  it('CIPORT_GATEWAY given when the pipeline is run does not redirect the ID token', async () => {
    const from = evil.requests.length;
    await runJob({ CIPORT_GATEWAY: evil.url, CIPORT_CA_FILE: evil.caFile }, `${process.pid}1`);
    expect(tokenSentToEvil(from), 'the job sent its ID token to the pipeline variable CIPORT_GATEWAY').toBe(
      false,
    );
  }, 90_000);

  it('CIPORT_TARGETS given when the pipeline is run cannot add options to ciport open', async () => {
    const from = evil.requests.length;
    await runJob(
      { CIPORT_TARGETS: `--gateway=${evil.url} db`, CIPORT_CA_FILE: evil.caFile },
      `${process.pid}2`,
    );
    expect(tokenSentToEvil(from), 'CIPORT_TARGETS became --gateway').toBe(false);
  }, 90_000);
});
