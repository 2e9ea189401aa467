// From a verified SSO ID token's claims to the operator it signs in (docs/sso.md). Pure: the
// console's callback and `POST /v1/operator/sessions` (CLI login) share it, so a person holds the
// same roles whichever way they signed in.
import { OPERATOR_ROLES, type OperatorRole } from '../config/roles.js';
import type { SsoConfig } from '../config/sso.js';
import { CiportError } from '../errors/index.js';
import { compileClaimPath, resolveClaim } from '../policy/claim-path.js';
import { printable } from '../text/printable.js';
import type { OidcOperator } from './operator.js';

/** Most groups kept from one token: a person in thousands of groups still signs in, bounded. */
const MAX_GROUPS = 200;
const MAX_TEXT = 256;

function text(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length === 0) return undefined;
  return printable(value).slice(0, MAX_TEXT);
}

/** The group values of `claims` at `groups_claim`: strings only, deduplicated, bounded. */
export function ssoGroups(sso: Pick<SsoConfig, 'groups_claim'>, claims: Record<string, unknown>): string[] {
  const value = resolveClaim(claims, compileClaimPath(sso.groups_claim, 'sso.groups_claim'));
  const list = Array.isArray(value) ? value : value === undefined ? [] : [value];
  const groups = new Set<string>();
  for (const g of list) {
    if (typeof g === 'string' && g.length > 0 && g.length <= MAX_TEXT) groups.add(g);
    if (groups.size >= MAX_GROUPS) break;
  }
  return [...groups];
}

/**
 * The operator `claims` (an ID token the caller has verified: issuer, audience, signature,
 * expiry, nonce) signs in, with the roles `sso.roles` maps their groups to.
 * @throws CiportError CIPORT_E_SSO_NO_ROLE when no group maps to a role (names no group values
 *   beyond the person's own, so the message can be shown to them).
 */
export function operatorFromClaims(sso: SsoConfig, claims: Record<string, unknown>): OidcOperator {
  const issuer = text(claims.iss);
  const subject = text(claims.sub);
  if (!issuer || !subject) throw new CiportError('CIPORT_E_SSO_FAILED', 'the ID token has no iss or sub');
  const groups = ssoGroups(sso, claims);
  const roles: OperatorRole[] = OPERATOR_ROLES.filter((role) =>
    sso.roles[role].some((g) => groups.includes(g)),
  );
  const email = claims.email_verified === false ? undefined : text(claims.email);
  const name = text(claims.name) ?? text(claims.preferred_username);
  const username = text(claims.preferred_username);
  if (roles.length === 0) {
    throw new CiportError(
      'CIPORT_E_SSO_NO_ROLE',
      `${email ?? username ?? subject} signed in, but none of their groups (claim ${sso.groups_claim}) gives a ciport role; ask for one of the groups in sso.roles`,
    );
  }
  return {
    kind: 'oidc',
    issuer,
    subject,
    ...(email ? { email } : {}),
    ...(name ? { name } : {}),
    ...(username ? { username } : {}),
    roles,
    groups,
  };
}
