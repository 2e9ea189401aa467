import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FixtureIssuer } from '../fixtures/oidc-issuer.js';
import { runCli } from '../helpers/cli.js';

const EXAMPLE = new URL('../../examples/gateway.yaml', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'ciport-policy-cli-'));

const mainClaims = {
  iss: 'https://gitlab.com',
  sub: 'project_path:acme/ledger:ref_type:branch:ref:main',
  project_id: '61577203',
  project_path: 'acme/ledger',
  job_project_id: '61577203',
  ref: 'main',
  ref_type: 'branch',
  ref_protected: 'true',
  environment: 'staging/eu',
  pipeline_source: 'push',
  pipeline_id: '7',
  job_id: '42',
};

function file(name: string, content: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

describe('ciport policy explain --claims (offline what-if)', () => {
  it('allows protected main with the DESIGN contract JSON shape, exit 0', async () => {
    const r = await runCli([
      'policy',
      'explain',
      '--config',
      EXAMPLE,
      '--claims',
      file('main.json', mainClaims),
      '--target',
      'staging-db',
      '--json',
    ]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      decision: 'allow',
      rule: 'ledger-main-to-staging',
      targets: ['staging-db'],
      error: null,
      verified: false,
    });
    expect(typeof out.reason).toBe('string');
    expect(out.grants).toEqual([
      { target: 'staging-db', rule: 'ledger-main-to-staging', ttlMs: 15 * 60_000 },
    ]);
  });

  it('denies an unprotected ref, naming the rule and the failing condition, exit 3', async () => {
    const r = await runCli([
      'policy',
      'explain',
      '--config',
      EXAMPLE,
      '--claims',
      file('feat.json', { ...mainClaims, ref: 'feature/x', ref_protected: 'false' }),
    ]);
    expect(r.code).toBe(3);
    expect(r.stdout).toContain(
      'deny: no rule allows this token; nearest rule "ledger-main-to-staging": ref_protected: expected true, got "false"',
    );
    expect(r.stderr).toContain('signature, expiry and audience were not checked');
  });

  it('denies a fork merge request by the deny rule', async () => {
    const fork = { ...mainClaims, job_project_id: '99', pipeline_source: 'merge_request_event' };
    const r = await runCli([
      'policy',
      'explain',
      '--config',
      EXAMPLE,
      '--claims',
      file('fork.json', fork),
      '--json',
    ]);
    expect(r.code).toBe(3);
    expect(JSON.parse(r.stdout)).toMatchObject({
      decision: 'deny',
      rule: 'no-forks',
      error: { code: 'CIPORT_E_POLICY_DENIED' },
    });
  });

  it('refuses an unusable claims file with exit 2', async () => {
    const bad = await runCli([
      'policy',
      'explain',
      '--config',
      EXAMPLE,
      '--claims',
      file('bad.json', '{nope'),
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/CIPORT_E_CLAIMS_INVALID: --claims .*bad\.json: not a JSON file/);
    const other = await runCli([
      'policy',
      'explain',
      '--config',
      EXAMPLE,
      '--claims',
      file('iss.json', { ...mainClaims, iss: 'https://evil.example' }),
    ]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain('matches no configured issuer');
  });

  it('is a usage error without exactly one of --token and --claims', async () => {
    const r = await runCli(['policy', 'explain', '--config', EXAMPLE]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('CIPORT_E_USAGE');
  });
});

describe('ciport policy explain --token (fully verified)', () => {
  let issuer: FixtureIssuer;
  let config: string;

  beforeAll(async () => {
    issuer = await FixtureIssuer.start({ kind: 'gitlab' });
    config = file(
      'gw.yaml',
      `issuers:
  - name: gl
    kind: gitlab
    issuer: ${issuer.url}
    audience: https://ciport.test
targets:
  - {name: staging-db, protocol: tcp, address: 127.0.0.1:5432}
rules:
  - name: main-to-staging
    issuer: gl
    when: {project_id: "61577203", ref_protected: true}
    allow: [staging-db]
`,
    );
  });
  afterAll(() => issuer.close());

  it('verifies the token against the issuer and allows', async () => {
    const token = await issuer.mint({ ...mainClaims, iss: issuer.url }, { audience: 'https://ciport.test' });
    const r = await runCli([
      'policy',
      'explain',
      '--config',
      config,
      '--token',
      file('ok.jwt', token),
      '--json',
    ]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ decision: 'allow', rule: 'main-to-staging', verified: true, error: null });
    expect(out.principal.job_url).toBe(`${issuer.url}/acme/ledger/-/jobs/42`);
    expect(r.stdout).not.toContain(token);
  });

  it('rejects a token for another audience with exit 4 and the code', async () => {
    const token = await issuer.mint({ ...mainClaims, iss: issuer.url }, { audience: 'https://other.test' });
    const r = await runCli([
      'policy',
      'explain',
      '--config',
      config,
      '--token',
      file('aud.jwt', token),
      '--json',
    ]);
    expect(r.code).toBe(4);
    expect(JSON.parse(r.stdout)).toMatchObject({
      decision: 'deny',
      rule: null,
      targets: [],
      error: { code: 'CIPORT_E_TOKEN_WRONG_AUDIENCE' },
    });
  });

  it('rejects an expired token with exit 4 in text mode too', async () => {
    const token = await issuer.mint(
      { ...mainClaims, iss: issuer.url },
      { audience: 'https://ciport.test', now: Date.now() - 3_600_000, ttlMs: 60_000 },
    );
    const r = await runCli(['policy', 'explain', '--config', config, '--token', file('exp.jwt', token)]);
    expect(r.code).toBe(4);
    expect(r.stdout).toContain('CIPORT_E_TOKEN_EXPIRED');
  });
});

describe('ciport policy lint', () => {
  it('confirms in one line and exits 0 on the normative example; -q prints nothing', async () => {
    const r = await runCli(['policy', 'lint', '--config', EXAMPLE]);
    expect(r).toEqual({ code: 0, stdout: `policy OK: ${EXAMPLE} (2 rules, no findings)\n`, stderr: '' });
    expect(await runCli(['policy', 'lint', '-q', '--config', EXAMPLE])).toEqual({
      code: 0,
      stdout: '',
      stderr: '',
    });
  });

  it('prints each finding as FILE: level: path code: message, and a count', async () => {
    const cfg = file(
      'leeway.yaml',
      `issuers:
  - {name: gl, kind: gitlab, issuer: https://gitlab.example.com, audience: ciport, leeway: 5m}
targets:
  - {name: db, protocol: postgres, address: db:5432}
rules:
  - {name: main, issuer: gl, when: {project_id: "1", ref_protected: true}, allow: [db]}
`,
    );
    const r = await runCli(['policy', 'lint', '--config', cfg]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(new RegExp(`^${cfg}: warning: issuers\\[0\\]\\.leeway long-leeway: `));
    expect(r.stdout).not.toContain('warning: warning');
    expect(lines.at(-1)).toBe(`${cfg}: 0 errors, 1 warning in 1 rule`);
  });

  it('exits 1 when an unprotected ref reaches production, listing findings', async () => {
    const cfg = file(
      'risky.yaml',
      `issuers:
  - {name: gl, kind: gitlab, issuer: https://gitlab.example.com, audience: ciport, leeway: 5m}
targets:
  - {name: prod-db, protocol: postgres, address: db:5432, tags: [production]}
rules:
  - name: anyone
    issuer: gl
    when: {project_path: {glob: "acme/**"}}
    allow: [prod-db]
    max_ttl: 24h
`,
    );
    const r = await runCli(['policy', 'lint', '--config', cfg, '--json']);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout);
    const codes = out.findings.map((f: { code: string }) => f.code).sort();
    expect(codes).toEqual([
      'long-leeway',
      'long-ttl',
      'no-project-pin',
      'subgroup-glob',
      'unprotected-production',
    ]);
    expect(out.errors).toBe(1);
  });
});
