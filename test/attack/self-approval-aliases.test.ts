// Attack: a job's own user approving their own pending session by making the identities the
// self-approval check compares differ only in ways that still name the same person
// (src/identity/job-user.ts, docs/approvals.md "No self-approval"). The job's user_email is
// under the user's control in GitLab (any verified address may be made primary), so a
// sub-address (`ada+ci@…`, delivered to ada's own mailbox), a trailing dot on the domain, or a
// compatibility form of the same letters (fullwidth `ａｄａ`, from an issuer that allows them)
// must still be recognised as the operator's own.
import { describe, expect, it } from 'vitest';
import { jobUserOf, sameAsJobUser } from '../../src/identity/job-user.js';
import type { Operator } from '../../src/identity/operator.js';

const ada: Operator = {
  kind: 'oidc',
  issuer: 'https://sso.example.com',
  subject: 'u-1',
  roles: ['approver'],
  groups: ['dba'],
  email: 'ada@example.com',
  username: 'ada',
};
const job = (claims: Record<string, unknown>) =>
  jobUserOf('gitlab', { iss: 'https://gitlab.example.com', user_id: 7, ...claims });

describe('self-approval through an alias of the same person', () => {
  it('a sub-addressed job email (ada+ci@…) is the operator whose email is ada@…', () => {
    expect(sameAsJobUser(ada, job({ user_login: 'a-lovelace', user_email: 'Ada+ci@Example.com' }))).toBe(
      'email',
    );
  });

  it('the operator’s own sub-address, and a trailing dot on either domain, are the same email', () => {
    const plus: Operator = { ...ada, email: 'ada+sso@example.com', username: 'al' };
    expect(sameAsJobUser(plus, job({ user_login: 'x', user_email: 'ada@example.com.' }))).toBe('email');
  });

  it('a login in compatibility letters (fullwidth) is the same name', () => {
    const user = jobUserOf('oidc', { preferred_username: 'ａｄａ', email: 'other@example.org' });
    expect(sameAsJobUser({ ...ada, email: 'ada@corp.example' }, user)).toBe('name');
  });

  it('a different person is still not the user', () => {
    expect(
      sameAsJobUser(ada, job({ user_login: 'adam', user_email: 'adam+ci@example.com' })),
    ).toBeUndefined();
    expect(sameAsJobUser(ada, job({ user_login: 'bob', user_email: 'ada@example.org' }))).toBeUndefined();
  });
});
