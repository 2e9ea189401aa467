// Job liveness against a GitHub-shaped API on loopback: run attempt and job statuses, the
// request's headers, X-RateLimit-* and 403 rate limits, bad credentials. Fake clock, real HTTP.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type JobFinishedEvent,
  type JobLiveness,
  JobNotRunningError,
  type JobRef,
} from '../../src/jobs/index.js';
import { GITHUB_CONCLUSIONS, GithubApiFixture } from '../fixtures/github-api.js';
import { EPOCH, issuerWithApi, livenessFor } from './helpers.js';

const REPO = 'octo-org/ledger';
const RUN = '1658821493';
const JOB = '39944449612';
const INTERVAL = 10_000;

let api: GithubApiFixture;
let services: JobLiveness[] = [];

beforeEach(async () => {
  api = await GithubApiFixture.start();
  api.setRun(REPO, RUN, 1, 'in_progress');
});
afterEach(async () => {
  await Promise.all(services.map((s) => s.close()));
  services = [];
  await api.close();
});

function setup(options: Parameters<typeof livenessFor>[1] & { token?: string } = {}) {
  const { token, ...extra } = options;
  const made = livenessFor([issuerWithApi('github', api.url, token ?? api.token)], extra);
  services.push(made.liveness);
  return made;
}

const runRef = (attempt = '1'): JobRef => ({
  platform: 'github',
  issuer: 'github',
  repository: REPO,
  run_id: RUN,
  run_attempt: attempt,
});
const jobRef = (): JobRef => ({ ...runRef(), job: JOB }) as JobRef;

function recorder() {
  const calls: JobFinishedEvent[] = [];
  return Object.assign((event: JobFinishedEvent) => void calls.push(event), { calls });
}

describe('run attempt status', () => {
  it.each(['requested', 'queued', 'pending', 'waiting', 'in_progress'])(
    'a run %s is running',
    async (status) => {
      api.setRun(REPO, RUN, 1, status);
      const { liveness } = setup();
      expect(await liveness.checkOnce(runRef())).toBe('running');
    },
  );

  it.each(GITHUB_CONCLUSIONS)('a run completed with conclusion %s is finished', async (conclusion) => {
    api.setRun(REPO, RUN, 1, 'completed', conclusion);
    const { liveness } = setup();
    expect(await liveness.checkOnce(runRef())).toBe('finished');
  });

  it('asks the run attempt endpoint with the GitHub headers', async () => {
    const { liveness } = setup();
    await liveness.checkOnce(runRef());
    expect(api.requests).toHaveLength(1);
    const [req] = api.requests;
    expect(req?.path).toBe(`/repos/${REPO}/actions/runs/${RUN}/attempts/1`);
    expect(req?.headers.authorization).toBe(`Bearer ${api.token}`);
    expect(req?.headers.accept).toBe('application/vnd.github+json');
    expect(req?.headers['x-github-api-version']).toBe('2022-11-28');
    expect(req?.headers['user-agent']).toBeTruthy();
  });

  it('a re-run does not revive the first attempt: its tokens stay refused', async () => {
    api.setRun(REPO, RUN, 1, 'completed', 'failure');
    api.setRun(REPO, RUN, 2, 'in_progress');
    const { liveness } = setup();
    await expect(liveness.assertRunning(runRef('1'))).rejects.toBeInstanceOf(JobNotRunningError);
    await expect(liveness.assertRunning(runRef('2'))).resolves.toBe('running');
  });
});

describe('job status (check_run_id)', () => {
  it('a completed job is finished, asked with one request to the jobs endpoint', async () => {
    api.setJob(REPO, JOB, RUN, 1, 'completed', 'success');
    const { liveness } = setup();
    const err = await liveness.assertRunning(jobRef()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JobNotRunningError);
    expect((err as JobNotRunningError).details).toMatchObject({ repository: REPO, run_id: RUN, job: JOB });
    expect((err as JobNotRunningError).message).toContain('job completed/success');
    expect(api.requests.map((r) => r.path)).toEqual([`/repos/${REPO}/actions/jobs/${JOB}`]);
  });

  it('a completed job in a still-running run is finished', async () => {
    api.setJob(REPO, JOB, RUN, 1, 'completed', 'failure');
    const { liveness } = setup();
    expect(await liveness.checkOnce(jobRef())).toBe('finished');
  });

  it.each(['queued', 'in_progress', 'waiting'])('a job %s is running', async (status) => {
    api.setJob(REPO, JOB, RUN, 1, status);
    const { liveness } = setup();
    expect(await liveness.checkOnce(jobRef())).toBe('running');
    expect(api.runHits(RUN, 1)).toBe(0);
  });

  it('a job id GitHub does not know falls back to the run', async () => {
    const { liveness } = setup();
    expect(await liveness.checkOnce(jobRef())).toBe('running');
    api.setRun(REPO, RUN, 1, 'completed', 'cancelled');
    expect(await liveness.checkOnce(jobRef())).toBe('finished');
    expect(api.jobHits(JOB)).toBe(2);
    expect(api.runHits(RUN, 1)).toBe(2);
  });

  it('a job of another run, or of another attempt, is not this token’s job: the run decides', async () => {
    const { liveness } = setup();
    api.setJob(REPO, JOB, '777', 1, 'completed', 'success');
    expect(await liveness.checkOnce(jobRef())).toBe('running');
    api.setJob(REPO, JOB, RUN, 2, 'completed', 'success');
    expect(await liveness.checkOnce(jobRef())).toBe('running');
    expect(api.runHits(RUN, 1)).toBe(2);
  });
});

describe('watching', () => {
  it('run attempt completed → every session told once; one request per interval', async () => {
    const { liveness, step } = setup();
    const sessions = [recorder(), recorder()];
    for (const [i, cb] of sessions.entries()) liveness.watch(runRef(), `s${i}`, cb);
    await step(INTERVAL);
    await step(INTERVAL);
    expect(api.runHits(RUN, 1)).toBe(2);
    api.setRun(REPO, RUN, 1, 'completed', 'success');
    await step(INTERVAL);
    for (const cb of sessions) {
      expect(cb.calls).toEqual([
        expect.objectContaining({ reason: 'job_finished', status: 'completed/success' }),
      ]);
    }
    await step(INTERVAL * 3);
    expect(api.runHits(RUN, 1)).toBe(3);
  });

  it('with a job id: one jobs request per interval, and the job completing ends the sessions', async () => {
    api.setJob(REPO, JOB, RUN, 1, 'in_progress');
    const { liveness, step } = setup();
    const cb = recorder();
    liveness.watch(jobRef(), 'a', cb);
    liveness.watch(jobRef(), 'b', () => {});
    await step(INTERVAL);
    await step(INTERVAL);
    expect(api.jobHits(JOB)).toBe(2);
    expect(api.runHits(RUN, 1)).toBe(0);
    api.setJob(REPO, JOB, RUN, 1, 'completed', 'cancelled');
    await step(INTERVAL);
    expect(cb.calls).toEqual([
      expect.objectContaining({ status: 'job completed/cancelled', source: 'poll' }),
    ]);
    expect(liveness.stats().sessionsWatched).toBe(0);
  });

  it('X-RateLimit-Remaining 0 waits until X-RateLimit-Reset', async () => {
    const reset = EPOCH / 1000 + 300;
    api.setQuota({ remaining: 1, reset });
    const { liveness, step, clock } = setup();
    liveness.watch(runRef(), 's', () => {});
    await step(INTERVAL);
    expect(api.runHits(RUN, 1)).toBe(1);
    expect(liveness.jobs()[0]?.nextPollAt).toBe(reset * 1000);
    // Interval after interval passes; nothing is sent before the reset.
    while (clock.ms + INTERVAL < reset * 1000) await step(INTERVAL);
    await step(reset * 1000 - clock.ms - 1);
    expect(api.runHits(RUN, 1)).toBe(1);
    api.refillQuota();
    await step(1);
    expect(api.runHits(RUN, 1)).toBe(2);
    // Waited, never refused: every answer was a 200.
    expect(liveness.stats()).toMatchObject({ pollsOk: 2, pollsError: 0 });
  });

  it('a 403 primary rate limit waits until the reset and is not "unreachable"', async () => {
    const reset = EPOCH / 1000 + 600;
    const { liveness, step } = setup();
    liveness.watch(runRef(), 's', () => {});
    api.respondNext({
      status: 403,
      headers: {
        'x-ratelimit-limit': '5000',
        'x-ratelimit-remaining': '0',
        'x-ratelimit-reset': String(reset),
        'x-ratelimit-used': '5000',
        'x-ratelimit-resource': 'core',
      },
      body: { message: 'API rate limit exceeded for user ID 1.', status: '403' },
    });
    await step(INTERVAL);
    expect(liveness.jobs()[0]?.nextPollAt).toBe(reset * 1000);
    expect(liveness.stats().apiUnreachable).toEqual({ github: 0 });
  });

  it('a secondary rate limit (403 with Retry-After) is respected', async () => {
    const { liveness, step } = setup();
    liveness.watch(runRef(), 's', () => {});
    api.respondNext({
      status: 403,
      headers: { 'retry-after': '60' },
      body: { message: 'You have exceeded a secondary rate limit.' },
    });
    await step(INTERVAL);
    await step(60_000 - 1);
    expect(api.runHits(RUN, 1)).toBe(1);
    await step(1);
    expect(api.runHits(RUN, 1)).toBe(2);
  });

  it('bad credentials: unknown, logged as auth failure without the token', async () => {
    const wrong = 'ghp_WRONGwrongWRONGwrong0123456789';
    const { liveness, log } = setup({ token: wrong });
    expect(await liveness.checkOnce(runRef())).toBe('unknown');
    const warn = log.at('warn')[0];
    expect(warn?.obj).toMatchObject({ failure: 'auth', http_status: 401 });
    expect(JSON.stringify(warn)).toContain('Bad credentials');
    expect(log.text()).not.toContain(wrong);
    expect(liveness.stats().apiUnreachable).toEqual({ github: 1 });
  });
});
