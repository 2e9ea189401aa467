// The secret a signed-in operator holds (docs/sso.md): the console's cookie value or the bearer
// token `ciport login` caches. 32 random bytes, base64url, prefixed `cpo_` so a leaked one is
// recognisable (secret scanners, logs) and never mistaken for a session (`cps_`) or agent
// (`cpa_`) credential. The store keeps only its SHA-256.
import { randomBytes } from 'node:crypto';
import { OPERATOR_ROLES, type OperatorRole } from '../config/roles.js';
import type { OperatorSessionRecord } from '../store/operator-sessions.js';
import type { OidcOperator } from './operator.js';

export const OPERATOR_SECRET_PREFIX = 'cpo_';
const OPERATOR_SECRET_RE = /^cpo_[A-Za-z0-9_-]{43}$/;

export function newOperatorSecret(): string {
  return `${OPERATOR_SECRET_PREFIX}${randomBytes(32).toString('base64url')}`;
}

/** Shaped like an operator secret (cheap check before a store lookup). */
export function isOperatorSecret(value: string): boolean {
  return OPERATOR_SECRET_RE.test(value);
}

/** The operator a stored sign-in stands for (roles as they were at sign-in). */
export function operatorOfSession(r: OperatorSessionRecord): OidcOperator {
  const roles = r.roles.filter((x): x is OperatorRole => (OPERATOR_ROLES as readonly string[]).includes(x));
  return {
    kind: 'oidc',
    issuer: r.issuer,
    subject: r.subject,
    ...(r.email ? { email: r.email } : {}),
    ...(r.name ? { name: r.name } : {}),
    ...(r.username ? { username: r.username } : {}),
    roles,
    groups: r.groups,
  };
}
