// `admin_tokens:` in both forms (docs/operators.md): the DESIGN example's unnamed secret and named
// tokens with roles; names unique (given or derived), role/roles validated.
import { describe, expect, it } from 'vitest';
import { adminTokenEntries } from '../../src/config/admin-tokens.js';
import { parseGatewayConfig } from '../../src/config/load.js';
import { CiportError } from '../../src/errors/index.js';
import { AdminTokens } from '../../src/gateway/operators.js';

const ENV = { A: 'value-a', B: 'value-b', C: 'value-c' };

function parse(tokens: string) {
  return parseGatewayConfig(`admin_tokens:\n${tokens}`, 'gw.yaml', { env: ENV });
}

function failure(tokens: string): CiportError {
  try {
    AdminTokens.fromConfig(parse(tokens).admin_tokens);
  } catch (err) {
    if (err instanceof CiportError) return err;
    throw err;
  }
  throw new Error('expected the config to be refused');
}

describe('admin_tokens', () => {
  it('names unnamed entries admin-token-<position> with role admin, next to named ones', () => {
    const cfg = parse(
      '  - {env: A}\n' +
        '  - {name: ci-bot, token: {env: B}, role: auditor}\n' +
        '  - {name: ops, token: {env: C}, roles: [approver, auditor, approver]}\n',
    );
    expect(
      adminTokenEntries(cfg.admin_tokens).map((e) => ({
        name: e.name,
        roles: e.roles,
        value: e.token.reveal(),
      })),
    ).toEqual([
      { name: 'admin-token-1', roles: ['admin'], value: 'value-a' },
      { name: 'ci-bot', roles: ['auditor'], value: 'value-b' },
      { name: 'ops', roles: ['approver', 'auditor'], value: 'value-c' },
    ]);
    const tokens = AdminTokens.fromConfig(cfg.admin_tokens);
    expect(tokens.match('value-b')).toEqual({ kind: 'token', name: 'ci-bot', roles: ['auditor'] });
    expect(tokens.match('value-b ')).toBeUndefined();
    expect(tokens.match('')).toBeUndefined();
  });

  it('refuses duplicate names, also against a derived one', () => {
    expect(
      failure('  - {name: x, token: {env: A}, role: admin}\n  - {name: x, token: {env: B}, role: auditor}\n')
        .message,
    ).toContain('admin_tokens[1].name: duplicate admin token name "x"');
    expect(
      failure('  - {name: admin-token-2, token: {env: A}, role: admin}\n  - {env: B}\n').message,
    ).toContain('duplicate admin token name "admin-token-2"');
  });

  it('refuses a missing or unknown role, both role and roles, and a bad name', () => {
    expect(failure('  - {name: x, token: {env: A}}\n').code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(failure('  - {name: x, token: {env: A}, role: root}\n').code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(failure('  - {name: x, token: {env: A}, role: admin, roles: [auditor]}\n').code).toBe(
      'CIPORT_E_CONFIG_INVALID',
    );
    expect(failure('  - {name: "Bad Name", token: {env: A}, role: admin}\n').code).toBe(
      'CIPORT_E_CONFIG_INVALID',
    );
  });

  // Found by the r14 operator walk-through: `role: superuser` (or `roles: [admin, root]`) was
  // refused with "admin_tokens[0]: Invalid input: expected string, received undefined", an error
  // of the unnamed-secret branch of the union that says nothing about the role. The message
  // names the bad role and the roles allowed (admin, approver, auditor).
  it('says which role is unknown and which roles exist', () => {
    for (const entry of [
      '  - {name: x, token: {env: A}, role: superuser}\n',
      '  - {name: x, token: {env: A}, roles: [admin, superuser]}\n',
    ]) {
      const message = failure(entry).message;
      expect(message).not.toContain('expected string, received undefined');
      expect(message).toContain('superuser');
      expect(message).toMatch(/admin.*approver.*auditor/);
    }
  });

  it('gives a named token approval groups (docs/approvals.md); unnamed tokens have none', () => {
    const cfg = parse(
      '  - {env: A}\n' +
        '  - {name: dba-oncall, token: {env: B}, role: approver, groups: [dba, "/platform/dba", dba]}\n',
    );
    expect(adminTokenEntries(cfg.admin_tokens).map((e) => e.groups)).toEqual([[], ['dba', '/platform/dba']]);
    const tokens = AdminTokens.fromConfig(cfg.admin_tokens);
    expect(tokens.match('value-b')).toEqual({
      kind: 'token',
      name: 'dba-oncall',
      roles: ['approver'],
      groups: ['dba', '/platform/dba'],
    });
    expect(tokens.match('value-a')?.groups).toBeUndefined();
    for (const bad of ['groups: []', 'groups: ["has space"]', 'groups: [""]']) {
      expect(failure(`  - {name: x, token: {env: A}, role: approver, ${bad}}\n`).code).toBe(
        'CIPORT_E_CONFIG_INVALID',
      );
    }
  });

  it('refuses two entries with the same value without printing it', () => {
    const err = failure('  - {env: A}\n  - {name: twin, token: {env: A}, role: auditor}\n');
    expect(err.code).toBe('CIPORT_E_CONFIG_INVALID');
    expect(err.message).toContain('"twin" and "admin-token-1" have the same value');
    expect(err.message).not.toContain('value-a');
  });

  it('says which named token secret is missing', () => {
    expect(() =>
      parseGatewayConfig('admin_tokens:\n  - {name: x, token: {env: UNSET_X}, role: admin}\n', 'gw.yaml', {
        env: {},
      }),
    ).toThrow(/admin_tokens\[0\]\.token: environment variable UNSET_X is not set/);
  });
});
