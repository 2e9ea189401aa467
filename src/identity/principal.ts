// One shape for "who is calling", whatever platform minted the token. Pure: no I/O, no clock.
import type { IssuerConfig } from '../config/schema.js';
import type { Claims } from './claim-values.js';
import { githubPrincipal } from './principal-github.js';
import { gitlabPrincipal } from './principal-gitlab.js';
import { oidcPrincipal } from './principal-oidc.js';

export type IssuerKind = IssuerConfig['kind'];

/**
 * The normalised identity behind a verified token, shown in audit events and the console.
 *
 * Every field is present; what the platform does not say is `null` (never guessed):
 *
 * | field           | GitLab (`kind: gitlab`)                       | GitHub (`kind: github`)                         | generic OIDC            |
 * |-----------------|-----------------------------------------------|-------------------------------------------------|-------------------------|
 * | `issuer`        | configured issuer name                        | configured issuer name                          | configured issuer name  |
 * | `subject`       | `sub`                                         | `sub`                                           | `sub`                   |
 * | `project`       | `project_id`, `project_path` (MR: source)     | `repository_id`, `repository`                   | null                    |
 * | `namespace`     | `namespace_id`, `namespace_path`              | `repository_owner_id`, `repository_owner`       | null                    |
 * | `ref`           | `ref`, `ref_type`, `ref_protected`            | short `ref`, `ref_type`, `ref_protected`        | null                    |
 * | `pipeline_id`   | `pipeline_id`                                 | `run_id`                                        | null                    |
 * | `job_id`        | `job_id`                                      | `check_run_id` (when sent)                      | null                    |
 * | `job_url`       | `<iss>/<job project path>/-/jobs/<job_id>`    | `https://<host>/<repo>/actions/runs/<id>/attempts/<n>` | null             |
 * | `environment`   | `environment`, `environment_protected`        | `environment`, protected unknown (null)         | null                    |
 * | `actor`         | `user_login`                                  | `actor`                                         | user name or client id  |
 * | `event`         | `pipeline_source`                             | `event_name`                                    | null                    |
 * | `fork`          | `job_project_id` ≠ `project_id`               | false (see principal-github.ts)                 | false                   |
 * | `trusted_event` | `!fork`                                       | false for outsider events (principal-github.ts) | true                    |
 * | `groups`        | `groups_direct`                               | []                                              | `groups`                |
 * | `roles`         | []                                            | []                                              | `roles`, `realm_access.roles` |
 *
 * Ids are always strings (GitLab and GitHub send them as strings; numbers are converted), so
 * `"61577203"` in a policy matches however the platform encoded it.
 */
export interface Principal {
  /** Name of the configured issuer that verified the token. */
  issuer: string;
  kind: IssuerKind;
  subject: string | null;
  project: { id: string | null; path: string | null } | null;
  namespace: { id: string | null; path: string | null } | null;
  ref: { name: string | null; type: string | null; protected: boolean | null } | null;
  pipeline_id: string | null;
  job_id: string | null;
  job_url: string | null;
  environment: { name: string; protected: boolean | null } | null;
  actor: string | null;
  event: string | null;
  fork: boolean;
  trusted_event: boolean;
  /** Group memberships the issuer states (GitLab `groups_direct`, OIDC `groups`). */
  groups: string[];
  /** Roles the issuer states (OIDC `roles`, Keycloak `realm_access.roles`). */
  roles: string[];
}

/**
 * What policy rules match on: the raw claims, plus the derived `fork` and `trusted_event`.
 * The derived values replace same-named raw claims, so a rule on `fork` always means ciport's
 * derivation, never an arbitrary claim an issuer happened to include.
 */
export type ClaimFacts = Readonly<Record<string, unknown>> & {
  readonly fork: boolean;
  readonly trusted_event: boolean;
};

export function normalize(
  kind: IssuerKind,
  issuerName: string,
  claims: Claims,
): { principal: Principal; facts: ClaimFacts } {
  const principal =
    kind === 'gitlab'
      ? gitlabPrincipal(issuerName, claims)
      : kind === 'github'
        ? githubPrincipal(issuerName, claims)
        : oidcPrincipal(issuerName, claims);
  const facts: ClaimFacts = { ...claims, fork: principal.fork, trusted_event: principal.trusted_event };
  return { principal, facts };
}
