// Session-creation rate limits (issue 10, item 12): one bucket per CI job, a ceiling per issuer,
// both taken together or not at all.
import { describe, expect, it } from 'vitest';
import { normalize } from '../../src/identity/principal.js';
import { jobKey, projectKey, SessionRateLimit } from '../../src/session/rate-limit.js';

const gitlab = (job: string) =>
  normalize('gitlab', 'gitlab', {
    sub: 'project_path:acme/ledger:ref_type:branch:ref:main',
    project_id: '61577203',
    job_id: job,
  });

describe('jobKey', () => {
  it('is the job on GitLab, so parallel jobs of one branch (one sub) differ', () => {
    const a = gitlab('101');
    const b = gitlab('102');
    expect(a.principal.subject).toBe(b.principal.subject);
    expect(jobKey(a.principal, {})).toBe('job:101');
    expect(jobKey(b.principal, {})).not.toBe(jobKey(a.principal, {}));
  });

  it('is the run attempt on GitHub without check_run_id, the check run with it', () => {
    const claims = { sub: 'repo:acme/ledger:ref:refs/heads/main', run_id: '77', run_attempt: '2' };
    const run = normalize('github', 'github', claims);
    expect(jobKey(run.principal, claims)).toBe('run:77:2:repo:acme/ledger:ref:refs/heads/main');
    const retry = normalize('github', 'github', { ...claims, run_attempt: '3' });
    expect(jobKey(retry.principal, { ...claims, run_attempt: '3' })).not.toBe(jobKey(run.principal, claims));
    const check = normalize('github', 'github', { ...claims, check_run_id: '555' });
    expect(jobKey(check.principal, {})).toBe('job:555');
  });

  it('is the subject for a generic OIDC client', () => {
    const client = normalize('oidc', 'keycloak', { sub: 'service-account-ci' });
    expect(jobKey(client.principal, {})).toBe('sub:service-account-ci');
  });
});

describe('SessionRateLimit', () => {
  it('limits one job, caps the issuer, and a refusal takes from neither bucket', () => {
    let now = 0;
    const limit = new SessionRateLimit({
      perJob: { perMinute: 60, burst: 2, now: () => now },
      perIssuer: { perMinute: 60, burst: 3, now: () => now },
    });
    expect(limit.take('gitlab', 'job:1')).toEqual({ ok: true });
    expect(limit.take('gitlab', 'job:1')).toEqual({ ok: true });
    const hammer = limit.take('gitlab', 'job:1');
    expect(hammer).toMatchObject({ ok: false, scope: 'job', key: 'job:1' });
    expect(hammer.ok === false && hammer.waitMs).toBe(1000);
    // The refused request did not spend the issuer's third token.
    expect(limit.take('gitlab', 'job:2')).toEqual({ ok: true });
    expect(limit.take('gitlab', 'job:3')).toMatchObject({ ok: false, scope: 'issuer', key: 'gitlab' });
    // Other issuers have their own ceiling.
    expect(limit.take('github', 'job:3')).toEqual({ ok: true });
    now += 1000;
    expect(limit.take('gitlab', 'job:3')).toEqual({ ok: true });
  });
});

describe('SessionRateLimit denials', () => {
  it('limits denials per project and per issuer, never touching the buckets of allowed sessions', () => {
    const now = 0;
    const limit = new SessionRateLimit({
      perJob: { perMinute: 60, burst: 2, now: () => now },
      perIssuer: { perMinute: 60, burst: 2, now: () => now },
      deniedPerProject: { perMinute: 60, burst: 3, now: () => now },
      deniedPerIssuer: { perMinute: 60, burst: 4, now: () => now },
    });
    for (let i = 0; i < 3; i++) expect(limit.takeDenied('gitlab', 'project:666')).toEqual({ ok: true });
    const flood = limit.takeDenied('gitlab', 'project:666');
    expect(flood).toMatchObject({ ok: false, scope: 'project', key: 'project:666' });
    expect(flood.ok === false && flood.waitMs).toBe(1000);
    // The refused denial spent nothing from the issuer's denial ceiling: one left for another project.
    expect(limit.takeDenied('gitlab', 'project:777')).toEqual({ ok: true });
    expect(limit.takeDenied('gitlab', 'project:888')).toMatchObject({
      ok: false,
      scope: 'denials',
      key: 'gitlab',
    });
    // Allowed sessions still have their whole ceiling.
    expect(limit.take('gitlab', 'job:1')).toEqual({ ok: true });
    expect(limit.take('gitlab', 'job:2')).toEqual({ ok: true });
    expect(limit.take('gitlab', 'job:3')).toMatchObject({ ok: false, scope: 'issuer' });
    // Other issuers have their own denial buckets.
    expect(limit.takeDenied('github', 'project:666')).toEqual({ ok: true });
  });
});

describe('projectKey', () => {
  it('is the project id, else its path, else the subject', () => {
    expect(projectKey(gitlab('1').principal)).toBe('project:61577203');
    const github = normalize('github', 'github', {
      sub: 'repo:acme/x:ref:refs/heads/main',
      repository_id: '42',
    });
    expect(projectKey(github.principal)).toBe('project:42');
    expect(projectKey(normalize('oidc', 'kc', { sub: 'svc' }).principal)).toBe('sub:svc');
  });
});
