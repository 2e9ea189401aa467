// Claim paths in `when:` keys (issue 10, item 14): the syntax, resolution through nested
// objects and arrays, and the same keys through `policy explain` and `policy lint`.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatClaimPath, parseClaimPath } from '../../src/config/claim-path.js';
import { parseGatewayConfig } from '../../src/config/load.js';
import { compileClaimPath, resolveClaim } from '../../src/policy/claim-path.js';
import { compilePolicy, lintPolicy } from '../../src/policy/index.js';
import { runCli } from '../helpers/cli.js';

const segments = (text: string) => {
  const p = parseClaimPath(text);
  if ('error' in p) throw new Error(p.error);
  return p.segments;
};
const errorOf = (text: string) => {
  const p = parseClaimPath(text);
  return 'error' in p ? p.error : undefined;
};

describe('syntax', () => {
  it.each([
    ['ref', ['ref']],
    ['realm_access.roles', ['realm_access', 'roles']],
    ['resource_access."ciport.prod".roles', ['resource_access', 'ciport.prod', 'roles']],
    ['"https://acme.example/groups"', ['https://acme.example/groups']],
    ['"a\\"b".c', ['a"b', 'c']],
    ['"back\\\\slash"', ['back\\slash']],
    ['urn:zitadel:iam:org:project:roles', ['urn:zitadel:iam:org:project:roles']],
    ['"fork"', ['fork']],
  ])('%s', (text, expected) => {
    expect(segments(text)).toEqual(expected);
  });

  it.each([
    ['a..b', 'empty name'],
    ['.a', 'empty name'],
    ['a.', 'ends with a dot'],
    ['"open', 'unterminated'],
    ['""', 'empty quoted name'],
    ['a"b"', 'a quote may only start a name'],
    ['"a"b', 'expected "." after a quoted name'],
    ['"a\\n"', 'only \\" and \\\\'],
    ['https://acme.example/groups', 'must be quoted, e.g. "\\"https://acme.example/groups\\""'],
  ])('refuses %s', (text, message) => {
    expect(errorOf(text)).toContain(message);
  });

  it('round-trips through the canonical form', () => {
    for (const text of ['realm_access.roles', 'resource_access."ciport.prod".roles', '"a\\"b".c']) {
      expect(formatClaimPath(segments(text))).toBe(text);
    }
    expect(formatClaimPath(segments('"fork"'))).toBe('fork');
  });
});

describe('resolution', () => {
  const facts = {
    realm_access: { roles: ['deployer', 'offline_access'] },
    resource_access: { 'ciport.prod': { roles: ['db-migrate'] }, ciport: { prod: { roles: ['decoy'] } } },
    teams: [{ slug: 'platform' }, { slug: 'payments', parent: { slug: 'finance' } }, { name: 'x' }],
    orgs: [{ teams: ['a', 'b'] }, { teams: ['c'] }],
    'realm_access.roles': 'literal-top-level',
    nothing: null,
  };
  const at = (text: string) => resolveClaim(facts, compileClaimPath(text, 'test'));

  it('steps into objects', () => {
    expect(at('realm_access.roles')).toEqual(['deployer', 'offline_access']);
    expect(at('resource_access."ciport.prod".roles')).toEqual(['db-migrate']);
    expect(at('resource_access.ciport.prod.roles')).toEqual(['decoy']);
  });

  it('a quoted dotted name is the literal top-level claim', () => {
    expect(at('"realm_access.roles"')).toBe('literal-top-level');
  });

  it('steps through arrays, collecting from every element and flattening one level', () => {
    expect(at('teams.slug')).toEqual(['platform', 'payments']);
    expect(at('teams.parent.slug')).toEqual(['finance']);
    expect(at('orgs.teams')).toEqual(['a', 'b', 'c']);
  });

  it('is missing when a step finds nothing', () => {
    expect(at('realm_access.groups')).toBeUndefined();
    expect(at('realm_access.roles.name')).toBeUndefined();
    expect(at('teams.missing')).toBeUndefined();
    expect(at('nothing.x')).toBeUndefined();
    expect(at('toString')).toBeUndefined();
    expect(at('realm_access.constructor')).toBeUndefined();
  });
});

/** A gateway config whose one rule, `deployers` (Keycloak issuer), has the `when` lines given. */
const keycloakConfigYaml = (when: string) => `issuers:
  - {name: keycloak, kind: oidc, issuer: https://sso.example.com/realms/ci, audience: ciport}
targets:
  - {name: staging-db, protocol: postgres, address: staging.internal:5432}
rules:
  - name: deployers
    issuer: keycloak
    when:
${when}
    allow: [staging-db]
`;

const config = (when: string) => parseGatewayConfig(keycloakConfigYaml(when), 'paths.yaml');

describe('rules', () => {
  const decide = (when: string, facts: Record<string, unknown>) =>
    compilePolicy(config(when)).decide({ issuer: 'keycloak', facts, defaultTtlMs: 60_000 });

  it('matches any element of a nested array and explains a miss by the path as written', () => {
    const when = '      azp: ci-runner\n      realm_access.roles: deployer';
    expect(decide(when, { azp: 'ci-runner', realm_access: { roles: ['x', 'deployer'] } }).decision).toBe(
      'allow',
    );
    const d = decide(when, { azp: 'ci-runner', realm_access: { roles: ['x'] } });
    expect(d.decision).toBe('deny');
    expect(d.nearest?.message).toBe('realm_access.roles: expected "deployer", got ["x"]');
  });

  it('{not: …} on a nested array means "no element"', () => {
    const when = '      azp: ci-runner\n      realm_access.roles: {not: suspended}';
    expect(decide(when, { azp: 'ci-runner', realm_access: { roles: ['a'] } }).decision).toBe('allow');
    expect(decide(when, { azp: 'ci-runner', realm_access: { roles: ['a', 'suspended'] } }).decision).toBe(
      'deny',
    );
  });

  it('a rule naming "fork" as a quoted key still opts in to forks', () => {
    const when = '      azp: ci-runner\n      \'"fork"\': true';
    expect(decide(when, { azp: 'ci-runner', fork: true }).decision).toBe('allow');
  });

  it('an unquoted namespaced claim is refused when the config loads, with the fix', () => {
    expect(() => config('      https://acme.example/groups: ci')).toThrow(
      /when\.https:\/\/acme\.example\/groups.*must be quoted, e\.g\. "\\"https:\/\/acme\.example\/groups\\""/s,
    );
    const quoted = config(`      '"https://acme.example/groups"': ci`);
    expect(
      compilePolicy(quoted).decide({
        issuer: 'keycloak',
        facts: { 'https://acme.example/groups': ['ci'] },
        defaultTtlMs: 60_000,
      }).decision,
    ).toBe('allow');
  });
});

describe('policy lint and policy explain', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ciport-claim-path-'));
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };

  it('lint reports an invalid path with its own code, and reads pins and fork through paths', () => {
    const findings = lintPolicy({
      issuers: [{ name: 'keycloak', kind: 'oidc' }],
      targets: [{ name: 'staging-db' }],
      rules: [
        { name: 'bad', issuer: 'keycloak', when: { 'a..b': 'x', azp: 'c' }, allow: ['staging-db'] },
        { name: 'quoted', issuer: 'keycloak', when: { '"azp"': 'c', '"fork"': true }, allow: ['staging-db'] },
      ],
    });
    expect(findings).toContainEqual(
      expect.objectContaining({ code: 'invalid-claim-path', path: 'rules[0].when["a..b"]', level: 'error' }),
    );
    expect(findings.filter((f) => f.rule === 'quoted').map((f) => f.code)).toEqual(['allows-fork']);
    expect(findings.find((f) => f.code === 'allows-fork')?.path).toBe('rules[1].when["\\"fork\\""]');
  });

  it('ciport policy explain --claims decides on nested Keycloak roles, and lint passes the config', async () => {
    const cfg = file(
      'gateway.yaml',
      keycloakConfigYaml(`      azp: ci-runner
      resource_access."ciport.prod".roles: db-migrate`),
    );
    const base = { iss: 'https://sso.example.com/realms/ci', azp: 'ci-runner', sub: 'x' };
    const allowed = file(
      'ok.json',
      JSON.stringify({ ...base, resource_access: { 'ciport.prod': { roles: ['db-migrate'] } } }),
    );
    const denied = file(
      'no.json',
      JSON.stringify({ ...base, resource_access: { 'ciport.prod': { roles: ['view'] } } }),
    );

    const ok = await runCli(['policy', 'explain', '--config', cfg, '--claims', allowed, '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({
      decision: 'allow',
      rule: 'deployers',
      targets: ['staging-db'],
    });

    const no = await runCli(['policy', 'explain', '--config', cfg, '--claims', denied]);
    expect(no.code).toBe(3);
    expect(no.stdout).toContain('resource_access."ciport.prod".roles: expected "db-migrate", got ["view"]');

    const lint = await runCli(['policy', 'lint', '--config', cfg, '--json']);
    expect(lint.code).toBe(0);
    expect(JSON.parse(lint.stdout).findings).toEqual([]);

    // The same key unquoted would split "ciport.prod": lint still passes (a valid path), but
    // explain shows the claim missing rather than a silent match.
    const split = file('split.yaml', readFileSync(cfg, 'utf8').replace('"ciport.prod"', 'ciport.prod'));
    const miss = await runCli(['policy', 'explain', '--config', split, '--claims', allowed]);
    expect(miss.code).toBe(3);
    expect(miss.stdout).toContain('resource_access.ciport.prod.roles: expected "db-migrate", claim missing');
  });
});
