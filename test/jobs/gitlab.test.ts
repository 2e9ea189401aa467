// Job liveness against a GitLab-shaped API on loopback: status words, refusal at session
// creation, batched polling per job, rate limits, outages and the Job Hook. Time is a fake
// clock stepped by hand; HTTP is real.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type JobFinishedEvent,
  type JobLiveness,
  type JobLivenessMetrics,
  JobNotRunningError,
  type JobRef,
} from '../../src/jobs/index.js';
import { GitlabApiFixture } from '../fixtures/gitlab-api.js';
import { EPOCH, issuerWithApi, livenessFor } from './helpers.js';

const PROJECT = '61577203';
const JOB = '4242';
const INTERVAL = 10_000;
const SECRET = 'gitlab-hook-secret-5d1e';

let api: GitlabApiFixture;
let services: JobLiveness[] = [];

beforeEach(async () => {
  api = await GitlabApiFixture.start();
  api.setJob(PROJECT, JOB, 'running');
});
afterEach(async () => {
  await Promise.all(services.map((s) => s.close()));
  services = [];
  await api.close();
});

function setup(options: Parameters<typeof livenessFor>[1] & { token?: string; webhookSecret?: string } = {}) {
  const { token, webhookSecret, ...extra } = options;
  const issuer = issuerWithApi('gitlab', api.url, token ?? api.token, {
    ...(webhookSecret ? { webhookSecret } : {}),
  });
  const made = livenessFor([issuer], extra);
  services.push(made.liveness);
  return made;
}

const ref = (job = JOB, project = PROJECT): JobRef => ({
  platform: 'gitlab',
  issuer: 'gitlab',
  project,
  job,
});

/** An onFinished that records its calls. */
function recorder() {
  const calls: JobFinishedEvent[] = [];
  const fn = (event: JobFinishedEvent) => {
    calls.push(event);
  };
  return Object.assign(fn, { calls });
}

const RUNNING = [
  'running',
  'created',
  'waiting_for_resource',
  'preparing',
  'waiting_for_callback',
  'pending',
  'scheduled',
];
const FINISHED = ['success', 'failed', 'canceled', 'canceling', 'skipped', 'manual'];

describe('checkOnce', () => {
  it.each(RUNNING)('a job in status %s is running', async (status) => {
    api.setStatus(JOB, status);
    const { liveness } = setup();
    expect(await liveness.checkOnce(ref())).toBe('running');
  });

  it.each(FINISHED)('a job in status %s is finished', async (status) => {
    api.setStatus(JOB, status);
    const { liveness } = setup();
    expect(await liveness.checkOnce(ref())).toBe('finished');
  });

  it('asks GET /api/v4/projects/:id/jobs/:job_id with PRIVATE-TOKEN, once', async () => {
    const { liveness } = setup();
    await liveness.checkOnce(ref());
    expect(api.requests).toHaveLength(1);
    const [req] = api.requests;
    expect(req?.method).toBe('GET');
    expect(req?.path).toBe(`/api/v4/projects/${PROJECT}/jobs/${JOB}`);
    expect(req?.headers['private-token']).toBe(api.token);
  });

  it('a status word it does not know is unknown (fail open), warned about once', async () => {
    api.setStatus(JOB, 'exploded');
    const { liveness, log } = setup();
    expect(await liveness.checkOnce(ref())).toBe('unknown');
    expect(await liveness.checkOnce(ref())).toBe('unknown');
    expect(log.at('warn').filter((e) => (e.obj as { status?: string }).status === 'exploded')).toHaveLength(
      1,
    );
  });

  it('concurrent checks of one job share one request', async () => {
    const { liveness } = setup();
    const states = await Promise.all([
      liveness.checkOnce(ref()),
      liveness.checkOnce(ref()),
      liveness.checkOnce(ref()),
    ]);
    expect(states).toEqual(['running', 'running', 'running']);
    expect(api.jobHits(JOB)).toBe(1);
  });

  it('a job that is not there (or not visible to the token) is unknown, with a warning', async () => {
    const { liveness, log } = setup();
    expect(await liveness.checkOnce(ref('999'))).toBe('unknown');
    expect(log.at('warn').some((e) => (e.obj as { http_status?: number }).http_status === 404)).toBe(true);
    // A 404 is about one job, not the API: the issuer is not marked unreachable.
    expect(liveness.stats().apiUnreachable).toEqual({ gitlab: 0 });
  });

  it('an issuer without job_api is not covered: unknown, nothing asked, nothing watched', async () => {
    const { liveness } = setup();
    const other: JobRef = { platform: 'gitlab', issuer: 'elsewhere', project: PROJECT, job: JOB };
    expect(liveness.covers(other)).toBe(false);
    expect(await liveness.checkOnce(other)).toBe('unknown');
    expect(liveness.watch(other, 's1', () => {})).toBe(false);
    expect(api.requests).toHaveLength(0);
  });

  it('refFor derives the job from verified claims only for covered issuers', () => {
    const { liveness } = setup();
    const claims = { project_id: '1', job_project_id: PROJECT, job_id: JOB };
    expect(liveness.refFor({ name: 'gitlab', kind: 'gitlab' }, claims)).toEqual(ref());
    expect(liveness.refFor({ name: 'other', kind: 'gitlab' }, claims)).toBeNull();
  });
});

describe('refusal at session creation', () => {
  it('a finished job’s token is refused with CIPORT_E_JOB_NOT_RUNNING (exit 3, HTTP 403)', async () => {
    api.setStatus(JOB, 'success');
    const { liveness } = setup();
    const err = await liveness
      .assertRunning(ref(), { job_url: `https://gitlab.example.com/g/p/-/jobs/${JOB}` })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JobNotRunningError);
    const e = err as JobNotRunningError;
    expect(e.code).toBe('CIPORT_E_JOB_NOT_RUNNING');
    expect(e.exitCode).toBe(3);
    expect(e.httpStatus).toBe(403);
    expect(e.message).toContain('success');
    expect(e.details).toMatchObject({ issuer: 'gitlab', project: PROJECT, job: JOB, status: 'success' });
    expect(JSON.stringify(e.details)).not.toContain(api.token);
  });

  it('a running job passes', async () => {
    const { liveness } = setup();
    await expect(liveness.assertRunning(ref())).resolves.toBe('running');
  });

  it('an unreachable API lets the session through (fail open on liveness only)', async () => {
    await api.down('closed');
    const { liveness } = setup();
    await expect(liveness.assertRunning(ref())).resolves.toBe('unknown');
  });

  it('a job seen finished is remembered: later tokens of it are refused without asking again', async () => {
    api.setStatus(JOB, 'failed');
    const { liveness } = setup();
    expect(await liveness.checkOnce(ref())).toBe('finished');
    await expect(liveness.assertRunning(ref())).rejects.toBeInstanceOf(JobNotRunningError);
    expect(api.jobHits(JOB)).toBe(1);
  });
});

describe('watching open sessions', () => {
  it('polls once per job per interval, however many sessions the job has', async () => {
    api.setJob(PROJECT, '5000', 'running');
    const { liveness, step } = setup();
    for (const s of ['a', 'b', 'c']) expect(liveness.watch(ref(), s, () => {})).toBe(true);
    liveness.watch(ref('5000'), 'd', () => {});
    expect(liveness.stats()).toMatchObject({ jobsWatched: 2, sessionsWatched: 4 });
    await step(INTERVAL - 1);
    expect(api.jobRequests).toBe(0);
    await step(1);
    expect(api.jobHits(JOB)).toBe(1);
    expect(api.jobHits('5000')).toBe(1);
    await step(INTERVAL);
    await step(INTERVAL);
    expect(api.jobHits(JOB)).toBe(3);
    expect(api.jobHits('5000')).toBe(3);
  });

  it('when the job finishes, every session of it is told once, and polling stops', async () => {
    const { liveness, step } = setup();
    const sessions = [recorder(), recorder(), recorder()];
    for (const [i, cb] of sessions.entries()) liveness.watch(ref(), `s${i}`, cb);
    await step(INTERVAL);
    expect(sessions.every((cb) => cb.calls.length === 0)).toBe(true);
    api.setStatus(JOB, 'success');
    await step(INTERVAL);
    for (const cb of sessions) {
      expect(cb.calls).toEqual([
        {
          reason: 'job_finished',
          issuer: 'gitlab',
          job: `gitlab:gitlab:${JOB}`,
          status: 'success',
          source: 'poll',
        },
      ]);
    }
    expect(api.jobHits(JOB)).toBe(2);
    await step(INTERVAL * 5);
    expect(api.jobHits(JOB)).toBe(2);
    expect(sessions.every((cb) => cb.calls.length === 1)).toBe(true);
    expect(liveness.stats()).toMatchObject({ jobsWatched: 0, sessionsWatched: 0, jobsFinished: 1 });
  });

  it('an unwatched session is not told; the job stops being polled with its last session', async () => {
    const { liveness, step } = setup();
    const kept = recorder();
    const gone = recorder();
    liveness.watch(ref(), 'kept', kept);
    liveness.watch(ref(), 'gone', gone);
    liveness.unwatch('gone');
    api.setStatus(JOB, 'canceled');
    await step(INTERVAL);
    expect(kept.calls).toHaveLength(1);
    expect(gone.calls).toHaveLength(0);

    api.setJob(PROJECT, '7000', 'running');
    liveness.watch(ref('7000'), 'only', () => {});
    liveness.unwatch('only');
    await step(INTERVAL * 3);
    expect(api.jobHits('7000')).toBe(0);
    expect(liveness.stats().jobsWatched).toBe(0);
  });

  it('watching a job already known finished tells the session at once', async () => {
    api.setStatus(JOB, 'success');
    const { liveness } = setup();
    await liveness.checkOnce(ref());
    const cb = recorder();
    expect(liveness.watch(ref(), 'late', cb)).toBe(true);
    await liveness.settled();
    expect(cb.calls).toHaveLength(1);
    expect(cb.calls[0]?.source).toBe('check');
  });

  it('a check that finds the job finished ends the sessions already watching it', async () => {
    const { liveness } = setup();
    const cb = recorder();
    liveness.watch(ref(), 'first', cb);
    api.setStatus(JOB, 'failed');
    expect(await liveness.checkOnce(ref())).toBe('finished');
    await liveness.settled();
    expect(cb.calls).toHaveLength(1);
  });

  it('a throwing callback does not stop the others', async () => {
    const { liveness, step, log } = setup();
    const ok = recorder();
    liveness.watch(ref(), 'bad', () => {
      throw new Error('boom');
    });
    liveness.watch(ref(), 'ok', ok);
    api.setStatus(JOB, 'success');
    await step(INTERVAL);
    expect(ok.calls).toHaveLength(1);
    expect(log.at('warn').some((e) => e.msg === 'onFinished callback threw')).toBe(true);
  });
});

describe('rate limits', () => {
  it('429 with Retry-After (seconds): the next poll is not sent before it', async () => {
    const { liveness, step } = setup();
    const cb = recorder();
    liveness.watch(ref(), 's', cb);
    api.respondNext({ status: 429, headers: { 'retry-after': '30' }, body: { message: 'Retry later' } });
    await step(INTERVAL);
    expect(api.jobHits(JOB)).toBe(1);
    expect(liveness.jobs()[0]?.nextPollAt).toBe(EPOCH + INTERVAL + 30_000);
    await step(30_000 - 1);
    expect(api.jobHits(JOB)).toBe(1);
    await step(1);
    expect(api.jobHits(JOB)).toBe(2);
    // Rate limited is not unreachable, and the session lives on.
    expect(liveness.stats().apiUnreachable).toEqual({ gitlab: 0 });
    expect(cb.calls).toHaveLength(0);
  });

  it('429 with Retry-After as an HTTP-date is respected too', async () => {
    const { liveness, step, clock } = setup();
    liveness.watch(ref(), 's', () => {});
    await step(INTERVAL - 1);
    api.respondNext({
      status: 429,
      headers: { 'retry-after': new Date(clock.ms + 1 + 45_000).toUTCString() },
    });
    await step(1);
    await step(44_000);
    expect(api.jobHits(JOB)).toBe(1);
    await step(1_000);
    expect(api.jobHits(JOB)).toBe(2);
  });

  it('RateLimit-Remaining 0 holds every job of the issuer until RateLimit-Reset', async () => {
    api.setJob(PROJECT, '5000', 'running');
    const resetAt = EPOCH / 1000 + 120;
    api.setQuota({ remaining: 1, reset: resetAt });
    const { liveness, step } = setup();
    liveness.watch(ref(), 'a', () => {});
    // The first poll spends the last request of the window (RateLimit-Remaining: 0).
    await step(INTERVAL);
    expect(api.jobRequests).toBe(1);
    // A job watched now waits for the reset too, and session creation is not asked (fail open).
    liveness.watch(ref('5000'), 'b', () => {});
    expect(liveness.jobs().map((j) => j.nextPollAt)).toEqual([resetAt * 1000, resetAt * 1000]);
    expect(await liveness.checkOnce(ref('5000'))).toBe('unknown');
    await step(120_000 - INTERVAL - 1);
    expect(api.jobRequests).toBe(1);
    api.refillQuota();
    await step(1);
    expect(api.jobHits(JOB)).toBe(2);
    expect(api.jobHits('5000')).toBe(1);
    // No request was ever answered 429: the wait was respected, not discovered.
    expect(api.requests).toHaveLength(3);
  });
});

describe('API outages', () => {
  it('API down: unknown, backoff grows to its ceiling, the gauge says unreachable, recovery resets both', async () => {
    const gauge: Array<[string, boolean]> = [];
    const metrics: JobLivenessMetrics = { apiUnreachable: (issuer, down) => gauge.push([issuer, down]) };
    const { liveness, step, log } = setup({ metrics, maxBackoffMs: 60_000 });
    const cb = recorder();
    liveness.watch(ref(), 's', cb);
    await api.down('closed');
    expect(await liveness.checkOnce(ref())).toBe('unknown');
    expect(liveness.stats().apiUnreachable).toEqual({ gitlab: 1 });

    const delays: number[] = [];
    let next = INTERVAL;
    for (let i = 0; i < 4; i++) {
      await step(next);
      const [job] = liveness.jobs();
      expect(job?.failures).toBe(i + 1);
      next = job?.lastDelayMs ?? 0;
      delays.push(next);
    }
    expect(delays).toEqual([20_000, 40_000, 60_000, 60_000]);
    expect(cb.calls).toHaveLength(0);
    expect(liveness.stats().pollsError).toBe(4);
    expect(log.at('warn').filter((e) => e.msg?.includes('unreachable'))).toHaveLength(1);

    await api.up();
    await step(next);
    expect(liveness.jobs()[0]).toMatchObject({ failures: 0, lastDelayMs: INTERVAL });
    expect(liveness.stats().apiUnreachable).toEqual({ gitlab: 0 });
    expect(gauge).toEqual([
      ['gitlab', false],
      ['gitlab', true],
      ['gitlab', false],
    ]);
    expect(log.at('info').some((e) => e.msg?.includes('reachable again'))).toBe(true);
  });

  it('5xx answers and hung requests count as failures too', async () => {
    const { liveness } = setup({ requestTimeoutMs: 200 });
    await api.down('503');
    expect(await liveness.checkOnce(ref())).toBe('unknown');
    await api.down('hang');
    expect(await liveness.checkOnce(ref())).toBe('unknown');
    expect(liveness.stats()).toMatchObject({ checksError: 2, checksOk: 0, apiUnreachable: { gitlab: 1 } });
  });

  it('backoff is jittered between half and all of the exponential step', async () => {
    const { liveness, step } = setup({ random: () => 0 });
    liveness.watch(ref(), 's', () => {});
    await api.down('503');
    await step(INTERVAL);
    await step(INTERVAL);
    // failures 2: 10 s × 2² = 40 s, jitter factor ½ → 20 s.
    expect(liveness.jobs()[0]?.lastDelayMs).toBe(20_000);
  });

  it('a wrong token is an error, logged with its status and without the token', async () => {
    const wrong = 'glpat-WRONG-token-value-123';
    const { liveness, log, step } = setup({ token: wrong });
    liveness.watch(ref(), 's', () => {});
    expect(await liveness.checkOnce(ref())).toBe('unknown');
    await step(INTERVAL);
    expect(api.requests[0]?.headers['private-token']).toBe(wrong);
    const warn = log.at('warn').find((e) => (e.obj as { failure?: string }).failure === 'auth');
    expect(warn?.obj).toMatchObject({ issuer: 'gitlab', http_status: 401 });
    expect(liveness.stats().apiUnreachable).toEqual({ gitlab: 1 });
    expect(log.text()).not.toContain(wrong);
    expect(log.text()).not.toContain(api.token);
  });
});

describe('GitLab Job Hook', () => {
  const hook = (status: string, token = SECRET, event = 'Job Hook') => ({
    headers: { 'x-gitlab-event': event, 'x-gitlab-token': token, 'content-type': 'application/json' },
    body: JSON.stringify({
      object_kind: 'build',
      build_id: Number(JOB),
      build_name: 'migrate',
      build_stage: 'deploy',
      build_status: status,
      pipeline_id: 2366,
      project_id: Number(PROJECT),
      project_name: 'group / project',
    }),
  });

  it('a verified finished-job hook ends all its sessions at once, without polling', async () => {
    const { liveness, step } = setup({ webhookSecret: SECRET });
    const a = recorder();
    const b = recorder();
    liveness.watch(ref(), 'a', a);
    liveness.watch(ref(), 'b', b);
    const { headers, body } = hook('success');
    const outcome = liveness.handleGitlabHook(headers, body);
    expect(outcome).toMatchObject({
      outcome: 'applied',
      issuer: 'gitlab',
      sessionsEnded: 2,
      state: 'finished',
    });
    await liveness.settled();
    expect(a.calls).toEqual([
      expect.objectContaining({ reason: 'job_finished', source: 'webhook', status: 'success' }),
    ]);
    expect(b.calls).toHaveLength(1);
    await step(INTERVAL * 3);
    expect(api.jobRequests).toBe(0);
    // A token of that job presented afterwards is refused without asking the API.
    await expect(liveness.assertRunning(ref())).rejects.toBeInstanceOf(JobNotRunningError);
    expect(api.jobRequests).toBe(0);
  });

  it('a wrong secret is unauthorized and ends nothing', async () => {
    const { liveness } = setup({ webhookSecret: SECRET });
    const cb = recorder();
    liveness.watch(ref(), 'a', cb);
    const { headers, body } = hook('success', 'not-the-secret');
    expect(liveness.handleGitlabHook(headers, body)).toEqual({ outcome: 'unauthorized' });
    await liveness.settled();
    expect(cb.calls).toHaveLength(0);
    expect(liveness.stats().sessionsWatched).toBe(1);
  });

  it('another event with the right secret is ignored', async () => {
    const { liveness } = setup({ webhookSecret: SECRET });
    liveness.watch(ref(), 'a', () => {});
    const { headers, body } = hook('success', SECRET, 'Pipeline Hook');
    expect(liveness.handleGitlabHook(headers, body)).toMatchObject({
      outcome: 'ignored',
      reason: 'wrong_event',
    });
    expect(liveness.stats().sessionsWatched).toBe(1);
  });

  it('a running-job hook changes nothing', async () => {
    const { liveness } = setup({ webhookSecret: SECRET });
    liveness.watch(ref(), 'a', () => {});
    const { headers, body } = hook('running');
    expect(liveness.handleGitlabHook(headers, body)).toMatchObject({ outcome: 'applied', sessionsEnded: 0 });
    expect(liveness.stats().sessionsWatched).toBe(1);
  });

  it('without a configured webhook_secret every hook is unauthorized', () => {
    const { liveness } = setup();
    const { headers, body } = hook('success');
    expect(liveness.handleGitlabHook(headers, body)).toEqual({ outcome: 'unauthorized' });
  });
});
