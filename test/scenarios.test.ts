// The decisions operators rely on, end to end through the identity layer's normalisation and
// the policy engine: platform-shaped claims (the dev issuer's presets, as GitLab and GitHub
// send them) against one realistic policy.
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../src/config/load.js';
import { normalize, presetClaims } from '../src/identity/index.js';
import { compilePolicy } from '../src/policy/index.js';

const GITLAB = 'https://gitlab.example.com';
const GITHUB = 'https://token.actions.githubusercontent.com';

const config = parseGatewayConfig(
  `
issuers:
  - {name: gitlab, kind: gitlab, issuer: ${GITLAB}, audience: ciport}
  - {name: github, kind: github, issuer: ${GITHUB}, audience: ciport}
targets:
  - {name: production-db, protocol: postgres, address: prod.internal:5432, tags: [production]}
  - {name: staging-db, protocol: postgres, address: staging.internal:5432}
  - {name: test-db, protocol: postgres, address: test.internal:5432}
rules:
  - name: no-forks
    deny: true
    issuer: gitlab
    when: {fork: true}
  - name: gl-main-to-production
    issuer: gitlab
    when:
      project_id: "61577203"
      ref_protected: true
      ref: main
      environment: production
      environment_protected: true
    allow: [production-db]
    max_ttl: 30m
  - name: gl-environments-to-staging
    issuer: gitlab
    when:
      project_id: "61577203"
      environment: {glob: "staging/*"}
    allow: [staging-db]
  - name: gl-any-branch-to-test
    issuer: gitlab
    when: {project_id: "61577203"}
    allow: [test-db]
    max_ttl: 1h
  - name: gh-main-to-production
    issuer: github
    when:
      repository_id: "81213410"
      ref: refs/heads/main
      environment: production
    allow: [production-db]
  - name: gh-reusable-deploy
    issuer: github
    when:
      repository_owner_id: "9919"
      job_workflow_ref: {glob: "acme/platform/.github/workflows/deploy.yml@refs/tags/v*"}
    allow: [production-db]
  - name: gh-pull-requests-to-test
    issuer: github
    when:
      repository_id: "81213410"
      event_name: {one_of: [push, pull_request]}
    allow: [test-db]
`,
  'scenarios.yaml',
);
const policy = compilePolicy(config);

type Preset = Parameters<typeof presetClaims>[0];

function decide(preset: Preset, overrides: Record<string, unknown>, targets: string[]) {
  const github = preset.startsWith('github');
  const claims = { ...presetClaims(preset, github ? GITHUB : GITLAB), ...overrides };
  const issuer = github ? 'github' : 'gitlab';
  const { facts } = normalize(github ? 'github' : 'gitlab', issuer, claims);
  return policy.decide({ issuer, facts, targets, defaultTtlMs: 15 * 60_000 });
}

const scenarios: Array<{
  name: string;
  preset: Preset;
  claims?: Record<string, unknown>;
  targets: string[];
  expect: 'allow' | 'deny';
  rule: string | null;
  because?: string;
}> = [
  {
    name: 'GitLab: protected main deploying to the protected production environment',
    preset: 'gitlab-main',
    claims: { environment: 'production', environment_protected: 'true', deployment_tier: 'production' },
    targets: ['production-db'],
    expect: 'allow',
    rule: 'gl-main-to-production',
  },
  {
    name: 'GitLab: a feature branch asking for production',
    preset: 'gitlab-main',
    claims: {
      ref: 'feature/x',
      ref_protected: 'false',
      environment: 'production',
      environment_protected: 'true',
    },
    targets: ['production-db'],
    expect: 'deny',
    rule: null,
    because: 'nearest rule "gl-main-to-production": ref_protected: expected true, got "false"',
  },
  {
    name: 'GitLab: a feature branch reaching the test database',
    preset: 'gitlab-main',
    claims: { ref: 'feature/x', ref_protected: 'false' },
    targets: ['test-db'],
    expect: 'allow',
    rule: 'gl-any-branch-to-test',
  },
  {
    name: 'GitLab: a merge request from a fork',
    preset: 'gitlab-fork-mr',
    targets: ['test-db'],
    expect: 'deny',
    rule: 'no-forks',
    because: 'denied by rule "no-forks" (fork = true)',
  },
  {
    name: 'GitLab: an environment job deploying to staging/eu',
    preset: 'gitlab-main',
    claims: { environment: 'staging/eu', environment_protected: 'false', deployment_tier: 'staging' },
    targets: ['staging-db'],
    expect: 'allow',
    rule: 'gl-environments-to-staging',
  },
  {
    name: 'GitLab: a nested environment does not match a single-segment glob',
    preset: 'gitlab-main',
    claims: { environment: 'staging/eu/extra' },
    targets: ['staging-db'],
    expect: 'deny',
    rule: null,
    because: 'environment: expected glob "staging/*", got "staging/eu/extra"',
  },
  {
    name: 'GitHub: a push to main in the production environment',
    preset: 'github-push',
    claims: { environment: 'production', sub: 'repo:acme/ledger:environment:production' },
    targets: ['production-db'],
    expect: 'allow',
    rule: 'gh-main-to-production',
  },
  {
    name: 'GitHub: a pull_request reaching the test database',
    preset: 'github-pr',
    targets: ['test-db'],
    expect: 'allow',
    rule: 'gh-pull-requests-to-test',
  },
  {
    name: 'GitHub: a pull_request asking for production',
    preset: 'github-pr',
    targets: ['production-db'],
    expect: 'deny',
    rule: null,
  },
  {
    name: 'GitHub: pull_request_target never matches unless a rule names trusted_event',
    preset: 'github-pr',
    claims: { event_name: 'pull_request_target' },
    targets: ['test-db'],
    expect: 'deny',
    rule: null,
    because: 'trusted_event: expected true (safe default: the rule does not name "trusted_event"), got false',
  },
  {
    name: 'GitHub: a tagged release of the organisation’s reusable deploy workflow',
    preset: 'github-push',
    claims: {
      repository: 'acme/billing',
      repository_id: '81299999',
      job_workflow_ref: 'acme/platform/.github/workflows/deploy.yml@refs/tags/v2.3.0',
    },
    targets: ['production-db'],
    expect: 'allow',
    rule: 'gh-reusable-deploy',
  },
  {
    name: 'GitHub: the reusable workflow from a branch, not a tag',
    preset: 'github-push',
    claims: {
      repository: 'acme/billing',
      repository_id: '81299999',
      job_workflow_ref: 'acme/platform/.github/workflows/deploy.yml@refs/heads/main',
    },
    targets: ['production-db'],
    expect: 'deny',
    rule: null,
  },
];

describe('scenario table', () => {
  for (const s of scenarios) {
    it(s.name, () => {
      const d = decide(s.preset, s.claims ?? {}, s.targets);
      expect(d.decision).toBe(s.expect);
      expect(d.rule).toBe(s.rule);
      if (s.expect === 'allow') expect(d.targets.map((t) => t.target)).toEqual(s.targets);
      if (s.because) expect(d.reason).toContain(s.because);
    });
  }

  it('caps the TTL at the granting rule’s max_ttl', () => {
    const d = decide('gitlab-main', { ref: 'feature/x' }, ['test-db']);
    expect(d.targets).toEqual([{ target: 'test-db', rule: 'gl-any-branch-to-test', ttlMs: 15 * 60_000 }]);
    const long = policy.decide({
      issuer: 'gitlab',
      facts: normalize('gitlab', 'gitlab', presetClaims('gitlab-main', GITLAB)).facts,
      targets: ['test-db'],
      ttlMs: 3 * 3_600_000,
      defaultTtlMs: 15 * 60_000,
    });
    expect(long.ttlMs).toBe(3_600_000);
  });
});
