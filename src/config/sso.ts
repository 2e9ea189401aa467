// `sso:` — how people sign in to the console and `ciport login` (docs/sso.md). The gateway is an
// OpenID Connect relying party of the organisation's identity provider (Okta, Keycloak, Entra ID,
// GitLab…): authorization code + PKCE for the browser, a public client with a loopback redirect
// or the device grant for the CLI. Roles come from a group (or role) claim of the ID token,
// mapped by `roles:`; a person none of whose groups maps to a role is refused.
import { z } from 'zod';
import { keyUrlProblem } from '../identity/url-policy.js';
import { parseClaimPath } from './claim-path.js';
import { durationSchema, secretSchema } from './fields.js';
import { OPERATOR_ROLES } from './roles.js';

const groupList = z
  .array(z.string().min(1).max(256))
  .default([])
  .meta({ description: 'Group (or role) values of the claim that give this role.' });

const claimPathSchema = z
  .string()
  .min(1)
  .superRefine((text, ctx) => {
    const parsed = parseClaimPath(text);
    if ('error' in parsed) ctx.addIssue({ code: 'custom', message: parsed.error });
  });

export const ssoSchema = z
  .strictObject({
    issuer: z.url().meta({
      description:
        'The identity provider (its /.well-known/openid-configuration is read at start). https, or http on loopback.',
    }),
    client_id: z.string().min(1).max(256).meta({
      description: 'The console client (a confidential web client, or public with PKCE only).',
    }),
    client_secret: secretSchema.optional().meta({
      description: 'The console client secret (client_secret_basic); absent for a public client.',
    }),
    cli_client_id: z.string().min(1).max(256).optional().meta({
      description:
        'The public client `ciport login` uses (loopback redirect http://127.0.0.1/callback on any port, and the device grant where the provider offers it). Without it, `ciport login` is refused.',
    }),
    scopes: z
      .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'an OAuth scope token'))
      .default(['openid', 'email', 'profile'])
      .meta({
        description: 'Scopes requested; "openid" is always added. Add "groups" where the IdP needs it.',
      }),
    groups_claim: claimPathSchema.default('groups').meta({
      description:
        'Claim path of the ID token holding the groups (Okta/Entra "groups", Keycloak "realm_access.roles" or "groups", GitLab "groups_direct").',
    }),
    roles: z
      .strictObject({
        admin: groupList,
        approver: groupList,
        auditor: groupList,
      })
      .meta({ description: 'Which groups give which role; a person may hold several.' }),
    session_ttl: durationSchema
      .prefault('8h')
      .meta({ description: 'How long a console or CLI sign-in lasts (at most 24h).' }),
  })
  .superRefine((sso, ctx) => {
    let url: URL | undefined;
    try {
      url = new URL(sso.issuer);
    } catch {
      return; // z.url() reported it
    }
    const problem = keyUrlProblem(url);
    if (problem) ctx.addIssue({ code: 'custom', path: ['issuer'], message: problem });
    if (sso.session_ttl > 24 * 3_600_000) {
      ctx.addIssue({ code: 'custom', path: ['session_ttl'], message: 'at most 24h' });
    }
    if (OPERATOR_ROLES.every((r) => sso.roles[r].length === 0)) {
      ctx.addIssue({ code: 'custom', path: ['roles'], message: 'map at least one group to a role' });
    }
  });

export type SsoConfig = z.output<typeof ssoSchema>;
