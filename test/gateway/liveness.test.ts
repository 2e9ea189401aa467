// Job liveness wired into a real gateway (loopback HTTP/2, fixture GitLab API): a finished job
// cuts its sessions' tunnels within one poll interval, a finished job's token is refused, rate
// limits are respected, an unreachable API fails open (metric), the GitLab Job Hook ends sessions
// at once, and single-use jtis are refused on replay.
import { afterEach, describe, expect, it } from 'vitest';
import { baseEnv, ensureBuilt, runCli } from '../fixtures/cli.js';
import type { GitlabApiFixture } from '../fixtures/gitlab-api.js';
import { waitFor } from '../fixtures/wait-for.js';
import { HOOK_SECRET, type LivenessOptions, startLivenessHarness } from '../jobs/gateway-harness.js';
import { api, closed, type Harness, h2, openSession, roundTrip, sleep, tunnel } from './helpers.js';

const PROJECT = '61577203';
let h: Harness | undefined;
let gl: GitlabApiFixture | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
  gl = undefined;
});

async function startWith(options: LivenessOptions = {}) {
  const harness = await startLivenessHarness(options);
  h = harness;
  gl = harness.gitlab;
  return harness;
}

async function metric(harness: Harness, name: string, labels = ''): Promise<number | undefined> {
  const text = await harness.gateway.metrics.registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line ? Number(line.split(' ')[1]) : undefined;
}

async function events(harness: Harness, type: string) {
  return (await harness.gateway.store.auditEvents({ limit: 10_000 })).filter((e) => e.type === type);
}

describe('job liveness', () => {
  it('cuts a live tunnel within one poll interval once the job finishes; session.ended says job_finished', async () => {
    await startWith({ poll: '200ms' });
    gl!.setJob(PROJECT, 4001, 'running');
    const c = await h!.client();
    const s = await openSession(c, await h!.token({ job_id: '4001' }), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    // Still tunnelling across several polls while the job runs.
    await sleep(500);
    expect(gl!.jobHits(4001)).toBeGreaterThanOrEqual(2);
    const echoed = new Promise<Buffer>((resolve) => stream.once('data', resolve));
    stream.write('ping');
    expect((await echoed).toString()).toBe('ping');
    expect(await metric(h!, 'ciport_jobs_watched')).toBe(1);

    const finishedAt = Date.now();
    gl!.setStatus(4001, 'success');
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    // One poll interval (200 ms) plus one request and the cut; generous for a loaded machine.
    expect(Date.now() - finishedAt).toBeLessThan(200 + 600);
    const record = await waitFor(async () => {
      const r = await h!.gateway.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(record.endReason).toBe('job_finished');
    const ended = (await events(h!, 'session.ended')).find((e) => e.data.session === s.id);
    expect(ended?.data).toMatchObject({ reason: 'job_finished', by: 'job_api gitlab: success (poll)' });
    expect(await metric(h!, 'ciport_jobs_finished_total', '{issuer="gitlab",source="poll"}')).toBe(1);
    expect(await metric(h!, 'ciport_jobs_watched')).toBe(0);
    const hb = await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret });
    expect(hb.status).toBe(410);
    expect(hb.body.error.end_reason).toBe('job_finished');
  });

  it("a restarted gateway watches its live sessions' jobs again (job ref stored with the session)", async () => {
    await startWith({ poll: '200ms' });
    gl!.setJob(PROJECT, 4011, 'running');
    const c = await h!.client();
    const s = await openSession(c, await h!.token({ job_id: '4011' }), { targets: ['echo'] });
    expect((await h!.gateway.store.getSession(s.id))?.jobRef).toEqual({
      platform: 'gitlab',
      issuer: 'gitlab',
      project: PROJECT,
      job: '4011',
    });
    await h!.restart();
    expect(h!.gateway.liveness?.stats()).toMatchObject({ jobsWatched: 1, sessionsWatched: 1 });
    const c2 = await h!.client();
    const stream = await tunnel(c2, s, 'echo');
    gl!.setStatus(4011, 'canceled');
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    // The connections are cut first, then the end commits (src/session/manager.ts `end`).
    const ended = await waitFor(async () => {
      const r = await h!.gateway.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(ended.endReason).toBe('job_finished');
  });

  it("refuses a finished job's still-valid token with 403 CIPORT_E_JOB_NOT_RUNNING, audited", async () => {
    await startWith();
    gl!.setJob(PROJECT, 4002, 'failed');
    const c = await h!.client();
    const res = await api(c, 'POST', '/v1/sessions', {
      bearer: await h!.token({ job_id: '4002' }),
      body: {},
    });
    expect(res.status).toBe(403);
    expect(res.body.error.code).toBe('CIPORT_E_JOB_NOT_RUNNING');
    expect(res.headers['ciport-error']).toBe('CIPORT_E_JOB_NOT_RUNNING');
    const denied = await events(h!, 'session.denied');
    expect(denied).toHaveLength(1);
    expect(denied[0]?.data).toMatchObject({ error_code: 'CIPORT_E_JOB_NOT_RUNNING', rule: 'ledger-main' });
    expect(String(denied[0]?.data.reason)).toMatch(/no longer running \(status: failed\)/);
    expect(await h!.gateway.store.listSessions()).toHaveLength(0);
    expect(await metric(h!, 'ciport_sessions_denied_total', '{reason="CIPORT_E_JOB_NOT_RUNNING"}')).toBe(1);
  });

  it("`ciport exec` with a finished job's token exits 3 and runs nothing", async () => {
    await ensureBuilt();
    await startWith();
    gl!.setJob(PROJECT, 4010, 'success');
    const token = await h!.token({ job_id: '4010' });
    const r = await runCli(['exec', 'echo', '--', 'sh', '-c', 'echo RAN'], {
      env: baseEnv({
        CIPORT_GATEWAY: h!.gateway.url,
        CIPORT_CA_FILE: h!.gateway.caFile ?? '',
        CIPORT_ID_TOKEN: token,
      }),
    });
    expect(r.code).toBe(3);
    expect(r.stdout).not.toContain('RAN');
    expect(r.stderr).toMatch(/^ciport: CIPORT_E_JOB_NOT_RUNNING: /);
    expect(r.stderr).not.toContain(token);
  }, 240_000);

  it('respects 429 Retry-After before polling again', async () => {
    await startWith({ poll: '200ms' });
    gl!.setJob(PROJECT, 4003, 'running');
    const c = await h!.client();
    await openSession(c, await h!.token({ job_id: '4003' }), { targets: ['echo'] });
    const afterCheck = gl!.jobHits(4003);
    expect(afterCheck).toBe(1);
    gl!.respondNext({ status: 429, headers: { 'retry-after': '2' }, body: { message: 'Retry later' } });
    // The first poll (~200 ms) gets the 429; without honouring Retry-After there would be ~8
    // more polls in the next 1.6 s.
    await waitFor(() => gl!.jobHits(4003) === 2, 2000);
    const limitedAt = Date.now();
    await sleep(1500);
    expect(gl!.jobHits(4003)).toBe(2);
    await waitFor(() => gl!.jobHits(4003) >= 3, 3000);
    expect(Date.now() - limitedAt).toBeGreaterThanOrEqual(1700);
    expect(
      await metric(
        h!,
        'ciport_job_api_requests_total',
        '{issuer="gitlab",purpose="poll",outcome="rate_limited"}',
      ),
    ).toBe(1);
    // A rate limit is not "unreachable".
    expect(await metric(h!, 'ciport_job_api_unreachable', '{issuer="gitlab"}')).toBe(0);
  });

  it('API down: sessions survive (fail open) until their lease, and the metric shows it', async () => {
    await startWith({ poll: '100ms', sessions: { lease_timeout: '1500ms' } });
    gl!.setJob(PROJECT, 4004, 'running');
    const c = await h!.client();
    const s = await openSession(c, await h!.token({ job_id: '4004' }), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    await gl!.down('closed');
    await waitFor(
      async () => (await metric(h!, 'ciport_job_api_unreachable', '{issuer="gitlab"}')) === 1,
      3000,
    );
    // Heartbeats keep it alive while the API is down.
    for (let i = 0; i < 4; i++) {
      await sleep(400);
      expect((await api(c, 'POST', `/v1/sessions/${s.id}/heartbeat`, { bearer: s.secret })).status).toBe(200);
    }
    expect((await h!.gateway.store.getSession(s.id))?.state).toBe('active');
    // A new session opens too: liveness unknown, identity and policy passed.
    const s2 = await openSession(c, await h!.token({ job_id: '4004' }), { targets: ['echo'] });
    expect(s2.id).toMatch(/^ses_/);
    // Heartbeats stop: the lease, not the API, ends it.
    stream.write('x');
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    // The connections are cut first, then the end commits (src/session/manager.ts `end`).
    const ended = await waitFor(async () => {
      const r = await h!.gateway.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(ended.endReason).toBe('lease_expired');
    // Back up: the gauge clears on the next successful request.
    await gl!.up();
    const c2 = await h!.client();
    await openSession(c2, await h!.token({ job_id: '4004' }), { targets: ['echo'] });
    await waitFor(
      async () => (await metric(h!, 'ciport_job_api_unreachable', '{issuer="gitlab"}')) === 0,
      3000,
    );
  });

  it('POST /v1/hooks/gitlab: 401 on a wrong secret, 204 and the job ends its sessions at once', async () => {
    await startWith({ poll: '1h' });
    gl!.setJob(PROJECT, 4005, 'running');
    const c = await h!.client();
    const s = await openSession(c, await h!.token({ job_id: '4005' }), { targets: ['echo'] });
    const other = await openSession(c, await h!.token({ job_id: '4006' }), { targets: ['echo'] });
    const stream = await tunnel(c, s, 'echo');
    const body = Buffer.from(
      JSON.stringify({
        object_kind: 'build',
        build_id: 4005,
        build_status: 'canceled',
        project_id: Number(PROJECT),
        pipeline_id: 1,
      }),
    );
    const wrong = await api(c, 'POST', '/v1/hooks/gitlab', {
      rawBody: body,
      headers: { 'x-gitlab-event': 'Job Hook', 'x-gitlab-token': 'nope' },
    });
    expect(wrong.status).toBe(401);
    expect(wrong.body.error.code).toBe('CIPORT_E_WEBHOOK_UNAUTHORIZED');
    expect((await h!.gateway.store.getSession(s.id))?.state).toBe('active');
    const started = Date.now();
    const ok = await api(c, 'POST', '/v1/hooks/gitlab', {
      rawBody: body,
      headers: { 'x-gitlab-event': 'Job Hook', 'x-gitlab-token': HOOK_SECRET },
    });
    expect(ok.status).toBe(204);
    expect(await closed(stream)).toBe(h2.NGHTTP2_CANCEL);
    expect(Date.now() - started).toBeLessThan(1000);
    // The connections are cut first, then the end commits (src/session/manager.ts `end`).
    const ended = await waitFor(async () => {
      const r = await h!.gateway.store.getSession(s.id);
      return r?.state === 'ended' ? r : undefined;
    });
    expect(ended.endReason).toBe('job_finished');
    expect((await h!.gateway.store.getSession(other.id))?.state).toBe('active');
    // Another event kind from a sender that knows the secret: 204, ignored.
    const pipeline = await api(c, 'POST', '/v1/hooks/gitlab', {
      rawBody: Buffer.from(JSON.stringify({ object_kind: 'pipeline' })),
      headers: { 'x-gitlab-event': 'Pipeline Hook', 'x-gitlab-token': HOOK_SECRET },
    });
    expect(pipeline.status).toBe(204);
    expect((await h!.gateway.store.getSession(other.id))?.state).toBe('active');
  });

  it('single_use_jti: a token opens one session; its replay is refused with CIPORT_E_TOKEN_REPLAYED', async () => {
    await startWith({ singleUse: true });
    gl!.setJob(PROJECT, 4007, 'running');
    const c = await h!.client();
    const token = await h!.token({ job_id: '4007' });
    const first = await openSession(c, token, { targets: ['echo'] });
    const echo = await tunnel(c, first, 'echo');
    expect((await roundTrip(echo, Buffer.from('one'))).toString()).toBe('one');
    const replay = await api(c, 'POST', '/v1/sessions', { bearer: token, body: { targets: ['echo'] } });
    expect(replay.status).toBe(401);
    expect(replay.body.error.code).toBe('CIPORT_E_TOKEN_REPLAYED');
    // Even after the first session ended.
    await api(c, 'DELETE', `/v1/sessions/${first.id}`, { bearer: first.secret });
    const again = await api(c, 'POST', '/v1/sessions', { bearer: token, body: {} });
    expect(again.body.error?.code).toBe('CIPORT_E_TOKEN_REPLAYED');
    // The repeat within the window is counted, not written again (docs/audit.md, "Denials").
    const denied = await events(h!, 'session.denied');
    expect(denied.map((e) => e.data.error_code)).toEqual(['CIPORT_E_TOKEN_REPLAYED']);
    // A fresh token (new jti) of the same job is fine.
    await openSession(c, await h!.token({ job_id: '4007' }), {});
    expect(await h!.gateway.store.listSessions()).toHaveLength(2);
  });
});
