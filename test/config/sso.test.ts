// `sso:` (docs/sso.md): what the schema accepts and refuses, and how an ID token's claims become
// an operator: roles from the group claim (nested paths too), bounded groups, unverified email
// dropped, and a person without a mapped group refused with CIPORT_E_SSO_NO_ROLE.
import { describe, expect, it } from 'vitest';
import { parseGatewayConfig } from '../../src/config/load.js';
import { operatorFromClaims, ssoGroups } from '../../src/identity/sso-operator.js';

const base =
  'sso:\n  issuer: https://idp.example.com/realms/acme\n  client_id: ciport\n' +
  '  client_secret: {env: SSO_SECRET}\n  roles:\n    admin: [platform]\n    approver: [dba]\n    auditor: [compliance]\n';
const env = { SSO_SECRET: 'sso-s3cret' };

describe('sso config', () => {
  it('accepts an issuer with a secret and defaults scopes, the groups claim and the sign-in lifetime', () => {
    const cfg = parseGatewayConfig(base, 'gw.yaml', { env });
    expect(cfg.sso?.client_secret?.reveal()).toBe('sso-s3cret');
    expect(cfg.sso?.scopes).toEqual(['openid', 'email', 'profile']);
    expect(cfg.sso?.groups_claim).toBe('groups');
    expect(cfg.sso?.session_ttl).toBe(8 * 3_600_000);
    expect(JSON.stringify(cfg)).not.toContain('sso-s3cret');
  });

  it.each([
    [
      'plain http off loopback',
      base.replace('https://idp.example.com', 'http://idp.example.com'),
      /loopback/,
    ],
    ['no role mapped', base.replace(/ {2}roles:[\s\S]*$/, '  roles: {}\n'), /at least one group/],
    ['a sign-in over 24h', `${base}  session_ttl: 25h\n`, /at most 24h/],
    ['a malformed groups claim path', `${base}  groups_claim: 'a..b'\n`, /groups_claim/],
    [
      'an unknown role',
      `${base.replace('auditor: [compliance]', 'auditor: [compliance]\n    root: [x]')}`,
      /root/,
    ],
  ])('refuses %s', (_what, text, message) => {
    expect(() => parseGatewayConfig(text, 'gw.yaml', { env })).toThrow(message);
  });
});

describe('operatorFromClaims', () => {
  const sso = parseGatewayConfig(base, 'gw.yaml', { env }).sso as NonNullable<
    ReturnType<typeof parseGatewayConfig>['sso']
  >;
  const claims = {
    iss: 'https://idp.example.com/realms/acme',
    sub: 'u-1',
    email: 'ana@example.com',
    email_verified: true,
    name: 'Ana',
    preferred_username: 'ana',
    groups: ['dba', 'compliance', 'other'],
  };

  it('maps groups to roles and keeps who the person is', () => {
    expect(operatorFromClaims(sso, claims)).toEqual({
      kind: 'oidc',
      issuer: claims.iss,
      subject: 'u-1',
      email: 'ana@example.com',
      name: 'Ana',
      username: 'ana',
      roles: ['approver', 'auditor'],
      groups: ['dba', 'compliance', 'other'],
    });
  });

  it('drops an email the provider says is unverified, and escapes control characters', () => {
    const op = operatorFromClaims(sso, { ...claims, email_verified: false, name: 'A\u001b[2Jna' });
    expect(op.email).toBeUndefined();
    expect(op.name).not.toContain('\u001b');
  });

  it('reads a nested claim path (Keycloak realm roles) and bounds the number of groups', () => {
    const nested = { ...sso, groups_claim: 'realm_access.roles' };
    const many = Array.from({ length: 5000 }, (_, i) => `g${i}`);
    expect(ssoGroups(nested, { realm_access: { roles: [...many, 'platform'] } })).toHaveLength(200);
    expect(operatorFromClaims(nested, { ...claims, realm_access: { roles: ['platform'] } }).roles).toEqual([
      'admin',
    ]);
  });

  it('refuses a person none of whose groups maps to a role, and a token without iss or sub', () => {
    expect(() => operatorFromClaims(sso, { ...claims, groups: ['other'] })).toThrow(
      expect.objectContaining({ code: 'CIPORT_E_SSO_NO_ROLE' }),
    );
    expect(() => operatorFromClaims(sso, { ...claims, groups: 'dba-not-a-list' })).toThrow(
      expect.objectContaining({ code: 'CIPORT_E_SSO_NO_ROLE' }),
    );
    expect(() => operatorFromClaims(sso, { ...claims, sub: undefined })).toThrow(
      expect.objectContaining({ code: 'CIPORT_E_SSO_FAILED' }),
    );
  });
});
