import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import type { MatcherInput } from '../../src/config/schema.js';
import { ConfigError, UsageError } from '../../src/errors/index.js';
import {
  compilePolicy,
  type Decision,
  formatDecision,
  type PolicyRuleInput,
} from '../../src/policy/index.js';

// The normative example of DESIGN.md, "Configuration (normative example)", as written.
const NORMATIVE = `
listen: 127.0.0.1:8443
public_url: https://ciport.example.com:8443
tls:
  cert: {file: /etc/ciport/tls.crt}
  key: {file: /etc/ciport/tls.key}
data_dir: ./ciport-data
store:
  sqlite: {path: ./ciport-data/ciport.db}
admin_tokens:
  - {env: CIPORT_ADMIN_TOKEN}
sessions:
  default_ttl: 15m
  lease_timeout: 30s
issuers:
  - name: gitlab
    kind: gitlab
    issuer: https://gitlab.com
    audience: https://ciport.example.com
    leeway: 30s
targets:
  - name: staging-db
    protocol: postgres
    address: db.internal:5432
    database: app
    credentials:
      user: app
      password: {env: STAGING_DB_PASSWORD}
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

const config = parseGatewayConfig(NORMATIVE, 'gateway.yaml', { resolveSecrets: false });
const policy = compilePolicy(config);
const MIN = 60_000;
const DEFAULT_TTL = config.sessions.default_ttl;

/** What GitLab puts in a job's ID token (strings for booleans and ids), plus the derived facts. */
function gitlabClaims(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    iss: 'https://gitlab.com',
    aud: 'https://ciport.example.com',
    sub: 'project_path:acme/ledger:ref_type:branch:ref:main',
    iat: 1_760_000_000,
    nbf: 1_760_000_000,
    exp: 1_760_000_300,
    jti: '6b1c2a44-2c4f-4e8e-9f5c-0f3a1d9e7b21',
    namespace_id: '72',
    namespace_path: 'acme',
    project_id: '61577203',
    project_path: 'acme/ledger',
    user_id: '42',
    user_login: 'alice',
    user_email: 'alice@example.com',
    user_access_level: 'maintainer',
    pipeline_id: '2024001',
    pipeline_source: 'push',
    job_id: '9001',
    ref: 'main',
    ref_type: 'branch',
    ref_path: 'refs/heads/main',
    ref_protected: 'true',
    environment: 'staging/eu',
    environment_protected: 'false',
    deployment_tier: 'staging',
    runner_id: 12345,
    runner_environment: 'gitlab-hosted',
    sha: '5e1c309dae7f45e0f39b1bf3ac3cd9db12e7d689',
    project_visibility: 'private',
    ci_config_ref_uri: 'gitlab.com/acme/ledger//.gitlab-ci.yml@refs/heads/main',
    fork: false,
    trusted_event: true,
    ...overrides,
  };
}

const decide = (facts: Record<string, unknown>, extra: { targets?: string[]; ttlMs?: number } = {}) =>
  policy.decide({ issuer: 'gitlab', facts, defaultTtlMs: DEFAULT_TTL, ...extra });

describe('normative example', () => {
  it('allows a protected main pipeline deploying to staging/eu', () => {
    const d = decide(gitlabClaims());
    expect(d).toEqual({
      decision: 'allow',
      rule: 'ledger-main-to-staging',
      rules: ['ledger-main-to-staging'],
      targets: [{ target: 'staging-db', rule: 'ledger-main-to-staging', ttlMs: 15 * MIN }],
      ttlMs: 15 * MIN,
      reason: 'allowed by rule "ledger-main-to-staging": staging-db for 15m',
      failures: [],
      nearest: null,
    } satisfies Decision);
  });

  it('allows release, and the typed id as a number', () => {
    const d = decide(gitlabClaims({ ref: 'release', project_id: 61577203, ref_protected: true }));
    expect(d.decision).toBe('allow');
  });

  it('denies a fork by rule no-forks', () => {
    const d = decide(gitlabClaims({ fork: true }));
    expect(d).toEqual({
      decision: 'deny',
      rule: 'no-forks',
      rules: ['no-forks'],
      targets: [],
      ttlMs: null,
      reason: 'denied by rule "no-forks" (fork = true)',
      failures: [],
      nearest: null,
      holding: [{ claim: 'fork', actual: 'true' }],
    } satisfies Decision);
  });

  it('denies a feature branch, naming ref as the failing condition', () => {
    const d = decide(gitlabClaims({ ref: 'feature/login', ref_path: 'refs/heads/feature/login' }));
    expect(d.decision).toBe('deny');
    expect(d.rule).toBeNull();
    expect(d.reason).toBe(
      'no rule allows this token; nearest rule "ledger-main-to-staging": ref: expected one of [main, release], got "feature/login"',
    );
    expect(d.nearest).toEqual({
      rule: 'ledger-main-to-staging',
      claim: 'ref',
      expected: 'one of [main, release]',
      actual: '"feature/login"',
      message: 'ref: expected one of [main, release], got "feature/login"',
    });
    expect(d.failures).toEqual([d.nearest]);
  });

  it('denies an unprotected branch, naming ref_protected first', () => {
    const d = decide(gitlabClaims({ ref: 'feature/x', ref_protected: 'false' }));
    expect(d.reason).toBe(
      'no rule allows this token; nearest rule "ledger-main-to-staging": ref_protected: expected true, got "false"',
    );
  });

  it('denies merge request pipelines and other environments', () => {
    expect(decide(gitlabClaims({ pipeline_source: 'merge_request_event' })).nearest?.message).toBe(
      'pipeline_source: expected not (one of [merge_request_event, external_pull_request_event]), got "merge_request_event"',
    );
    expect(decide(gitlabClaims({ environment: 'staging/eu/1' })).nearest?.claim).toBe('environment');
    expect(decide(gitlabClaims({ environment: undefined })).nearest?.message).toBe(
      'environment: expected glob "staging/*", claim missing',
    );
    expect(decide(gitlabClaims({ project_id: '61577204' })).nearest?.actual).toBe('"61577204"');
  });

  it('an absent pipeline_source satisfies the not-matcher', () => {
    const facts = gitlabClaims();
    delete facts.pipeline_source;
    expect(decide(facts).decision).toBe('allow');
  });

  it('is JSON-serialisable and deterministic', () => {
    for (const facts of [gitlabClaims(), gitlabClaims({ fork: true }), gitlabClaims({ ref: 'dev' })]) {
      const d = decide(facts);
      expect(JSON.parse(JSON.stringify(d))).toEqual(d);
      expect(decide(facts)).toEqual(d);
      // `holding` / `deniedTargets` appear only on the denials they explain (policy.disclose).
      const optional = new Set(['holding', 'deniedTargets']);
      expect(Object.keys(d).filter((k) => !optional.has(k))).toEqual([
        'decision',
        'rule',
        'rules',
        'targets',
        'ttlMs',
        'reason',
        'failures',
        'nearest',
      ]);
    }
  });

  it('renders for humans', () => {
    expect(formatDecision(decide(gitlabClaims({ ref: 'dev' })))).toBe(
      'deny: no rule allows this token; nearest rule "ledger-main-to-staging": ref: expected one of [main, release], got "dev"\n' +
        'rules that did not match (first failing condition):\n' +
        '  "ledger-main-to-staging": ref: expected one of [main, release], got "dev"  (nearest)\n',
    );
    expect(formatDecision(decide(gitlabClaims()))).toBe(
      'allow: allowed by rule "ledger-main-to-staging": staging-db for 15m\n' +
        '  staging-db  rule "ledger-main-to-staging"  ttl 15m\n',
    );
  });
});

function rule(
  name: string,
  when: Record<string, MatcherInput>,
  allow: string[],
  extra: Partial<PolicyRuleInput> = {},
) {
  return { name, issuer: 'gitlab', when, allow, ...extra };
}

describe('safe defaults', () => {
  const open = compilePolicy({
    rules: [rule('ledger', { project_id: '61577203' }, ['staging-db'])],
  });
  const forkAware = compilePolicy({
    rules: [rule('forks-ok', { project_id: '61577203', fork: { present: true } }, ['staging-db'])],
  });
  const eventAware = compilePolicy({
    rules: [rule('any-event', { project_id: '61577203', trusted_event: [true, false] }, ['staging-db'])],
  });
  const run = (p: typeof open, facts: Record<string, unknown>) =>
    p.decide({ issuer: 'gitlab', facts, defaultTtlMs: DEFAULT_TTL });

  it('a fork never matches a rule that does not name fork', () => {
    const d = run(open, gitlabClaims({ fork: true }));
    expect(d.decision).toBe('deny');
    expect(d.nearest).toEqual({
      rule: 'ledger',
      claim: 'fork',
      expected: 'false (safe default: the rule does not name "fork")',
      actual: 'true',
      message: 'fork: expected false (safe default: the rule does not name "fork"), got true',
    });
    expect(run(open, gitlabClaims({ fork: false })).decision).toBe('allow');
  });

  it('a rule naming fork explicitly may match a fork', () => {
    expect(run(forkAware, gitlabClaims({ fork: true })).decision).toBe('allow');
    // naming fork does not lift the trusted_event default
    expect(run(forkAware, gitlabClaims({ fork: true, trusted_event: false })).nearest?.claim).toBe(
      'trusted_event',
    );
  });

  it('an untrusted event never matches a rule that does not name trusted_event', () => {
    const d = run(open, gitlabClaims({ trusted_event: false }));
    expect(d.decision).toBe('deny');
    expect(d.reason).toBe(
      'no rule allows this token; nearest rule "ledger": trusted_event: expected true (safe default: the rule does not name "trusted_event"), got false',
    );
    expect(run(eventAware, gitlabClaims({ trusted_event: false })).decision).toBe('allow');
  });

  it('derived flags given as strings count too', () => {
    expect(run(open, gitlabClaims({ fork: 'true' })).decision).toBe('deny');
    expect(run(open, gitlabClaims({ trusted_event: 'false' })).decision).toBe('deny');
  });

  it('deny rules are not subject to the default', () => {
    const p = compilePolicy({
      rules: [
        rule('stop', { project_id: '61577203' }, [], { deny: true }),
        rule('ledger', {}, ['staging-db']),
      ],
    });
    expect(run(p, gitlabClaims({ fork: true })).reason).toBe(
      'denied by rule "stop" (project_id = "61577203")',
    );
  });
});

describe('targets and TTL', () => {
  const p = compilePolicy({
    issuers: [{ name: 'gitlab' }, { name: 'github' }],
    rules: [
      rule('short', { project_id: '1' }, ['db', 'cache'], { max_ttl: 30 * MIN }),
      rule('long', { project_id: '1', ref: 'main' }, ['db'], { max_ttl: 2 * 60 * MIN }),
      rule('uncapped', { project_id: '1', ref: 'main' }, ['logs']),
      rule('prod', { project_id: '1', ref_protected: true }, ['prod-db']),
    ],
  });
  const run = (facts: Record<string, unknown>, targets?: string[], ttlMs?: number, defaultTtlMs = 15 * MIN) =>
    p.decide({ issuer: 'gitlab', facts, targets, ttlMs, defaultTtlMs });
  const main = { project_id: '1', ref: 'main', ref_protected: 'false' };

  it('without a request grants the union at the default TTL, capped per target', () => {
    const d = run(main, undefined, undefined, 60 * MIN);
    expect(d.targets).toEqual([
      { target: 'db', rule: 'long', ttlMs: 60 * MIN },
      { target: 'cache', rule: 'short', ttlMs: 30 * MIN },
      { target: 'logs', rule: 'uncapped', ttlMs: 60 * MIN },
    ]);
    expect(d.ttlMs).toBe(30 * MIN);
    expect(d.rule).toBe('short');
    expect(d.rules).toEqual(['short', 'long', 'uncapped']);
    expect(run(main, []).targets.map((t) => t.target)).toEqual(['db', 'cache', 'logs']);
  });

  it('the requested TTL applies, capped by the largest max_ttl of the granting rules', () => {
    expect(run(main, ['db'], 5 * MIN).targets).toEqual([{ target: 'db', rule: 'long', ttlMs: 5 * MIN }]);
    expect(run(main, ['db'], 10 * 60 * MIN).targets).toEqual([
      { target: 'db', rule: 'long', ttlMs: 2 * 60 * MIN },
    ]);
    expect(run(main, ['cache'], 10 * 60 * MIN).ttlMs).toBe(30 * MIN);
    expect(run(main, ['logs'], 10 * 60 * MIN).ttlMs).toBe(10 * 60 * MIN);
    // only "short" matches off main: db is capped at 30m
    expect(run({ project_id: '1', ref: 'dev' }, ['db'], 60 * MIN).targets).toEqual([
      { target: 'db', rule: 'short', ttlMs: 30 * MIN },
    ]);
  });

  it('reports only the rules that grant what was requested', () => {
    const d = run(main, ['logs']);
    expect(d.rule).toBe('uncapped');
    expect(d.rules).toEqual(['uncapped']);
    expect(d.reason).toBe('allowed by rule "uncapped": logs for 15m');
  });

  it('requests are all-or-nothing', () => {
    const d = run({ project_id: '1', ref: 'dev', ref_protected: 'false' }, [
      'db',
      'logs',
      'prod-db',
      'nowhere',
    ]);
    expect(d.decision).toBe('deny');
    expect(d.targets).toEqual([]);
    expect(d.ttlMs).toBeNull();
    expect(d.reason).toBe(
      'no rule allows targets "logs", "prod-db", "nowhere" for this token; nearest rule "uncapped": ref: expected "main", got "dev"',
    );
    // candidates are the non-matching rules that allow a missing target ("long" only allows db)
    expect(d.failures.map((f) => f.rule)).toEqual(['uncapped', 'prod']);
  });

  it('a target no rule allows is named', () => {
    expect(run(main, ['db', 'nowhere']).reason).toBe('no rule for issuer "gitlab" allows target "nowhere"');
    expect(run({ project_id: '2' }, ['nowhere']).reason).toBe(
      'no rule for issuer "gitlab" allows target "nowhere"',
    );
  });

  it('duplicate requested targets are granted once', () => {
    expect(run(main, ['db', 'db']).targets).toEqual([{ target: 'db', rule: 'long', ttlMs: 15 * MIN }]);
  });

  it('nearest prefers the rule with the most satisfied conditions, ties to config order', () => {
    const d = run({ project_id: '2', ref: 'main' });
    expect(d.failures.map((f) => [f.rule, f.claim])).toEqual([
      ['short', 'project_id'],
      ['long', 'project_id'],
      ['uncapped', 'project_id'],
      ['prod', 'project_id'],
    ]);
    expect(d.nearest?.rule).toBe('long');
    expect(run({ project_id: '2' }).nearest?.rule).toBe('short');
  });

  it('with requested targets, nearest is among the rules that allow them', () => {
    expect(run({ project_id: '1', ref: 'dev', ref_protected: 'false' }, ['prod-db']).reason).toBe(
      'no rule allows target "prod-db" for this token; nearest rule "prod": ref_protected: expected true, got "false"',
    );
    expect(run({ project_id: '9' }, ['prod-db']).nearest?.rule).toBe('prod');
  });

  it('says when an issuer has no rules', () => {
    const d = p.decide({ issuer: 'github', facts: {}, defaultTtlMs: MIN });
    expect(d.reason).toBe('no rule allows tokens from issuer "github"');
    expect(p.decide({ issuer: 'keycloak', facts: {}, defaultTtlMs: MIN }).reason).toBe(
      'no rule allows tokens from issuer "keycloak" (not a configured issuer)',
    );
  });

  it('rejects nonsensical TTLs', () => {
    expect(() => run(main, ['db'], 0)).toThrow(UsageError);
    expect(() => run(main, ['db'], Number.NaN)).toThrow(UsageError);
    expect(() => run(main, ['db'], undefined, -1)).toThrow(UsageError);
  });

  it('exposes rule summaries', () => {
    expect(p.rule('long')).toEqual({
      name: 'long',
      issuer: 'gitlab',
      deny: false,
      allow: ['db'],
      maxTtlMs: 120 * MIN,
      limits: null,
      approval: null,
    });
    expect(p.rule('missing')).toBeUndefined();
  });
});

describe('deny rules', () => {
  it('the first matching deny rule wins, before any allowing rule', () => {
    const p = compilePolicy({
      rules: [
        rule('allow-all', { project_id: '1' }, ['db']),
        rule('no-mr', { pipeline_source: 'merge_request_event', project_id: { present: true } }, [], {
          deny: true,
        }),
        rule('no-anything', {}, [], { deny: true }),
      ],
    });
    const mr = p.decide({
      issuer: 'gitlab',
      facts: { project_id: '1', pipeline_source: 'merge_request_event' },
      defaultTtlMs: MIN,
    });
    expect(mr.reason).toBe(
      'denied by rule "no-mr" (pipeline_source = "merge_request_event", project_id = "1")',
    );
    expect(mr.rule).toBe('no-mr');
    const push = p.decide({ issuer: 'gitlab', facts: { project_id: '1' }, defaultTtlMs: MIN });
    expect(push.reason).toBe('denied by rule "no-anything" (unconditional)');
  });

  it('deny rules of other issuers do not apply', () => {
    const p = compilePolicy({
      rules: [
        { name: 'gh-deny', issuer: 'github', deny: true, when: {} },
        rule('ok', { project_id: '1' }, ['db']),
      ],
    });
    expect(p.decide({ issuer: 'gitlab', facts: { project_id: 1 }, defaultTtlMs: MIN }).decision).toBe(
      'allow',
    );
  });
});

describe('claims', () => {
  it('inherited object properties are not claims', () => {
    const p = compilePolicy({
      rules: [rule('r', { constructor: { present: true }, toString: { present: true } }, ['db'])],
    });
    const d = p.decide({ issuer: 'gitlab', facts: {}, defaultTtlMs: MIN });
    expect(d.decision).toBe('deny');
    expect(d.nearest?.message).toBe('constructor: expected present, claim missing');
  });

  it('long claim values are shortened in explanations', () => {
    const p = compilePolicy({ rules: [rule('r', { groups: 'ops' }, ['db'])] });
    const groups = Array.from({ length: 50 }, (_, i) => `group-${i}`);
    const d = p.decide({ issuer: 'gitlab', facts: { groups }, defaultTtlMs: MIN });
    expect(d.nearest?.actual).toHaveLength(120);
    expect(d.nearest?.actual.endsWith('…')).toBe(true);
  });

  it('array claims match when any element does', () => {
    const p = compilePolicy({ rules: [rule('r', { groups: { glob: 'acme/*' } }, ['db'])] });
    expect(
      p.decide({ issuer: 'gitlab', facts: { groups: ['x', 'acme/ops'] }, defaultTtlMs: MIN }).decision,
    ).toBe('allow');
  });
});

describe('compilation', () => {
  it('an invalid regex is a config error naming rules[i].when.<claim>', () => {
    let caught: unknown;
    try {
      compilePolicy({
        rules: [rule('a', {}, ['db']), rule('b', { ref: { any: ['main', { regex: 'v(' }] } }, ['db'])],
      });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).code).toBe('CIPORT_E_CONFIG_INVALID');
    expect((caught as ConfigError).message).toBe(
      'rules[1].when.ref.any[1].regex: invalid regex "v(": Unterminated group',
    );
    expect((caught as ConfigError).details).toEqual({ path: 'rules[1].when.ref.any[1].regex' });
  });
});
