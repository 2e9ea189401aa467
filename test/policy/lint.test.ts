import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import type { MatcherInput } from '../../src/config/schema.js';
import { formatFinding, type LintInput, lintPolicy, type PolicyRuleInput } from '../../src/policy/index.js';

const H = 3_600_000;

const NORMATIVE = `
sessions: {default_ttl: 15m}
issuers:
  - {name: gitlab, kind: gitlab, issuer: https://gitlab.com, audience: https://ciport.example.com, leeway: 30s}
targets:
  - {name: staging-db, protocol: postgres, address: db.internal:5432, database: app}
rules:
  - name: no-forks
    deny: true
    issuer: gitlab
    when: {fork: true}
  - name: ledger-main-to-staging
    issuer: gitlab
    when:
      project_id: "61577203"
      ref_protected: true
      ref: {one_of: [main, "release"]}
      environment: {glob: "staging/*"}
      pipeline_source: {not: {one_of: [merge_request_event, external_pull_request_event]}}
    allow: [staging-db]
    max_ttl: 30m
`;

const issuers = [
  { name: 'gitlab', kind: 'gitlab', leeway: 30_000 },
  { name: 'github', kind: 'github', leeway: 30_000 },
  { name: 'keycloak', kind: 'oidc', leeway: 30_000 },
];
const targets = [
  { name: 'staging-db', tags: [] },
  { name: 'prod-db', tags: [] },
  { name: 'ledger-api', tags: ['Production'] },
];

function lint(rules: PolicyRuleInput[], extra: Partial<LintInput> = {}) {
  return lintPolicy({ issuers, targets, rules, sessions: { default_ttl: 15 * 60_000 }, ...extra });
}
const gitlabRule = (
  when: Record<string, MatcherInput>,
  allow = ['staging-db'],
  extra: Partial<PolicyRuleInput> = {},
) => ({
  name: 'r',
  issuer: 'gitlab',
  when,
  allow,
  ...extra,
});
const codes = (rules: PolicyRuleInput[], extra: Partial<LintInput> = {}) =>
  lint(rules, extra).map((f) => f.code);

describe('lintPolicy', () => {
  it('finds nothing in the normative example', () => {
    const config = parseGatewayConfig(NORMATIVE, 'gateway.yaml', { resolveSecrets: false });
    expect(lintPolicy(config)).toEqual([]);
  });

  it('no-project-pin: per issuer kind, exact or one_of only', () => {
    expect(lint([gitlabRule({ ref: 'main' })])).toEqual([
      {
        level: 'warning',
        code: 'no-project-pin',
        rule: 'r',
        path: 'rules[0].when',
        message:
          'rule "r" pins no project or owner id: add an exact value or one_of for project_id or namespace_id or job_project_id',
      },
    ]);
    expect(codes([gitlabRule({ project_id: { glob: '6157*' } })])).toEqual(['no-project-pin']);
    expect(codes([gitlabRule({ project_id: { regex: '\\d+' } })])).toEqual(['no-project-pin']);
    expect(codes([gitlabRule({ project_id: { present: true } })])).toEqual(['no-project-pin']);
    expect(codes([gitlabRule({ project_id: { not: '1' } })])).toEqual(['no-project-pin']);
    expect(codes([gitlabRule({ project_id: { any: ['1', { glob: '2*' }] } })])).toEqual(['no-project-pin']);
    // a GitHub claim does not pin a GitLab rule
    expect(codes([gitlabRule({ repository_id: '1' })])).toEqual(['no-project-pin']);
    expect(codes([gitlabRule({ project_id: '1' })])).toEqual([]);
    expect(codes([gitlabRule({ namespace_id: 72 })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: ['1', '2'] })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: { one_of: ['1', '2'] } })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: { all: [{ glob: '1*' }, '12'] } })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: { any: ['1', { exact: '2' }] } })])).toEqual([]);
    expect(
      codes([{ name: 'gh', issuer: 'github', when: { repository: 'acme/app' }, allow: ['staging-db'] }]),
    ).toEqual(['no-project-pin']);
    expect(
      codes([{ name: 'gh', issuer: 'github', when: { repository_owner_id: '9' }, allow: ['staging-db'] }]),
    ).toEqual([]);
    expect(
      lint([{ name: 'kc', issuer: 'keycloak', when: { azp: { glob: 'ci-*' } }, allow: ['staging-db'] }])[0]
        ?.message,
    ).toBe(
      'rule "kc" pins no project or owner id: add an exact value or one_of for sub or azp or client_id or cid or appid',
    );
    expect(
      codes([{ name: 'kc', issuer: 'keycloak', when: { client_id: 'ci' }, allow: ['staging-db'] }]),
    ).toEqual([]);
  });

  it('subgroup-glob: ** on path claims', () => {
    expect(lint([gitlabRule({ project_id: '1', project_path: { glob: 'acme/**' } })])).toEqual([
      {
        level: 'warning',
        code: 'subgroup-glob',
        rule: 'r',
        path: 'rules[0].when.project_path',
        message:
          'rule "r": glob "acme/**" on project_path crosses "/" and ":", reaching every subgroup and project below it',
      },
    ]);
    expect(
      codes([gitlabRule({ project_id: '1', namespace_path: { any: ['x', { glob: 'acme/**/ops' }] } })]),
    ).toEqual(['subgroup-glob']);
    expect(
      codes([
        {
          name: 'gh',
          issuer: 'github',
          when: { repository_id: '1', job_workflow_ref: { glob: 'acme/**' } },
          allow: ['staging-db'],
        },
      ]),
    ).toEqual(['subgroup-glob']);
    // single-segment globs, non-path claims and negated globs are fine
    expect(codes([gitlabRule({ project_id: '1', project_path: { glob: 'acme/*' } })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: '1', environment: { glob: 'staging/**' } })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: '1', project_path: { not: { glob: 'acme/**' } } })])).toEqual([]);
  });

  it('unprotected-production: by name or tag, unless a protected ref or environment is required', () => {
    expect(lint([gitlabRule({ project_id: '1' }, ['prod-db', 'ledger-api', 'staging-db'])])).toEqual([
      {
        level: 'error',
        code: 'unprotected-production',
        rule: 'r',
        path: 'rules[0].when',
        message:
          'rule "r" grants production targets "prod-db", "ledger-api" without requiring ref_protected: true or environment_protected: true',
      },
    ]);
    expect(codes([gitlabRule({ project_id: '1', ref_protected: 'false' }, ['prod-db'])])).toEqual([
      'unprotected-production',
    ]);
    expect(codes([gitlabRule({ project_id: '1', ref_protected: [true, false] }, ['prod-db'])])).toEqual([
      'unprotected-production',
    ]);
    expect(codes([gitlabRule({ project_id: '1', ref_protected: { present: true } }, ['prod-db'])])).toEqual([
      'unprotected-production',
    ]);
    expect(codes([gitlabRule({ project_id: '1', environment: 'production' }, ['prod-db'])])).toEqual([
      'unprotected-production',
    ]);
    expect(codes([gitlabRule({ project_id: '1', ref_protected: true }, ['prod-db'])])).toEqual([]);
    expect(codes([gitlabRule({ project_id: '1', ref_protected: 'true' }, ['prod-db'])])).toEqual([]);
    expect(codes([gitlabRule({ project_id: '1', environment_protected: true }, ['ledger-api'])])).toEqual([]);
    expect(
      codes([
        gitlabRule({ project_id: '1', ref_protected: { all: [true, { present: true }] } }, ['prod-db']),
      ]),
    ).toEqual([]);
    const gh = (when: Record<string, MatcherInput>) => [
      { name: 'gh', issuer: 'github', when: { repository_id: '1', ...when }, allow: ['prod-db'] },
    ];
    expect(codes(gh({ environment: 'production' }))).toEqual([]);
    expect(codes(gh({ environment: { glob: 'prod*' } }))).toEqual(['unprotected-production']);
    expect(lint(gh({}))[0]?.message).toBe(
      'rule "gh" grants production target "prod-db" without requiring ref_protected: true, environment_protected: true or a pinned environment',
    );
    const kc = lint([{ name: 'kc', issuer: 'keycloak', when: { sub: 'svc' }, allow: ['prod-db'] }]);
    expect(kc.map((f) => [f.level, f.code])).toEqual([['warning', 'unprotected-production']]);
  });

  it('long-leeway', () => {
    expect(lint([], { issuers: [{ name: 'gitlab', kind: 'gitlab', leeway: 300_000 }] })).toEqual([
      {
        level: 'warning',
        code: 'long-leeway',
        path: 'issuers[0].leeway',
        message: 'issuer "gitlab" accepts tokens 5m past expiry (over 2m)',
      },
    ]);
    expect(lint([], { issuers: [{ name: 'gitlab', kind: 'gitlab', leeway: 120_000 }] })).toEqual([]);
  });

  it('long-ttl on rules and on the session default', () => {
    expect(lint([gitlabRule({ project_id: '1' }, ['staging-db'], { max_ttl: 24 * H })])).toEqual([
      {
        level: 'warning',
        code: 'long-ttl',
        rule: 'r',
        path: 'rules[0].max_ttl',
        message: 'rule "r" allows sessions of 1d (over 12h)',
      },
    ]);
    expect(lint([], { sessions: { default_ttl: 13 * H } })).toEqual([
      {
        level: 'warning',
        code: 'long-ttl',
        path: 'sessions.default_ttl',
        message: 'sessions last 13h by default (over 12h)',
      },
    ]);
    expect(
      codes([gitlabRule({ project_id: '1' }, ['staging-db'], { max_ttl: 12 * H })], {
        sessions: { default_ttl: 12 * H },
      }),
    ).toEqual([]);
  });

  it('undefined-target', () => {
    expect(lint([gitlabRule({ project_id: '1' }, ['staging-db', 'agent-redis'])])).toEqual([
      {
        level: 'warning',
        code: 'undefined-target',
        rule: 'r',
        path: 'rules[0].allow[1]',
        message: 'rule "r" allows target "agent-redis", which is not defined here; an agent must serve it',
      },
    ]);
  });

  it('deny-all', () => {
    expect(lint([{ name: 'stop', issuer: 'gitlab', deny: true, when: {} }])).toEqual([
      {
        level: 'warning',
        code: 'deny-all',
        rule: 'stop',
        path: 'rules[0].when',
        message: 'deny rule "stop" has no conditions: it denies every token of issuer "gitlab"',
      },
    ]);
    expect(codes([{ name: 'stop', issuer: 'gitlab', deny: true }])).toEqual(['deny-all']);
    expect(codes([{ name: 'stop', issuer: 'gitlab', deny: true, when: { fork: true } }])).toEqual([]);
  });

  it('allows-fork and allows-untrusted-event', () => {
    expect(lint([gitlabRule({ project_id: '1', fork: true, trusted_event: false })])).toEqual([
      {
        level: 'warning',
        code: 'allows-fork',
        rule: 'r',
        path: 'rules[0].when.fork',
        message: 'rule "r" allows tokens from forks (fork: true)',
      },
      {
        level: 'warning',
        code: 'allows-untrusted-event',
        rule: 'r',
        path: 'rules[0].when.trusted_event',
        message: 'rule "r" allows tokens from untrusted events (trusted_event: false)',
      },
    ]);
    expect(codes([gitlabRule({ project_id: '1', fork: { present: true } })])).toEqual(['allows-fork']);
    expect(codes([gitlabRule({ project_id: '1', trusted_event: [true, false] })])).toEqual([
      'allows-untrusted-event',
    ]);
    expect(codes([gitlabRule({ project_id: '1', fork: false, trusted_event: true })])).toEqual([]);
    expect(codes([gitlabRule({ project_id: '1', fork: 'false', trusted_event: 'true' })])).toEqual([]);
  });

  it('invalid-matcher is reported, not thrown', () => {
    expect(lint([gitlabRule({ project_id: '1', ref: { regex: '(' } })])).toEqual([
      {
        level: 'error',
        code: 'invalid-matcher',
        rule: 'r',
        path: 'rules[0].when.ref.regex',
        message: 'rules[0].when.ref.regex: invalid regex "(": Unterminated group',
      },
    ]);
  });

  it('lists findings in config order and formats them', () => {
    const findings = lint(
      [
        gitlabRule({ ref: 'main' }, ['prod-db'], { name: 'a' }),
        { name: 'b', issuer: 'gitlab', deny: true, when: {} },
      ],
      { issuers: [{ name: 'gitlab', kind: 'gitlab', leeway: 600_000 }] },
    );
    expect(findings.map((f) => `${f.path} ${f.code}`)).toEqual([
      'issuers[0].leeway long-leeway',
      'rules[0].when no-project-pin',
      'rules[0].when unprotected-production',
      'rules[1].when deny-all',
    ]);
    expect(formatFinding(findings[3]!)).toBe(
      'warning rules[1].when deny-all: deny rule "b" has no conditions: it denies every token of issuer "gitlab"',
    );
  });

  it('approval-bypass: a target another rule of the issuer guards with approval, allowed without it', () => {
    const pin = { project_id: '1', ref_protected: true };
    const approval = { groups: ['dba'], count: 1, timeout: 15 * 60_000 };
    const guarded = { ...gitlabRule(pin, ['prod-db', 'staging-db']), name: 'guarded', approval };
    const open = { ...gitlabRule(pin, ['staging-db', 'prod-db']), name: 'open' };
    const findings = lint([guarded, open]).filter((f) => f.code === 'approval-bypass');
    expect(findings.map((f) => [f.rule, f.path])).toEqual([
      ['open', 'rules[1].allow[0]'],
      ['open', 'rules[1].allow[1]'],
    ]);
    expect(findings[1]?.message).toBe(
      'rule "open" allows target "prod-db" without approval, which rule "guarded" guards with approval: a token matching both may be granted it without approval',
    );
    // Another issuer, or both rules with approval: nothing to say.
    expect(codes([guarded, { ...open, issuer: 'github', when: { repository_id: '1' } }])).not.toContain(
      'approval-bypass',
    );
    expect(codes([guarded, { ...open, approval }])).not.toContain('approval-bypass');
  });
});
