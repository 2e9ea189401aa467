// Which job a token names: GitLab job_project_id/project_id + job_id, GitHub repository + run +
// attempt (+ check_run_id), nothing for generic OIDC; and ids that could steer a URL refused.
import { describe, expect, it } from 'vitest';
import { describeJob, jobKey, jobRefFromClaims } from '../../src/jobs/index.js';

const gitlab = { name: 'gl', kind: 'gitlab' } as const;
const github = { name: 'gh', kind: 'github' } as const;

describe('jobRefFromClaims', () => {
  it('GitLab: the project that runs the job (job_project_id) wins over project_id', () => {
    expect(jobRefFromClaims(gitlab, { project_id: '11', job_project_id: '22', job_id: '333' })).toEqual({
      platform: 'gitlab',
      issuer: 'gl',
      project: '22',
      job: '333',
    });
  });

  it('GitLab: older tokens without job_project_id fall back to project_id; numbers are read as ids', () => {
    expect(jobRefFromClaims(gitlab, { project_id: 11, job_id: 333 })).toEqual({
      platform: 'gitlab',
      issuer: 'gl',
      project: '11',
      job: '333',
    });
  });

  it('GitLab: no job without job_id, and ids that are not plain numbers are refused', () => {
    expect(jobRefFromClaims(gitlab, { project_id: '11' })).toBeNull();
    expect(jobRefFromClaims(gitlab, { project_id: '11', job_id: '../../users' })).toBeNull();
    expect(jobRefFromClaims(gitlab, { project_id: '11/../12', job_id: '5' })).toBeNull();
    expect(jobRefFromClaims(gitlab, { project_id: '-1', job_id: '5' })).toBeNull();
  });

  it('GitHub: repository, run and attempt, with the job when check_run_id is sent', () => {
    const claims = { repository: 'Octo-Org/app', run_id: '1658821493', run_attempt: '2' };
    expect(jobRefFromClaims(github, claims)).toEqual({
      platform: 'github',
      issuer: 'gh',
      repository: 'Octo-Org/app',
      run_id: '1658821493',
      run_attempt: '2',
    });
    expect(jobRefFromClaims(github, { ...claims, check_run_id: '4242' })).toMatchObject({ job: '4242' });
  });

  it('GitHub: no job without run_attempt or with a repository that is not owner/name', () => {
    expect(jobRefFromClaims(github, { repository: 'o/r', run_id: '1' })).toBeNull();
    expect(jobRefFromClaims(github, { repository: 'o/r/x', run_id: '1', run_attempt: '1' })).toBeNull();
    expect(jobRefFromClaims(github, { repository: '../r', run_id: '1', run_attempt: '1' })).toBeNull();
    expect(jobRefFromClaims(github, { repository: 'o/..', run_id: '1', run_attempt: '1' })).toBeNull();
  });

  it('generic OIDC issuers name no job: liveness does not apply', () => {
    expect(jobRefFromClaims({ name: 'kc', kind: 'oidc' }, { job_id: '1', project_id: '2' })).toBeNull();
  });
});

describe('jobKey', () => {
  it('is one key per job: GitLab by job id (instance-unique), GitHub case-insensitive repository', () => {
    expect(jobKey({ platform: 'gitlab', issuer: 'gl', project: '1', job: '9' })).toBe(
      jobKey({ platform: 'gitlab', issuer: 'gl', project: '2', job: '9' }),
    );
    expect(jobKey({ platform: 'gitlab', issuer: 'gl', project: '1', job: '9' })).not.toBe(
      jobKey({ platform: 'gitlab', issuer: 'other', project: '1', job: '9' }),
    );
    const a = {
      platform: 'github',
      issuer: 'gh',
      repository: 'Org/App',
      run_id: '5',
      run_attempt: '1',
    } as const;
    expect(jobKey(a)).toBe(jobKey({ ...a, repository: 'org/app' }));
    expect(jobKey(a)).not.toBe(jobKey({ ...a, run_attempt: '2' }));
  });

  it('describes a job with ids only', () => {
    expect(describeJob({ platform: 'gitlab', issuer: 'gl', project: '1', job: '9' })).toBe(
      'GitLab job 9 of project 1',
    );
  });
});
