// The operator roles a config may grant (admin_tokens[].role, later SSO group mappings). Kept in
// the config layer, which everything else imports, so the identity layer's operator type and the
// config schema share one list without the config importing the identity layer.

/** `admin` changes things, `approver` approves sessions, `auditor` reads (docs/operators.md). */
export const OPERATOR_ROLES = ['admin', 'approver', 'auditor'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];
