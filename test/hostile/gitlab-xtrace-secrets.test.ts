// A job that traces its shell (`set -x` before the component's before_script, as people do to
// debug a job) prints every command of the sourced port.env to the job log. The one-time
// password is not a GitLab masked variable, so it appears in clear: docs/gitlab-ci.md says the
// one-time password is never printed. The component should trace nothing while it loads it.
// `ciport open` is a stand-in here that writes the env file as the real one does.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildJobs, withIncludes } from '../gitlab/ci-config.js';

const OTP = 'otp-4f9d2c7a1b8e6d3f0a5c';
const job = buildJobs(
  withIncludes({
    include: [
      {
        component: '$CI_SERVER_FQDN/platform/ciport/ciport@0.1.0',
        inputs: { gateway: 'https://127.0.0.1:1', audience: 'https://127.0.0.1:1', targets: 'db' },
      },
    ],
    job: { extends: '.ciport', script: ['true'] },
  }),
).get('job') as { before_script: string[] };

const dir = mkdtempSync(join(tmpdir(), 'ciport-xtrace-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('a traced job shell (set -x)', () => {
  it('does not print the one-time password while the port variables are loaded', async () => {
    const home = join(dir, 'home');
    mkdirSync(join(home, 'bin'), { recursive: true, mode: 0o700 });
    // `ciport open … --dotenv F --state S`: writes F, then stays up; `ciport close` ends it.
    writeFileSync(
      join(home, 'bin', 'ciport'),
      [
        '#!/bin/sh',
        'if [ "$1" = open ]; then',
        '  while [ $# -gt 0 ]; do [ "$1" = --dotenv ] && f=$2; shift; done',
        `  printf 'PGHOST=127.0.0.1\\nPGPORT=5432\\nPGPASSWORD=${OTP}\\nDATABASE_URL=postgres://ci:${OTP}@127.0.0.1:5432/app\\n' > "$f.tmp" && mv "$f.tmp" "$f"`,
        '  exec sleep 30',
        'fi',
        'exit 0',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const env = {
      PATH: `${join(home, 'bin')}:/usr/bin:/bin`,
      CIPORT_HOME: home,
      CIPORT_TARGETS: 'db',
      CIPORT_TTL: '',
    };
    // The port part of the component (before_script[1]); the client fetch is before_script[0].
    const log = await new Promise<string>((resolve) => {
      execFile(
        'sh',
        ['-c', `set -x\n${job.before_script[1]}\nkill "$ciport_pid" 2>/dev/null || true`],
        { env, timeout: 30_000 },
        (_e, out, err) => resolve(`${out}${err}`),
      );
    });
    expect(log).toContain('port open to db');
    expect(log.includes(OTP), 'the job log shows the one-time password').toBe(false);
  }, 60_000);
});
