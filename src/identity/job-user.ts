// The person behind a CI job (the pipeline's user), and whether an operator is that person: a
// job's own user never approves their own request (docs/approvals.md, "No self-approval").
// Pure: no I/O.
//
// | platform | login        | email        | id          |
// |----------|--------------|--------------|-------------|
// | GitLab   | `user_login` | `user_email` | `user_id`   |
// | GitHub   | `actor`      | —            | `actor_id`  |
// | OIDC     | `preferred_username` | `email` | —        |
//
// An operator is the job's user when, compared as `fold` does (case, compatibility forms, email
// sub-addresses and a domain's trailing dot do not count), their email equals the
// user's email, or their name (an admin token's name; an SSO operator's username or display
// name) equals the user's login or email, or they signed in with the same issuer that minted
// the job token (a GitLab instance used for SSO) and their subject is the user's id.
import type { Claims } from './claim-values.js';
import { text } from './claim-values.js';
import type { Operator } from './operator.js';
import type { IssuerKind } from './principal.js';

/** Who triggered the job, as far as the token says (null: it does not say). */
export interface JobUser {
  login: string | null;
  email: string | null;
  id: string | null;
  /** The token's `iss` (URL), to compare an SSO operator's subject with `id`. */
  issuer: string | null;
}

export function jobUserOf(kind: IssuerKind, claims: Claims): JobUser {
  const issuer = text(claims.iss);
  if (kind === 'gitlab') {
    return {
      login: text(claims.user_login),
      email: text(claims.user_email),
      id: text(claims.user_id),
      issuer,
    };
  }
  if (kind === 'github') {
    return { login: text(claims.actor), email: null, id: text(claims.actor_id), issuer };
  }
  return { login: text(claims.preferred_username), email: text(claims.email), id: null, issuer };
}

/**
 * Which of the operator's identities is the job's user (`email`, `name`, `subject`), or undefined
 * when none is. Errs on the side of refusing: a name shared with the login is treated as the same
 * person, since the alternative is letting a requester approve their own access.
 */
export function sameAsJobUser(operator: Operator, user: JobUser): 'email' | 'name' | 'subject' | undefined {
  const handles = new Set([fold(user.login), fold(user.email)].filter((v): v is string => v !== undefined));
  if (operator.kind === 'token') return handles.has(fold(operator.name) ?? '') ? 'name' : undefined;
  const email = fold(operator.email);
  if (email !== undefined && (email === fold(user.email) || handles.has(email))) return 'email';
  const names = [operator.name, operator.username].map(fold);
  if (names.some((n) => n !== undefined && handles.has(n))) return 'name';
  if (
    user.id !== null &&
    user.issuer !== null &&
    sameIssuer(operator.issuer, user.issuer) &&
    operator.subject === user.id
  ) {
    return 'subject';
  }
  return undefined;
}

/**
 * `v` as the self-approval check compares it: NFKC (fullwidth and other compatibility forms are
 * their plain letters), trimmed, lower case; an email loses its sub-address (`ada+ci@` is
 * `ada@`: it reaches the same mailbox, and GitLab lets a user make any verified address the
 * one jobs carry) and its domain's trailing dots. Undefined for nothing.
 */
function fold(v: string | null | undefined): string | undefined {
  if (typeof v !== 'string') return undefined;
  const text = v.normalize('NFKC').trim().toLowerCase();
  if (text === '') return undefined;
  const at = text.lastIndexOf('@');
  if (at <= 0) return text;
  const local = text.slice(0, at);
  const plus = local.indexOf('+');
  return `${plus > 0 ? local.slice(0, plus) : local}@${text.slice(at + 1).replace(/\.+$/, '')}`;
}

function sameIssuer(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
}
