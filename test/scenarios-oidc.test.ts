// Generic OIDC issuers (Keycloak, Okta, Entra ID): the token shapes and rules of docs/policy.md
// ("Worked examples: generic OIDC issuers"), read from that page so the documentation cannot
// drift from what the engine does. Each token is allowed as shown, and denied once the role,
// scope or group the rule relies on is gone, with the failing condition named by its path.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../src/config/load.js';
import { normalize } from '../src/identity/index.js';
import { compilePolicy, lintPolicy } from '../src/policy/index.js';

const doc = readFileSync(new URL('../docs/policy.md', import.meta.url), 'utf8');

/** The ```json token and ```yaml rules under the `### <heading>` of docs/policy.md. */
function example(heading: string): { claims: Record<string, unknown>; rules: string } {
  const start = doc.indexOf(`### ${heading}`);
  expect(start, `docs/policy.md has "### ${heading}"`).toBeGreaterThan(0);
  const next = doc.indexOf('\n#', start + 4);
  const section = doc.slice(start, next === -1 ? undefined : next);
  const block = (lang: string) => {
    const m = new RegExp(`\`\`\`${lang}\\n([\\s\\S]*?)\`\`\``).exec(section);
    expect(m, `a ${lang} block under ${heading}`).not.toBeNull();
    return (m as RegExpExecArray)[1] as string;
  };
  return { claims: JSON.parse(block('json')), rules: block('yaml') };
}

function setup(issuer: string, heading: string) {
  const { claims, rules } = example(heading);
  const config = parseGatewayConfig(
    `
issuers:
  - {name: ${issuer}, kind: oidc, issuer: "${claims.iss}", audience: "${[claims.aud].flat()[0]}"}
targets:
  - {name: production-db, protocol: postgres, address: prod.internal:5432, tags: [production]}
  - {name: staging-db, protocol: postgres, address: staging.internal:5432}
${rules}`,
    `${issuer}.yaml`,
  );
  const policy = compilePolicy(config);
  const decide = (c: Record<string, unknown>, targets: string[]) =>
    policy.decide({
      issuer,
      facts: normalize('oidc', issuer, c).facts,
      targets,
      defaultTtlMs: 15 * 60_000,
    });
  return { claims, config, decide };
}

const clone = <T>(v: T): T => structuredClone(v);

describe('Keycloak: realm_access.roles and resource_access."<client>".roles', () => {
  const { claims, config, decide } = setup('keycloak', 'Keycloak: realm and client roles');

  it('allows the service account holding both roles', () => {
    const d = decide(claims, ['production-db']);
    expect(d.decision).toBe('allow');
    expect(d.rule).toBe('keycloak-deployers-to-production');
    expect(d.ttlMs).toBe(15 * 60_000);
  });

  it('denies without the realm role, naming the nested claim and the roles the token has', () => {
    const c = clone(claims) as { realm_access: { roles: string[] } };
    c.realm_access.roles = c.realm_access.roles.filter((r) => r !== 'deployer');
    const d = decide(c, ['production-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('realm_access.roles');
    expect(d.nearest?.actual).toBe('["default-roles-ci","offline_access","uma_authorization"]');
  });

  it('denies a role of another client: the quoted client id is one name, not two', () => {
    const c = clone(claims) as { resource_access: Record<string, { roles: string[] }> };
    // The role under a client "ciport" with a nested "prod" object must not count.
    c.resource_access = { ciport: { prod: { roles: ['db-migrate'] } } as never, account: { roles: [] } };
    const d = decide(c, ['production-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('resource_access."ciport.prod".roles');
    expect(d.nearest?.actual).toBe('(missing)');
  });

  it('denies when realm_access is not an object (a string that merely looks like one)', () => {
    const d = decide({ ...claims, realm_access: 'deployer' }, ['production-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('realm_access.roles');
  });

  it('lint accepts the rule: azp pins the client', () => {
    // (Production without a protected ref is only a warning for generic OIDC issuers.)
    const findings = lintPolicy(config);
    expect(findings.filter((f) => f.code === 'no-project-pin' || f.level === 'error')).toEqual([]);
  });
});

describe('Okta: scp and groups arrays', () => {
  const { claims, decide } = setup('okta', 'Okta: scopes and groups');

  it('allows the client with the staging scope and a deployer group', () => {
    const d = decide(claims, ['staging-db']);
    expect(d.decision).toBe('allow');
    expect(d.rule).toBe('okta-staging-scope');
  });

  it('denies a token without the scope (scp holds only other scopes)', () => {
    const d = decide({ ...claims, scp: ['ciport.read'] }, ['staging-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('scp');
    expect(d.nearest?.actual).toBe('["ciport.read"]');
  });

  it('denies a token whose groups claim is absent (the groups claim filter matched none)', () => {
    const { groups: _dropped, ...rest } = claims;
    const d = decide(rest, ['staging-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('groups');
    expect(d.nearest?.actual).toBe('(missing)');
  });

  it('denies another client holding the same scope', () => {
    const d = decide({ ...claims, cid: '0oaOTHERCLIENT00000', sub: '0oaOTHERCLIENT00000' }, ['staging-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('cid');
  });
});

describe('Entra ID: roles of an application token', () => {
  const { claims, decide } = setup('entra', 'Entra ID (Azure AD): app roles');

  it('allows the application granted the app role', () => {
    const d = decide(claims, ['staging-db']);
    expect(d.decision).toBe('allow');
    expect(d.rule).toBe('entra-app-role-to-staging');
  });

  it('denies the same application once the app role assignment is removed', () => {
    const d = decide({ ...claims, roles: ['Reports.Read'] }, ['staging-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('roles');
  });

  it('denies a user token (idtyp missing) of the same tenant carrying the role', () => {
    const { idtyp: _dropped, ...user } = claims;
    const d = decide(user, ['staging-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('idtyp');
  });

  it('denies another tenant', () => {
    const d = decide({ ...claims, tid: '00000000-0000-0000-0000-000000000000' }, ['staging-db']);
    expect(d.decision).toBe('deny');
    expect(d.nearest?.claim).toBe('tid');
  });
});
