// GitLab Job Hook verification: the secret token (constant-time), the event header, the body.
import { describe, expect, it } from 'vitest';
import { Secret } from '../../src/config/secret.js';
import { checkGitlabHook, verifyGitlabHook } from '../../src/jobs/index.js';

const SECRET = 'hook-secret-8f3a1c';

/** A Job Hook body as GitLab sends it (abridged from the webhook events reference). */
function jobHookBody(overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    object_kind: 'build',
    ref: 'main',
    tag: false,
    before_sha: '2293ada6b400935a1378653304eaf6221e0fdb8f',
    sha: '2293ada6b400935a1378653304eaf6221e0fdb8f',
    build_id: 1977,
    build_name: 'migrate',
    build_stage: 'deploy',
    build_status: 'success',
    build_created_at: '2025-01-01T10:00:00.000Z',
    build_started_at: '2025-01-01T10:00:05.000Z',
    build_finished_at: '2025-01-01T10:05:00.000Z',
    build_duration: 295.0,
    build_allow_failure: false,
    build_failure_reason: 'unknown_failure',
    retries_count: 0,
    pipeline_id: 2366,
    project_id: 380,
    project_name: 'group / project',
    user: { id: 3, name: 'User', email: 'user@example.com' },
    commit: { id: 2366, sha: '2293ada6b400935a1378653304eaf6221e0fdb8f', status: 'running' },
    repository: { name: 'project', homepage: 'https://gitlab.example.com/group/project' },
    project: { id: 380, path_with_namespace: 'group/project' },
    runner: { id: 380987, description: 'shared-runners', active: true, is_shared: true },
    environment: null,
    ...overrides,
  });
}

const goodHeaders = {
  'x-gitlab-event': 'Job Hook',
  'x-gitlab-token': SECRET,
  'content-type': 'application/json',
};

describe('verifyGitlabHook', () => {
  it('accepts a Job Hook with the right secret and reads project, job and status', () => {
    expect(verifyGitlabHook(goodHeaders, jobHookBody(), SECRET)).toEqual({
      project: '380',
      job: '1977',
      status: 'success',
    });
  });

  it('takes a Secret, fetch Headers, a Buffer body and any header case', () => {
    const headers = new Headers({ 'X-Gitlab-Event': 'Job Hook', 'X-Gitlab-Token': SECRET });
    const secret = new Secret({ env: 'HOOK' }, SECRET);
    expect(verifyGitlabHook(headers, Buffer.from(jobHookBody()), secret)?.job).toBe('1977');
    expect(
      verifyGitlabHook({ 'X-Gitlab-Event': 'Job Hook', 'X-GITLAB-TOKEN': SECRET }, jobHookBody(), SECRET)
        ?.job,
    ).toBe('1977');
  });

  it('rejects a wrong, missing, longer or shorter secret', () => {
    for (const token of ['hook-secret-8f3a1d', '', `${SECRET}x`, SECRET.slice(0, -1)]) {
      expect(checkGitlabHook({ ...goodHeaders, 'x-gitlab-token': token }, jobHookBody(), SECRET)).toEqual({
        ok: false,
        reason: 'unauthorized',
      });
    }
    const { 'x-gitlab-token': _omit, ...noToken } = goodHeaders;
    expect(verifyGitlabHook(noToken, jobHookBody(), SECRET)).toBeNull();
  });

  it('an empty configured secret matches nothing', () => {
    expect(verifyGitlabHook({ ...goodHeaders, 'x-gitlab-token': '' }, jobHookBody(), '')).toBeNull();
  });

  it('rejects other events, even with the right secret', () => {
    expect(
      checkGitlabHook({ ...goodHeaders, 'x-gitlab-event': 'Pipeline Hook' }, jobHookBody(), SECRET),
    ).toEqual({
      ok: false,
      reason: 'wrong_event',
    });
    expect(verifyGitlabHook(goodHeaders, jobHookBody({ object_kind: 'pipeline' }), SECRET)).toBeNull();
  });

  it('a repeated token header is ambiguous and refused', () => {
    expect(
      verifyGitlabHook({ ...goodHeaders, 'x-gitlab-token': [SECRET, SECRET] }, jobHookBody(), SECRET),
    ).toBeNull();
  });

  it('rejects bodies that are not job events', () => {
    expect(checkGitlabHook(goodHeaders, '{not json', SECRET)).toEqual({ ok: false, reason: 'malformed' });
    expect(checkGitlabHook(goodHeaders, jobHookBody({ build_id: 'x' }), SECRET)).toEqual({
      ok: false,
      reason: 'malformed',
    });
    expect(checkGitlabHook(goodHeaders, jobHookBody({ build_status: 7 }), SECRET)).toEqual({
      ok: false,
      reason: 'malformed',
    });
    expect(checkGitlabHook(goodHeaders, 'x'.repeat(1024 * 1024 + 1), SECRET)).toEqual({
      ok: false,
      reason: 'too_large',
    });
  });

  it('classifies the status it carries', () => {
    expect(checkGitlabHook(goodHeaders, jobHookBody({ build_status: 'running' }), SECRET)).toMatchObject({
      ok: true,
      state: 'running',
    });
    expect(checkGitlabHook(goodHeaders, jobHookBody({ build_status: 'canceled' }), SECRET)).toMatchObject({
      ok: true,
      state: 'finished',
    });
  });
});
