// Claim normalisation per platform, on full, realistic claim sets (shapes from the GitLab and
// GitHub documentation, and a Keycloak client-credentials token).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseGitHubSubject } from '../../src/identity/github-subject.js';
import { normalize, type Principal } from '../../src/identity/principal.js';
import { UNTRUSTED_EVENTS } from '../../src/identity/principal-github.js';

const gitlabMain = {
  namespace_id: '72',
  namespace_path: 'acme',
  project_id: '61577203',
  project_path: 'acme/ledger',
  job_namespace_id: '72',
  job_namespace_path: 'acme',
  job_project_id: '61577203',
  job_project_path: 'acme/ledger',
  user_id: '1042',
  user_login: 'ada',
  user_email: 'ada@example.com',
  user_access_level: 'maintainer',
  user_identities: [{ provider: 'github', extern_uid: '2435223452345' }],
  groups_direct: ['acme', 'acme/platform'],
  pipeline_id: '1519139981',
  pipeline_source: 'push',
  job_id: '8222997048',
  job_source: 'push',
  ref: 'main',
  ref_type: 'branch',
  ref_path: 'refs/heads/main',
  ref_protected: 'true',
  environment: 'staging/eu',
  environment_protected: 'false',
  deployment_tier: 'staging',
  environment_action: 'start',
  runner_id: 12270835,
  runner_environment: 'gitlab-hosted',
  sha: '8fe1b322a576d59fe6257052a4107df7dc1b8c78',
  project_visibility: 'private',
  ci_config_ref_uri: 'gitlab.com/acme/ledger//.gitlab-ci.yml@refs/heads/main',
  ci_config_sha: '8fe1b322a576d59fe6257052a4107df7dc1b8c78',
  jti: '235b3a54-b797-45c7-ae9a-f72d7bc6ef5b',
  iss: 'https://gitlab.com',
  iat: 1_681_395_193,
  nbf: 1_681_395_188,
  exp: 1_681_398_793,
  sub: 'project_path:acme/ledger:ref_type:branch:ref:main',
  aud: 'https://ciport.example.com',
};

const gitlabForkMr = {
  ...gitlabMain,
  namespace_id: '90210',
  namespace_path: 'mallory',
  project_id: '70011234',
  project_path: 'mallory/ledger',
  pipeline_source: 'merge_request_event',
  pipeline_source_event: 'merge_request',
  target_ref: 'main',
  target_ref_protected: 'true',
  ref: 'fix-typo',
  ref_path: 'refs/heads/fix-typo',
  ref_protected: 'false',
  environment: undefined,
  environment_protected: undefined,
  sub: 'project_path:mallory/ledger:ref_type:branch:ref:fix-typo',
};

const githubPush = {
  jti: 'example-id',
  sub: 'repo:acme/ledger:environment:production',
  environment: 'production',
  aud: 'https://ciport.example.com',
  ref: 'refs/heads/main',
  sha: '8fe1b322a576d59fe6257052a4107df7dc1b8c78',
  repository: 'acme/ledger',
  repository_owner: 'acme',
  actor_id: '583231',
  repository_visibility: 'private',
  repository_id: '81213410',
  repository_owner_id: '9919',
  run_id: '9876543210',
  run_number: '412',
  run_attempt: '2',
  check_run_id: '30366254157',
  runner_environment: 'github-hosted',
  actor: 'ada',
  workflow: 'deploy',
  head_ref: '',
  base_ref: '',
  event_name: 'push',
  ref_type: 'branch',
  ref_protected: 'true',
  workflow_ref: 'acme/ledger/.github/workflows/deploy.yml@refs/heads/main',
  workflow_sha: '8fe1b322a576d59fe6257052a4107df7dc1b8c78',
  job_workflow_ref: 'acme/ledger/.github/workflows/deploy.yml@refs/heads/main',
  job_workflow_sha: '8fe1b322a576d59fe6257052a4107df7dc1b8c78',
  iss: 'https://token.actions.githubusercontent.com',
  nbf: 1_632_492_967,
  exp: 1_632_493_867,
  iat: 1_632_493_567,
};

const keycloakClientCredentials = {
  exp: 1_700_000_300,
  iat: 1_700_000_000,
  jti: 'b4a1a2f0-6d0c-4c4e-9a1b-3f1c2d3e4f50',
  iss: 'https://sso.example.com/realms/ci',
  aud: ['ciport', 'account'],
  sub: '7f1c2d3e-4f50-4b4a-8a2f-0d6c4c4e9a1b',
  typ: 'Bearer',
  azp: 'jenkins-deployer',
  acr: '1',
  'allowed-origins': ['/*'],
  realm_access: { roles: ['default-roles-ci', 'offline_access', 'deployer'] },
  resource_access: { account: { roles: ['manage-account'] } },
  scope: 'profile email',
  clientHost: '10.1.2.3',
  email_verified: false,
  preferred_username: 'service-account-jenkins-deployer',
  clientAddress: '10.1.2.3',
  client_id: 'jenkins-deployer',
  groups: ['/ci/deployers'],
};

describe('GitLab', () => {
  it('normalises a protected main-branch push with an environment', () => {
    const { principal, facts } = normalize('gitlab', 'gitlab', gitlabMain);
    expect(principal).toEqual<Principal>({
      issuer: 'gitlab',
      kind: 'gitlab',
      subject: 'project_path:acme/ledger:ref_type:branch:ref:main',
      project: { id: '61577203', path: 'acme/ledger' },
      namespace: { id: '72', path: 'acme' },
      ref: { name: 'main', type: 'branch', protected: true },
      pipeline_id: '1519139981',
      job_id: '8222997048',
      job_url: 'https://gitlab.com/acme/ledger/-/jobs/8222997048',
      environment: { name: 'staging/eu', protected: false },
      actor: 'ada',
      event: 'push',
      fork: false,
      trusted_event: true,
      groups: ['acme', 'acme/platform'],
      roles: [],
    });
    // Policy sees raw claims unchanged (typed as GitLab sends them) plus the derived flags.
    expect(facts).toMatchObject({ ref_protected: 'true', runner_id: 12270835, project_id: '61577203' });
    expect(facts.fork).toBe(false);
    expect(facts.trusted_event).toBe(true);
  });

  it('flags a merge request from a fork running in the parent project', () => {
    const { principal, facts } = normalize('gitlab', 'gitlab', gitlabForkMr);
    expect(principal.fork).toBe(true);
    expect(principal.trusted_event).toBe(false);
    expect(principal.project).toEqual({ id: '70011234', path: 'mallory/ledger' });
    // The job itself lives in the parent project.
    expect(principal.job_url).toBe('https://gitlab.com/acme/ledger/-/jobs/8222997048');
    expect(principal.event).toBe('merge_request_event');
    expect(principal.ref).toEqual({ name: 'fix-typo', type: 'branch', protected: false });
    expect(principal.environment).toBeNull();
    expect(facts).toMatchObject({ fork: true, trusted_event: false, job_project_id: '61577203' });
  });

  it('cannot see a fork without job_project_id (GitLab before 18.4)', () => {
    const { job_project_id, job_project_path, job_namespace_id, job_namespace_path, ...old } = gitlabMain;
    expect(normalize('gitlab', 'gitlab', old).principal).toMatchObject({
      fork: false,
      trusted_event: true,
      job_url: 'https://gitlab.com/acme/ledger/-/jobs/8222997048',
    });
  });

  it('treats job_project_id without project_id as a fork (unknown is untrusted)', () => {
    const { project_id, ...odd } = gitlabMain;
    expect(normalize('gitlab', 'gitlab', odd).principal.fork).toBe(true);
  });

  it('builds job URLs for self-managed instances under a path', () => {
    const claims = { ...gitlabMain, iss: 'https://git.example.org/gitlab/' };
    expect(normalize('gitlab', 'gl', claims).principal.job_url).toBe(
      'https://git.example.org/gitlab/acme/ledger/-/jobs/8222997048',
    );
  });

  it('derived flags override same-named raw claims', () => {
    const { facts } = normalize('gitlab', 'gitlab', { ...gitlabForkMr, fork: 'false', trusted_event: true });
    expect(facts.fork).toBe(true);
    expect(facts.trusted_event).toBe(false);
  });
});

describe('GitHub', () => {
  it('normalises a push to main deploying to an environment', () => {
    const { principal, facts } = normalize('github', 'github', githubPush);
    expect(principal).toEqual<Principal>({
      issuer: 'github',
      kind: 'github',
      subject: 'repo:acme/ledger:environment:production',
      project: { id: '81213410', path: 'acme/ledger' },
      namespace: { id: '9919', path: 'acme' },
      ref: { name: 'main', type: 'branch', protected: true },
      pipeline_id: '9876543210',
      job_id: '30366254157',
      job_url: 'https://github.com/acme/ledger/actions/runs/9876543210/attempts/2',
      environment: { name: 'production', protected: null },
      actor: 'ada',
      event: 'push',
      fork: false,
      trusted_event: true,
      groups: [],
      roles: [],
    });
    expect(facts).toMatchObject({
      ref: 'refs/heads/main',
      ref_protected: 'true',
      fork: false,
      trusted_event: true,
    });
  });

  it('normalises a pull_request run', () => {
    const claims = {
      ...githubPush,
      sub: 'repo:acme/ledger:pull_request',
      environment: undefined,
      event_name: 'pull_request',
      ref: 'refs/pull/42/merge',
      ref_protected: 'false',
      head_ref: 'fix-typo',
      base_ref: 'main',
    };
    const { principal } = normalize('github', 'github', claims);
    expect(principal).toMatchObject({
      event: 'pull_request',
      trusted_event: true,
      fork: false,
      environment: null,
      ref: { name: 'refs/pull/42/merge', type: 'branch', protected: false },
    });
  });

  // Every event an outsider (no write access) can trigger that runs with the base repository's
  // privileges (docs/identity.md).
  const outsiderEvents = [
    'discussion',
    'discussion_comment',
    'fork',
    'gollum',
    'issue_comment',
    'issues',
    'pull_request_review',
    'pull_request_review_comment',
    'pull_request_target',
    'watch',
    'workflow_run',
  ];
  for (const event of outsiderEvents) {
    it(`marks ${event} as untrusted`, () => {
      const { principal, facts } = normalize('github', 'github', { ...githubPush, event_name: event });
      expect(principal.trusted_event).toBe(false);
      expect(facts.trusted_event).toBe(false);
      expect(principal.fork).toBe(false);
    });
  }

  for (const event of ['push', 'workflow_dispatch', 'release', 'schedule', 'pull_request']) {
    it(`keeps ${event} trusted (it needs write access, or no ID token from a fork)`, () => {
      const { principal } = normalize('github', 'github', { ...githubPush, event_name: event });
      expect(principal.trusted_event).toBe(true);
    });
  }

  it('the docs list exactly the untrusted events the code has', () => {
    expect([...UNTRUSTED_EVENTS].sort()).toEqual(outsiderEvents);
    const docs = readFileSync(new URL('../../docs/identity.md', import.meta.url), 'utf8');
    for (const event of UNTRUSTED_EVENTS) expect(docs).toContain(`\`${event}\``);
  });

  it('short-names tags', () => {
    const { principal } = normalize('github', 'github', {
      ...githubPush,
      ref: 'refs/tags/v1.2.0',
      ref_type: 'tag',
    });
    expect(principal.ref).toEqual({ name: 'v1.2.0', type: 'tag', protected: true });
  });

  it('links runs on GitHub Enterprise Server and GHE.com to their own host', () => {
    const ghes = normalize('github', 'ghes', {
      ...githubPush,
      iss: 'https://github.corp.example/_services/token',
    });
    expect(ghes.principal.job_url).toBe(
      'https://github.corp.example/acme/ledger/actions/runs/9876543210/attempts/2',
    );
    const tenant = normalize('github', 'ghe', {
      ...githubPush,
      iss: 'https://token.actions.octocorp.ghe.com',
    });
    expect(tenant.principal.job_url).toBe(
      'https://octocorp.ghe.com/acme/ledger/actions/runs/9876543210/attempts/2',
    );
  });

  it('falls back to the immutable subject for ids', () => {
    const { repository_id, repository_owner_id, repository, repository_owner, ...bare } = githubPush;
    const { principal } = normalize('github', 'github', {
      ...bare,
      sub: 'repo:acme@9919/ledger@81213410:ref:refs/heads/main',
    });
    expect(principal.project).toEqual({ id: '81213410', path: 'acme/ledger' });
    expect(principal.namespace).toEqual({ id: '9919', path: 'acme' });
  });
});

describe('GitHub subjects', () => {
  it.each([
    [
      'repo:octo-org/octo-repo:ref:refs/heads/main',
      {
        owner: 'octo-org',
        ownerId: null,
        repository: 'octo-org/octo-repo',
        repositoryId: null,
        context: { type: 'ref', ref: 'refs/heads/main' },
      },
    ],
    [
      'repo:octo-org/octo-repo:environment:Production%3AV1',
      { repository: 'octo-org/octo-repo', context: { type: 'environment', name: 'Production:V1' } },
    ],
    [
      'repo:octo-org/octo-repo:pull_request',
      { repository: 'octo-org/octo-repo', context: { type: 'pull_request' } },
    ],
    [
      'repo:octo-org@123456/octo-repo@456789:ref:refs/heads/main',
      {
        owner: 'octo-org',
        ownerId: '123456',
        repository: 'octo-org/octo-repo',
        repositoryId: '456789',
        context: { type: 'ref', ref: 'refs/heads/main' },
      },
    ],
    [
      'repo:octo-org/octo-repo:environment:prod:job_workflow_ref:octo-org/wf/.github/workflows/d.yml@refs/heads/main',
      {
        context: {
          type: 'other',
          value: 'environment:prod:job_workflow_ref:octo-org/wf/.github/workflows/d.yml@refs/heads/main',
        },
      },
    ],
  ])('parses %s', (sub, expected) => {
    expect(parseGitHubSubject(sub)).toMatchObject(expected);
  });

  it.each(['project_path:acme/ledger:ref_type:branch:ref:main', 'repo:no-slash:ref:x', 'repo:a/b', ''])(
    'rejects %j',
    (sub) => {
      expect(parseGitHubSubject(sub)).toBeNull();
    },
  );
});

describe('generic OIDC', () => {
  it('normalises a Keycloak client-credentials token', () => {
    const { principal, facts } = normalize('oidc', 'keycloak', keycloakClientCredentials);
    expect(principal).toEqual<Principal>({
      issuer: 'keycloak',
      kind: 'oidc',
      subject: '7f1c2d3e-4f50-4b4a-8a2f-0d6c4c4e9a1b',
      project: null,
      namespace: null,
      ref: null,
      pipeline_id: null,
      job_id: null,
      job_url: null,
      environment: null,
      actor: 'service-account-jenkins-deployer',
      event: null,
      fork: false,
      trusted_event: true,
      groups: ['/ci/deployers'],
      roles: ['default-roles-ci', 'offline_access', 'deployer'],
    });
    expect(facts).toMatchObject({ azp: 'jenkins-deployer', fork: false, trusted_event: true });
  });

  it('names an Okta client-credentials client by cid', () => {
    const okta = {
      ver: 1,
      jti: 'AT.x',
      iss: 'https://acme.okta.com/oauth2/default',
      aud: 'api://ciport',
      iat: 1_700_000_000,
      exp: 1_700_003_600,
      cid: '0oa1b2c3d4e5f6g7h8i9',
      scp: ['ciport.session'],
      sub: '0oa1b2c3d4e5f6g7h8i9',
    };
    expect(normalize('oidc', 'okta', okta).principal).toMatchObject({
      actor: '0oa1b2c3d4e5f6g7h8i9',
      roles: [],
      groups: [],
    });
  });

  it('merges top-level roles with realm roles once each', () => {
    const { principal } = normalize('oidc', 'kc', {
      sub: 's',
      roles: ['deployer', 'reader'],
      realm_access: { roles: ['deployer'] },
    });
    expect(principal.roles).toEqual(['deployer', 'reader']);
  });
});
