// Who an operator is and what each role may do (docs/operators.md). Pure: no I/O, so
// the gateway (static admin tokens today), the future SSO sign-in and the CLI share one meaning.
// A job is a *principal* (src/identity/principal.ts); a person or bot using the admin API is an
// *operator*.

import type { OperatorRole } from '../config/roles.js';

export { OPERATOR_ROLES, type OperatorRole } from '../config/roles.js';

/** An operator authenticated by a static admin token (`admin_tokens:`), known by its name. */
export interface TokenOperator {
  kind: 'token';
  name: string;
  roles: readonly OperatorRole[];
  /** Approval groups the token belongs to (`groups:` of its entry; docs/approvals.md). */
  groups?: readonly string[];
}

/** An operator signed in with OIDC (SSO, a later step): issuer and subject identify them. */
export interface OidcOperator {
  kind: 'oidc';
  issuer: string;
  subject: string;
  email?: string;
  name?: string;
  /** preferred_username: with email, what self-approval checks compare with the job's user. */
  username?: string;
  roles: readonly OperatorRole[];
  /** The person's groups from the identity provider's group claim (approval groups). */
  groups?: readonly string[];
}

export type Operator = TokenOperator | OidcOperator;

/**
 * What an admin endpoint does, each needing one of the roles in ROLE_ACTIONS. New endpoints add
 * an action here rather than checking role names, so the table in docs/operators.md stays whole.
 */
export const OPERATOR_ACTIONS = [
  /** List or read sessions. */
  'sessions.read',
  /** Revoke a session. */
  'sessions.revoke',
  /** List agents. */
  'agents.read',
  /** Enroll, revoke or re-bind agents. */
  'agents.manage',
  /** Build the access review of a period (docs/review.md). */
  'review.read',
  /** Sign off an access review (`review.attested`). */
  'review.attest',
  /** Approve or deny a pending session (docs/approvals.md); the rule's groups narrow who. */
  'sessions.approve',
  /** Read the audit log (console search). */
  'audit.read',
  /** Read the policy in force and explain decisions (console). */
  'policy.read',
] as const;
export type OperatorAction = (typeof OPERATOR_ACTIONS)[number];

/** Which roles may do each action. `admin` may do everything. */
export const ROLE_ACTIONS: Readonly<Record<OperatorAction, readonly OperatorRole[]>> = {
  'sessions.read': ['admin', 'approver', 'auditor'],
  'sessions.revoke': ['admin'],
  'agents.read': ['admin', 'auditor'],
  'agents.manage': ['admin'],
  'review.read': ['admin', 'auditor'],
  'review.attest': ['admin', 'auditor'],
  'sessions.approve': ['admin', 'approver'],
  'audit.read': ['admin', 'auditor'],
  'policy.read': ['admin', 'approver', 'auditor'],
};

export function mayDo(operator: Operator, action: OperatorAction): boolean {
  const allowed = ROLE_ACTIONS[action];
  return operator.roles.some((r) => allowed.includes(r));
}

/**
 * The operator as one stable string, the `by` of audit events and log lines: `token:<name>` for
 * an admin token, `oidc:<issuer>#<subject>` for a signed-in person (email and name may change;
 * issuer and subject do not). Never holds a secret.
 */
export function operatorRef(operator: Operator): string {
  return operator.kind === 'token' ? `token:${operator.name}` : `oidc:${operator.issuer}#${operator.subject}`;
}

/** Who did something and why, as operator audit events carry it (`by`, `note`). */
export interface OperatorActor {
  /** operatorRef(): `token:<name>` or `oidc:<issuer>#<subject>`. */
  by: string;
  /** Their reason (`--reason`), control characters escaped, at most OPERATOR_REASON_MAX. */
  note?: string | undefined;
}

/** Longest operator `reason` (`--reason`) in characters, after control characters are escaped. */
export const OPERATOR_REASON_MAX = 200;
