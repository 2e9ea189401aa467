// `admin_tokens:` (docs/operators.md). Two forms: the original unnamed secret
// (`- {env: CIPORT_ADMIN_TOKEN}`, DESIGN's example) and a named token with roles
// (`- {name: ci-bot, token: {env: CI_BOT_TOKEN}, role: auditor}`). Every entry ends up with a
// name (the audit log's `by`) and roles: an unnamed one is `admin-token-<N>` (its 1-based
// position in the list) with role admin, as it could do everything before roles existed.
import { z } from 'zod';
import { groupNameSchema, secretSchema } from './fields.js';
import { OPERATOR_ROLES, type OperatorRole } from './roles.js';
import type { Secret } from './secret.js';

const ADMIN_TOKEN_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

// The message names the role and the roles that exist (zod's default says neither).
const roleSchema = z.enum(OPERATOR_ROLES, {
  error: (issue) => `unknown role ${JSON.stringify(issue.input)}: one of ${OPERATOR_ROLES.join(', ')}`,
});

const namedAdminTokenSchema = z
  .strictObject({
    name: z
      .string()
      .regex(ADMIN_TOKEN_NAME_RE, 'lowercase letters, digits, ".", "-" and "_" (at most 63)')
      .meta({
        description: 'Who holds the token, as the audit log names them (`by: token:<name>`).',
      }),
    token: secretSchema,
    role: roleSchema.optional().meta({ description: 'admin | approver | auditor (give role or roles).' }),
    roles: z
      .array(roleSchema)
      .min(1)
      .optional()
      .meta({ description: 'Several roles: any of them suffices.' }),
    groups: z.array(groupNameSchema).min(1).optional().meta({
      description:
        "Approval groups the token's holder belongs to: with role approver or admin, they may approve or deny sessions whose rule names one of them (docs/approvals.md).",
    }),
  })
  .superRefine((t, ctx) => {
    if ((t.role === undefined) === (t.roles === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give exactly one of "role" or "roles"' });
    }
  });

/**
 * One `admin_tokens` entry as the config holds it (an unnamed entry is just its Secret). The named
 * form comes first: for an entry that fails both, the config loader reports the first
 * alternative's specific issue (an unknown role), not the secret form's "expected string".
 */
export const adminTokenSchema = z.union([namedAdminTokenSchema, secretSchema]);
export type AdminTokenConfig = z.output<typeof adminTokenSchema>;

/** An admin token with its name and roles, whichever form it was written in. */
export interface AdminTokenEntry {
  name: string;
  token: Secret;
  roles: OperatorRole[];
  /** Approval groups (named form only; docs/approvals.md). */
  groups: string[];
}

/** The name an unnamed entry at `index` (0-based) gets: stable while the list's order is. */
export function derivedAdminTokenName(index: number): string {
  return `admin-token-${index + 1}`;
}

/** Every entry with its name and roles (unnamed: `admin-token-<N>`, role admin). */
export function adminTokenEntries(list: readonly AdminTokenConfig[]): AdminTokenEntry[] {
  return list.map((entry, i) =>
    'name' in entry
      ? {
          name: entry.name,
          token: entry.token,
          roles: [...new Set(entry.roles ?? (entry.role ? [entry.role] : []))],
          groups: [...new Set(entry.groups ?? [])],
        }
      : { name: derivedAdminTokenName(i), token: entry, roles: ['admin'], groups: [] },
  );
}

/** Names (given or derived) are unique: the audit log must tell two token holders apart. */
export function uniqueAdminTokenNames(list: readonly AdminTokenConfig[], ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  adminTokenEntries(list).forEach((entry, i) => {
    if (seen.has(entry.name)) {
      ctx.addIssue({
        code: 'custom',
        path: ['admin_tokens', i, ...('name' in (list[i] as object) ? ['name'] : [])],
        message: `duplicate admin token name "${entry.name}"${'name' in (list[i] as object) ? '' : ' (the name of an unnamed entry at this position)'}`,
      });
    }
    seen.add(entry.name);
  });
}
