// The secret a signed-in operator holds (docs/sso.md): the console's cookie value or the bearer
// token `ciport login` caches. 32 random bytes, base64url, prefixed `cpo_` so a leaked one is
// recognisable (secret scanners, logs) and never mistaken for a session (`cps_`) or agent
// (`cpa_`) credential. The store keeps only its SHA-256.
import { randomBytes } from 'node:crypto';
import { OPERATOR_ROLES, type OperatorRole } from '../config/roles.js';
import type { SsoConfig } from '../config/sso.js';
import { hashSecret } from '../session/secret.js';
import type { OperatorSessionKind, OperatorSessionRecord } from '../store/operator-sessions.js';
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

/** What of `sso:` decides what a stored sign-in still grants. */
export type SsoRoleMap = Pick<SsoConfig, 'issuer' | 'roles'>;

/**
 * The operator a stored sign-in stands for under the `sso:` in force now, or undefined when it
 * grants nothing any more: no `sso:`, another issuer, or none of the groups kept from sign-in
 * maps to a role now. Roles are those groups mapped again, never the roles stored at sign-in:
 * an operator who takes a group out of `sso.roles` (or changes the provider) and restarts must
 * not leave that group's sign-ins in force until their session_ttl runs out.
 */
export function operatorUnder(
  sso: SsoRoleMap | undefined,
  r: OperatorSessionRecord,
): OidcOperator | undefined {
  if (!sso || trimSlashes(r.issuer) !== trimSlashes(sso.issuer)) return undefined;
  const roles = OPERATOR_ROLES.filter((role) => sso.roles[role].some((g) => r.groups.includes(g)));
  if (roles.length === 0) return undefined;
  return { ...operatorOfSession(r), roles };
}

function trimSlashes(url: string): string {
  return url.replace(/\/+$/, '');
}

/** The operator a stored sign-in stood for when made (roles as they were): for audit records only. */
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

/**
 * The stored sign-in of `operator`, holding `secret` (hashed) from `now` until `expiresAt`: the
 * inverse of operatorOfSession, shared by the console's callback and `ciport login`.
 */
export function operatorSessionRecord(
  operator: OidcOperator,
  kind: OperatorSessionKind,
  secret: string,
  now: number,
  expiresAt: number,
): Omit<OperatorSessionRecord, 'endedAt'> {
  return {
    secretHash: hashSecret(secret),
    kind,
    issuer: operator.issuer,
    subject: operator.subject,
    email: operator.email ?? null,
    name: operator.name ?? null,
    username: operator.username ?? null,
    roles: [...operator.roles],
    groups: [...(operator.groups ?? [])],
    createdAt: now,
    expiresAt,
  };
}
