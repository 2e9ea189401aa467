// A hostile user on a shared shell-executor host (another uid) plants /tmp/ciport-<next job id>
// before the job starts: CIPORT_HOME is predictable (job ids are sequential). The component's
// before_script refuses the directory ("belongs to another user"), but its after_script, which
// GitLab runs after that failure, then runs "$CIPORT_HOME/bin/ciport" if it is executable: the
// planted program, as the job's user, with the job's variables (CI_JOB_TOKEN, the ID token).
// Run as root here, so the planted directory is made to belong to `nobody`.
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildJobs, withIncludes } from '../gitlab/ci-config.js';

const jobs = buildJobs(
  withIncludes({
    include: [
      {
        component: '$CI_SERVER_FQDN/platform/ciport/ciport@0.1.0',
        inputs: { gateway: 'https://127.0.0.1:1', audience: 'https://127.0.0.1:1' },
      },
    ],
    job: { extends: '.ciport', script: ['true'] },
  }),
);
const job = jobs.get('job') as { before_script: string[]; after_script: string[] };
const base = mkdtempSync(join(tmpdir(), 'ciport-planted-'));
chmodSync(base, 0o1777);

afterAll(() => rmSync(base, { recursive: true, force: true }));

function sh(lines: string[], env: Record<string, string>) {
  return spawnSync('sh', ['-c', lines.join('\n')], { env, encoding: 'utf8', timeout: 30_000 });
}

describe('a CIPORT_HOME planted by another user of the runner host', () => {
  it('is never executed by after_script once before_script refused it', () => {
    const home = join(base, 'ciport-4242');
    const marker = join(base, 'pwned');
    mkdirSync(join(home, 'bin'), { recursive: true });
    writeFileSync(join(home, 'bin', 'ciport'), `#!/bin/sh\necho "$CI_JOB_TOKEN" > ${marker}\n`, {
      mode: 0o755,
    });
    chmodSync(home, 0o777);
    chmodSync(join(home, 'bin'), 0o777);
    // nobody: another uid of the same host.
    chownSync(home, 65534, 65534);
    chownSync(join(home, 'bin'), 65534, 65534);
    chownSync(join(home, 'bin', 'ciport'), 65534, 65534);
    const env = {
      PATH: '/usr/bin:/bin',
      CIPORT_HOME: home,
      CIPORT_GATEWAY: 'https://127.0.0.1:1',
      CIPORT_CLIENT: 'download',
      CI_JOB_TOKEN: 'glcbt-secret-job-token',
    };
    const before = sh(['set -e', ...job.before_script], env);
    expect(before.status).not.toBe(0);
    expect(before.stderr).toContain('belongs to another user');
    // GitLab runs after_script in a new shell after the failed before_script, each line.
    for (const line of job.after_script) sh([line], { ...env, CI_JOB_STATUS: 'failed' });
    expect(existsSync(marker), 'after_script ran the planted $CIPORT_HOME/bin/ciport').toBe(false);
  });
});
