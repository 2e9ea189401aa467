import { describe, expect, it } from 'vitest';
import { dynamicRoleName, mysqlUserName } from '../../src/credentials/account-names.js';
import { oneTimeCredential, oneTimePassword } from '../../src/credentials/otp.js';
import { quoteIdent } from '../../src/credentials/pg-roles.js';

describe('one-time credentials', () => {
  it('are random, URL-safe and 43 characters', () => {
    const a = oneTimePassword();
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(oneTimePassword()).not.toBe(a);
  });

  it('name the static user, or the session role for dynamic targets', () => {
    expect(oneTimeCredential({ name: 'db', credentials: { user: 'app' } }, 'ses_1').user).toBe('app');
    expect(oneTimeCredential({ name: 'db', credentials: { dynamic: {} } }, 'ses_1').user).toBe(
      dynamicRoleName('ses_1', 'db'),
    );
    expect(dynamicRoleName('ses_1', 'db')).toMatch(/^ciport_[0-9a-f]{16}$/);
    expect(dynamicRoleName('ses_2', 'db')).not.toBe(dynamicRoleName('ses_1', 'db'));
    // One role per (session, target): two targets on one cluster never share a role.
    expect(dynamicRoleName('ses_1', 'db2')).not.toBe(dynamicRoleName('ses_1', 'db'));
    expect(
      oneTimeCredential(
        { name: 'db', protocol: 'mysql', credentials: { dynamic: {} } },
        'ses_1',
        'a1a1a1a1a1',
      ).user,
    ).toBe(mysqlUserName('ses_1', 'a1a1a1a1a1', 'db'));
  });

  it('quotes identifiers', () => {
    expect(quoteIdent('read"only')).toBe('"read""only"');
    expect(() => quoteIdent('a\u0000b')).toThrow();
  });
});
