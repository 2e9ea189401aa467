// The job's user and self-approval (src/identity/job-user.ts, docs/approvals.md "No
// self-approval"): which claims name the user per platform, and which operators are that user.
import { describe, expect, it } from 'vitest';
import { jobUserOf, sameAsJobUser } from '../../src/identity/job-user.js';
import type { Operator } from '../../src/identity/operator.js';

const gitlab = jobUserOf('gitlab', {
  iss: 'https://gitlab.example.com',
  user_login: 'Ada',
  user_email: 'Ada.Lovelace@Example.com',
  user_id: 1042,
});
const token = (name: string): Operator => ({ kind: 'token', name, roles: ['approver'] });
const person = (o: Partial<Extract<Operator, { kind: 'oidc' }>> & { username?: string }): Operator => ({
  kind: 'oidc',
  issuer: 'https://sso.example.com',
  subject: 'u-1',
  roles: ['approver'],
  ...o,
});

describe('jobUserOf', () => {
  it('reads the user of GitLab, GitHub and generic OIDC tokens (ids as text)', () => {
    expect(gitlab).toEqual({
      login: 'Ada',
      email: 'Ada.Lovelace@Example.com',
      id: '1042',
      issuer: 'https://gitlab.example.com',
    });
    expect(
      jobUserOf('github', {
        iss: 'https://token.actions.githubusercontent.com',
        actor: 'octocat',
        actor_id: '583231',
      }),
    ).toEqual({
      login: 'octocat',
      email: null,
      id: '583231',
      issuer: 'https://token.actions.githubusercontent.com',
    });
    expect(jobUserOf('oidc', { preferred_username: 'svc', email: 'svc@example.com' })).toMatchObject({
      login: 'svc',
      email: 'svc@example.com',
      id: null,
    });
    expect(jobUserOf('gitlab', {})).toEqual({ login: null, email: null, id: null, issuer: null });
  });
});

describe('sameAsJobUser', () => {
  it('a token named like the login (any case) is the user; other tokens are not', () => {
    expect(sameAsJobUser(token('ada'), gitlab)).toBe('name');
    expect(sameAsJobUser(token('bob'), gitlab)).toBeUndefined();
  });

  it('an SSO person is the user by email, username or display name, or by subject on the same issuer', () => {
    expect(sameAsJobUser(person({ email: 'ada.lovelace@example.com' }), gitlab)).toBe('email');
    expect(sameAsJobUser(person({ username: 'ADA' }), gitlab)).toBe('name');
    expect(sameAsJobUser(person({ name: 'ada' }), gitlab)).toBe('name');
    expect(sameAsJobUser(person({ issuer: 'https://gitlab.example.com/', subject: '1042' }), gitlab)).toBe(
      'subject',
    );
    // The same subject from another identity provider is someone else.
    expect(sameAsJobUser(person({ subject: '1042' }), gitlab)).toBeUndefined();
    expect(sameAsJobUser(person({ email: 'bob@example.com', name: 'Bob' }), gitlab)).toBeUndefined();
  });

  it('a job that names no user matches nobody (blank names do not match blank claims)', () => {
    const none = jobUserOf('gitlab', { user_login: '' });
    expect(sameAsJobUser(token('ada'), none)).toBeUndefined();
    expect(sameAsJobUser(person({ email: ' ', name: '' }), none)).toBeUndefined();
  });
});
