// Generic OIDC issuers: Keycloak, Okta, Auth0, Dex… used with client credentials by build
// systems that have no platform-issued job token. There is no project, ref or pipeline, only
// a client. `fork` is false and `trusted_event` true: there is no event an outsider triggers.
import { type Claims, text, textList } from './claim-values.js';
import type { Principal } from './principal.js';

export function oidcPrincipal(issuerName: string, c: Claims): Principal {
  return {
    issuer: issuerName,
    kind: 'oidc',
    subject: text(c.sub),
    project: null,
    namespace: null,
    ref: null,
    pipeline_id: null,
    job_id: null,
    job_url: null,
    environment: null,
    // A person's user name, else the client: `client_id` (RFC 9068, Keycloak ≥ 24), `clientId`
    // (older Keycloak), `azp` (OIDC authorized party), `cid` (Okta), else the subject.
    actor:
      text(c.preferred_username) ??
      text(c.client_id) ??
      text(c.clientId) ??
      text(c.azp) ??
      text(c.cid) ??
      text(c.sub),
    event: null,
    fork: false,
    trusted_event: true,
    groups: textList(c.groups),
    roles: unique([...textList(c.roles), ...textList(realmRoles(c.realm_access))]),
  };
}

/** Keycloak puts realm roles under `realm_access.roles`. */
function realmRoles(realmAccess: unknown): unknown {
  return typeof realmAccess === 'object' && realmAccess !== null
    ? (realmAccess as { roles?: unknown }).roles
    : undefined;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
